"""The native commit pass (proofs._commit) against the pure-Python one: same nodes, same errors, no leaks.

The engine tests in test_engine.py and test_retention.py run on both passes already; these tests hold
the two passes side by side on the same workloads and check what only the C code can get wrong.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs import engine as engine_module
from proofs.encoding import keccak256
from proofs.engine import (
    CommitEngine,
    CorruptNodeError,
    InvalidKeyError,
    InvalidValueError,
    MissingNodeError,
)
from proofs.store import MemoryStore
from tests.proofs.backends import BACKENDS, NATIVE_AVAILABLE, NATIVE_BUILT
from tests.proofs.strategies import workloads

ROOT = Path(__file__).resolve().parents[2]

needs_native = pytest.mark.skipif(not NATIVE_AVAILABLE, reason="proofs._commit not built, or EXOS_PROOFS_NATIVE=0")


def _snapshot(engine: CommitEngine, store: MemoryStore) -> tuple[object, ...]:
    """Everything a commit may change: root, version, node cache, lifetimes, roots held, stored nodes."""
    return (
        engine.root,
        engine.version,
        dict(engine._nodes),
        dict(engine._extra),
        sorted(engine._deaths),
        {root: list(versions) for root, versions in engine._root_versions.items()},
        dict(store._nodes),
    )


def test_the_native_pass_is_built_wherever_a_c_compiler_is_present() -> None:
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler: the pure-Python pass is the expected backend")
    assert NATIVE_BUILT, "proofs._commit was not built: run `pip install -e .` with a compiler"
    assert engine_module.BACKEND == ("python" if os.environ.get("EXOS_PROOFS_NATIVE") == "0" else "native")


@needs_native
def test_native_keccak_matches_pysha3_on_every_length_up_to_600_with_both_permutations() -> None:
    from proofs import _commit

    rng = random.Random(600)
    for length in range(601):
        for _ in range(3):
            data = rng.randbytes(length)
            expected = keccak256(data)
            assert _commit.keccak256(data) == expected, length  # the permutation this CPU uses
            assert _commit.keccak256_generic(data) == expected, length  # the portable one
    assert _commit.keccak256(b"") == bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")


@needs_native
def test_nodes_hashed_together_are_each_named_by_the_keccak_of_their_encoding() -> None:
    """The native pass hashes the nodes of one height together (eight at a time where the CPU allows):
    with encodings of every length from 1 to 1,200 bytes, and groups of every size, every stored node
    is named by its own keccak and the roots are those of the pure-Python pass."""
    rng = random.Random(1200)
    engine = CommitEngine(MemoryStore(), native=True)
    reference = CommitEngine(MemoryStore(), native=False)
    keys = [rng.randbytes(32) for _ in range(1_200)]
    for size in (1, 2, 3, 7, 8, 9, 17, 100, 1_200):
        batch = {key: rng.randbytes(rng.randrange(1, 1_200)) for key in rng.sample(keys, size)}
        assert engine.commit(batch) == reference.commit(batch)
    store = engine._store
    assert isinstance(store, MemoryStore)
    lengths = {len(encoding) for encoding in store._nodes.values()}
    assert min(lengths) < 136 and max(lengths) > 8 * 136  # one block to more than eight
    assert all(keccak256(encoding) == node_hash for node_hash, encoding in store._nodes.items())


@needs_native
@settings(max_examples=120, deadline=None)
@given(workloads, st.booleans())
def test_both_passes_build_identical_caches_lifetimes_and_stores(workload, pruning: bool) -> None:
    pool, batches = workload
    stores = (MemoryStore(), MemoryStore())
    engines = [CommitEngine(store, pruning=pruning, native=native) for store, native in zip(stores, (False, True), strict=True)]
    for batch in batches:
        roots = [engine.commit(batch) for engine in engines]
        assert roots[0] == roots[1]
        assert _snapshot(engines[0], stores[0]) == _snapshot(engines[1], stores[1])
    # Reopened at the last root, the native pass reads every node through the engine's loader.
    reopened = [CommitEngine(store, engines[0].root, pruning=pruning, native=native) for store, native in zip(stores, (False, True), strict=True)]
    batch = {key: b"after reopening" if index % 2 else b"" for index, key in enumerate(pool)}
    assert reopened[0].commit(batch) == reopened[1].commit(batch)
    assert _snapshot(reopened[0], stores[0]) == _snapshot(reopened[1], stores[1])


class _FailingStore(MemoryStore):
    __slots__ = ("fail",)

    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def put_many(self, items) -> None:
        if self.fail:
            raise OSError("disk full")
        super().put_many(items)


@pytest.mark.parametrize("native", BACKENDS)
@settings(max_examples=50, deadline=None)
@given(workloads, st.sampled_from(["key", "value", "store"]), st.randoms(use_true_random=False))
def test_a_failed_commit_leaves_engine_and_store_exactly_as_they_were(native: bool, workload, failure: str, rng) -> None:
    pool, batches = workload
    store = _FailingStore()
    engine = CommitEngine(store, pruning=True, native=native)
    for batch in batches:
        before = _snapshot(engine, store)
        bad = dict(batch)
        items = list(bad.items())
        position = rng.randrange(len(items) + 1)
        fresh_key = keccak256(b"".join(pool))  # in no batch
        if failure == "key":
            items.insert(position, (b"\x01" * 31, b"value"))
            expected: type[Exception] = InvalidKeyError
        elif failure == "value":
            items.insert(position, (fresh_key, "text"))
            expected = InvalidValueError
        else:
            items.append((fresh_key, b"forces a write"))
            store.fail = True
            expected = OSError
        with pytest.raises(expected):
            engine.commit(dict(items))
        store.fail = False
        assert _snapshot(engine, store) == before
        engine.commit(batch)


@needs_native
def test_both_passes_raise_the_same_errors_with_the_same_messages() -> None:
    for dirty in ({b"short": b"x"}, {os.urandom(32): b"ok", os.urandom(32): 7}, {os.urandom(32): bytearray(b"x")}):
        errors = []
        for native in (False, True):
            with pytest.raises((InvalidKeyError, InvalidValueError)) as caught:
                CommitEngine(MemoryStore(), native=native).commit(dirty)  # type: ignore[arg-type]
            errors.append((type(caught.value), str(caught.value)))
        assert errors[0] == errors[1]


@needs_native
def test_a_corrupt_stored_node_is_a_corrupt_node_error_on_both_passes() -> None:
    store = MemoryStore()
    keys = [os.urandom(32) for _ in range(300)]
    root = CommitEngine(store).commit({key: b"v" * 40 for key in keys})
    proof = CommitEngine(store, root).prove(keys[0])
    store.put_many([(keccak256(proof[1]), b"\xc3\x80\x80\x80")])  # a 3-item list is no trie node
    for native in (False, True):
        reopened = CommitEngine(store, root, native=native)
        with pytest.raises(CorruptNodeError):
            reopened.commit({keys[0]: b"w" * 40})
        assert reopened.root == root and reopened.version == 0


@needs_native
def test_a_malformed_cached_node_is_refused_by_the_native_pass() -> None:
    engine = CommitEngine(MemoryStore(), native=True)
    keys = [os.urandom(32) for _ in range(100)]
    root = engine.commit({key: b"v" * 40 for key in keys})
    root_ref = b"\xa0" + root
    good = engine._nodes[root_ref]
    for bad in ((2, good[1], 0), (7, b"", 0, "ab", b"x"), (0, b"", 0, "zz", b"x"), (1, b"", 0, "", b"\x01")):
        engine._nodes[root_ref] = bad
        with pytest.raises(CorruptNodeError):
            engine.commit({keys[0]: b"w" * 40})
        assert engine.root == root
    engine._nodes[root_ref] = good
    assert engine.commit({keys[0]: b"v" * 40}) == root


@needs_native
def test_the_native_pass_accepts_any_mapping() -> None:
    keys = [os.urandom(32) for _ in range(50)]
    batch = {key: bytes([index]) * 33 for index, key in enumerate(keys)}
    expected = CommitEngine(MemoryStore(), native=False).commit(batch)
    assert CommitEngine(MemoryStore(), native=True).commit(MappingProxyType(batch)) == expected


@needs_native
def test_a_thousand_native_commits_leave_no_memory_behind() -> None:
    """The pass and the cache update, successful or failing, return every byte they allocate."""
    from proofs import _commit

    rng = random.Random(1000)
    engine = CommitEngine(MemoryStore(), native=True)
    keys = [rng.randbytes(32) for _ in range(1_000)]
    engine.commit({key: rng.randbytes(40) for key in keys})
    nodes = dict(engine._nodes)
    root_ref = b"\xa0" + engine.root

    def missing(ref: bytes) -> tuple[object, ...]:
        raise MissingNodeError(ref[1:])

    def rounds(count: int) -> None:
        nonlocal root_ref
        for index in range(count):
            batch = {key: rng.randbytes(40) for key in rng.sample(keys, 20)}
            if index % 10 == 3:
                batch[rng.randbytes(32)] = "not bytes"  # type: ignore[assignment]
                with pytest.raises(InvalidValueError):
                    _commit.commit_pass(nodes, missing, root_ref, batch, index)
                continue
            if index % 10 == 7:
                # A cache without the root: the loader raises before anything is built.
                with pytest.raises(MissingNodeError):
                    _commit.commit_pass({}, missing, root_ref, batch, index)
                continue
            new_ref, _hashes, _encodings, refs, created, dropped, loads = _commit.commit_pass(
                nodes, missing, root_ref, batch, index
            )
            assert loads == 0
            _commit.update_cache(nodes, dropped, refs, created)
            root_ref = new_ref

    def rss() -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def traced_blocks() -> int:
        return sum(stat.count for stat in tracemalloc.take_snapshot().statistics("filename"))

    size = len(nodes)
    tracemalloc.start()
    try:
        # Warm-up: (nearly) every node of the trie is replaced, so the live trie is traced, and the
        # interpreter's free lists reach their working size.
        rounds(300)
        gc.collect()
        rss_before = rss()
        blocks_before = traced_blocks()
        rounds(1_000)
        gc.collect()
        blocks_after = traced_blocks()
        rss_after = rss()
    finally:
        tracemalloc.stop()
    assert len(nodes) == size  # same keys, new values: the trie keeps its shape
    # One object kept per commit would be 1,000 blocks; the slack covers the last round's results.
    assert blocks_after - blocks_before < 200, blocks_after - blocks_before
    assert rss_after - rss_before < 16 * 1024 * 1024


@pytest.mark.slow
def test_the_environment_switch_or_a_missing_extension_selects_the_python_pass() -> None:
    code = "import proofs.engine as e, proofs.store as s; print(e.BACKEND, e.CommitEngine(s.MemoryStore()).backend)"
    env = dict(os.environ, EXOS_PROOFS_NATIVE="0")
    forced = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert forced.stdout.split() == ["python", "python"]
    env["EXOS_PROOFS_NATIVE"] = "1"
    default = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    expected = "native" if NATIVE_BUILT else "python"
    assert default.stdout.split() == [expected, expected]
    # Without the extension (a light client installed without a compiler) the Python pass is chosen.
    missing = "import sys; sys.modules['proofs._commit'] = None; " + code
    absent = subprocess.run([sys.executable, "-c", missing], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    assert absent.stdout.split() == ["python", "python"]


@pytest.mark.slow
@needs_native
def test_the_engine_tests_pass_on_the_native_pass_under_python_dev_mode() -> None:
    """-X dev: the debug memory allocator catches buffer overruns and bad frees in the C code."""
    tests = [str(ROOT / "tests/proofs" / name) for name in ("test_engine.py", "test_retention.py", "test_native.py")]
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "native and not dev_mode", *tests],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


@needs_native
def test_equal_subtrees_at_two_positions_are_counted_alike_by_both_passes() -> None:
    """Keys differing only in their first nibble with equal values have equal (same-hash) leaves."""
    tail = os.urandom(32)
    twins = [bytes([(nibble << 4) | (tail[0] & 0x0F)]) + tail[1:] for nibble in (1, 9)]
    # Other keys stay out of the twins' root slots, so both twins are leaves right under the root.
    others = [bytes([(index % 7 + 2) << 4]) + os.urandom(31) for index in range(20)]
    batches = [
        {twins[0]: b"t" * 40, twins[1]: b"t" * 40, **{key: b"o" * 40 for key in others}},
        {twins[0]: b"u" * 40},
        {twins[0]: b"t" * 40, others[0]: b""},
        {twins[1]: b""},
    ]
    stores = (MemoryStore(), MemoryStore())
    engines = [CommitEngine(store, pruning=True, native=native) for store, native in zip(stores, (False, True), strict=True)]
    for step, batch in enumerate(batches):
        assert engines[0].commit(batch) == engines[1].commit(batch)
        if step == 0:
            assert engines[1]._extra  # the twin leaf occurs twice
        assert _snapshot(engines[0], stores[0]) == _snapshot(engines[1], stores[1])
        for engine in engines:
            engine.prune()
        assert _snapshot(engines[0], stores[0]) == _snapshot(engines[1], stores[1])
