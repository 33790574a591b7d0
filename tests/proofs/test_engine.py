"""The commit engine against py-trie: identical roots, values and proofs on random workloads."""

from __future__ import annotations

import os
import pickle
import random

import pytest
import rlp
from hypothesis import given, settings
from trie import HexaryTrie

from proofs.encoding import keccak256
from proofs.engine import (
    BLANK_ROOT,
    CommitEngine,
    InvalidKeyError,
    InvalidValueError,
    MissingNodeError,
)
from proofs.store import MemoryStore
from proofs.verify import verify_proof
from tests.proofs.backends import BACKENDS
from tests.proofs.strategies import workloads

# Every test here runs on both commit passes (`native` is the CommitEngine argument).
pytestmark = pytest.mark.parametrize("native", BACKENDS)


def _apply_reference(reference: HexaryTrie, batch: dict[bytes, bytes]) -> None:
    for key, value in batch.items():
        if value:
            reference[key] = value
        elif reference.exists(key):
            del reference[key]


@settings(max_examples=150, deadline=None)
@given(workloads)
def test_roots_values_and_proofs_match_py_trie_on_random_batches(native: bool, workload) -> None:
    pool, batches = workload
    engine = CommitEngine(MemoryStore(), native=native)
    reference = HexaryTrie({})
    for batch in batches:
        root = engine.commit(batch)
        _apply_reference(reference, batch)
        assert root == reference.root_hash == engine.root
    for key in pool:
        expected = reference.get(key)
        assert engine.get(key) == expected
        assert verify_proof(engine.root, key, engine.prove(key)) == expected
        py_trie_proof = [rlp.encode(node) for node in reference.get_proof(key)]
        assert verify_proof(reference.root_hash, key, py_trie_proof) == expected


@settings(max_examples=60, deadline=None)
@given(workloads)
def test_every_retained_root_proves_its_own_contents(native: bool, workload) -> None:
    pool, batches = workload
    engine = CommitEngine(MemoryStore(), pruning=True, native=native)
    snapshots: list[tuple[bytes, dict[bytes, bytes]]] = []
    contents: dict[bytes, bytes] = {}
    for batch in batches:
        root = engine.commit(batch)
        for key, value in batch.items():
            if value:
                contents[key] = value
            else:
                contents.pop(key, None)
        engine.retain(root)
        snapshots.append((root, dict(contents)))
    engine.prune()
    for root, snapshot in snapshots:
        for key in pool:
            assert verify_proof(root, key, engine.prove(key, root)) == snapshot.get(key, b"")


@settings(max_examples=40, deadline=None)
@given(workloads)
def test_an_engine_reopened_from_the_store_continues_identically(native: bool, workload) -> None:
    pool, batches = workload
    store = MemoryStore()
    engine = CommitEngine(store, native=native)
    reference = HexaryTrie({})
    for batch in batches:
        engine.commit(batch)
        _apply_reference(reference, batch)
        engine = CommitEngine(store, engine.root, native=native)
        for key in pool:
            assert engine.get(key) == reference.get(key)
    assert engine.commit({pool[0]: b"reopened"}) == _set_and_root(reference, pool[0], b"reopened")


def _set_and_root(reference: HexaryTrie, key: bytes, value: bytes) -> bytes:
    reference[key] = value
    return reference.root_hash


def test_deleting_every_key_returns_the_blank_root(native: bool) -> None:
    engine = CommitEngine(MemoryStore(), native=native)
    keys = [os.urandom(32) for _ in range(50)]
    engine.commit({key: b"v" for key in keys})
    assert engine.commit({key: b"" for key in keys}) == BLANK_ROOT
    assert engine.prove(keys[0]) == []
    assert verify_proof(BLANK_ROOT, keys[0], []) == b""


def test_an_empty_commit_keeps_the_root(native: bool) -> None:
    engine = CommitEngine(MemoryStore(), native=native)
    root = engine.commit({os.urandom(32): b"value"})
    assert engine.commit({}) == root


def test_a_rejected_batch_changes_nothing(native: bool) -> None:
    store = MemoryStore()
    engine = CommitEngine(store, native=native)
    key = os.urandom(32)
    root = engine.commit({key: b"one"})
    stored = len(store)
    with pytest.raises(InvalidKeyError):
        engine.commit({os.urandom(32): b"two", b"short": b"x"})
    with pytest.raises(InvalidValueError):
        engine.commit({os.urandom(32): "text"})  # type: ignore[dict-item]
    assert engine.root == root and engine.get(key) == b"one" and len(store) == stored


def test_opening_at_a_root_missing_from_the_store_is_refused(native: bool) -> None:
    with pytest.raises(MissingNodeError):
        CommitEngine(MemoryStore(), os.urandom(32), native=native)


def test_each_commit_writes_its_new_nodes_in_one_put_many(native: bool) -> None:
    class CountingStore(MemoryStore):
        calls = 0

        def put_many(self, items) -> None:
            CountingStore.calls += 1
            super().put_many(items)

    engine = CommitEngine(CountingStore(), native=native)
    engine.commit({os.urandom(32): b"x" * 40 for _ in range(300)})
    engine.commit({os.urandom(32): b"y" * 40 for _ in range(300)})
    assert CountingStore.calls == 2


def test_a_store_failure_during_commit_leaves_the_engine_as_it_was(native: bool) -> None:
    class FailingStore(MemoryStore):
        fail = False

        def put_many(self, items) -> None:
            if self.fail:
                raise OSError("disk full")
            super().put_many(items)

    store = FailingStore()
    engine = CommitEngine(store, native=native)
    keys = [os.urandom(32) for _ in range(200)]
    root = engine.commit({key: b"a" * 40 for key in keys})
    store.fail = True
    with pytest.raises(OSError):
        engine.commit({keys[0]: b"b" * 40, os.urandom(32): b"c" * 40, keys[1]: b""})
    assert engine.root == root and engine.get(keys[0]) == b"a" * 40 and engine.get(keys[1]) == b"a" * 40
    assert verify_proof(root, keys[1], engine.prove(keys[1])) == b"a" * 40
    store.fail = False
    reference = HexaryTrie({})
    for key in keys:
        reference[key] = b"a" * 40
    reference[keys[0]] = b"d" * 40
    assert engine.commit({keys[0]: b"d" * 40}) == reference.root_hash


def test_a_node_missing_from_the_store_is_a_named_error_and_changes_nothing(native: bool) -> None:
    store = MemoryStore()
    engine = CommitEngine(store, native=native)
    keys = [os.urandom(32) for _ in range(300)]
    root = engine.commit({key: b"v" * 40 for key in keys})
    leaf_hash = keccak256(engine.prove(keys[0])[-1])
    store.delete_many([leaf_hash])
    reopened = CommitEngine(store, root, native=native)
    with pytest.raises(MissingNodeError) as caught:
        reopened.commit({keys[0]: b"w" * 40})
    assert caught.value.node_hash == leaf_hash
    assert reopened.root == root and reopened.get(keys[1]) == b"v" * 40


def test_the_node_cache_stays_invisible_to_the_cyclic_collector(native: bool) -> None:
    import gc

    engine = CommitEngine(MemoryStore(), native=native)
    keys = [os.urandom(32) for _ in range(2_000)]
    engine.commit({key: b"v" * 40 for key in keys})
    engine.commit({key: b"w" * 40 for key in keys[:500]})
    engine.commit({key: b"" for key in keys[500:700]})
    cache = engine._nodes
    assert not gc.is_tracked(cache)
    assert not any(gc.is_tracked(node) for node in cache.values())


def test_values_of_every_rlp_length_class_give_py_trie_roots(native: bool) -> None:
    """Single bytes below and above 0x80, the 55/56-byte short/long boundary, 1-3 byte long lengths."""
    rng = random.Random(56)
    lengths = [*range(1, 70), 255, 256, 65_535, 65_536, 100_000]
    engine = CommitEngine(MemoryStore(), native=native)
    reference = HexaryTrie({})
    keys = [rng.randbytes(32) for _ in lengths]
    for first_byte in (0x00, 0x7F, 0x80, 0xFF):
        batch = {key: bytes([first_byte]) + rng.randbytes(length - 1) for key, length in zip(keys, lengths, strict=True)}
        _apply_reference(reference, batch)
        assert engine.commit(batch) == reference.root_hash
        # One key alone: the root is that leaf.
        single = CommitEngine(MemoryStore(), native=native)
        for key, value in list(batch.items())[:3]:
            alone = HexaryTrie({})
            alone[key] = value
            assert single.commit({key: value}) == alone.root_hash
            single.commit({key: b""})
    for key in keys:
        assert engine.get(key) == reference.get(key)


def test_a_pickled_engine_keeps_its_pass_and_continues_identically(native: bool) -> None:
    store = MemoryStore()
    engine = CommitEngine(store, native=native)
    keys = [os.urandom(32) for _ in range(200)]
    engine.commit({key: b"a" * 40 for key in keys})
    copy = pickle.loads(pickle.dumps(engine))
    assert copy.backend == engine.backend == ("native" if native else "python")
    batch = {keys[0]: b"b" * 40, keys[1]: b"", os.urandom(32): b"c" * 40}
    assert copy.commit(batch) == engine.commit(batch)
    assert copy.get(keys[0]) == b"b" * 40 and copy.get(keys[1]) == b""
