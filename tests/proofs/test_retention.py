"""Root retention and pruning: retained roots stay provable, everything else is reclaimed."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proofs.engine import (
    CommitEngine,
    NotRetainedError,
    PruningUnsupportedError,
    UnknownRootError,
)
from proofs.store import MemoryStore
from proofs.verify import verify_proof
from tests.proofs.backends import BACKENDS
from tests.proofs.strategies import trie_keys, trie_values

# Every test here runs on both commit passes (`native` is the CommitEngine argument).
pytestmark = pytest.mark.parametrize("native", BACKENDS)


def _reachable(engine: CommitEngine, roots: set[bytes]) -> set[bytes]:
    nodes: set[bytes] = set()
    for root in roots:
        nodes.update(engine.stored_nodes(root))
    return nodes


def _commit(
    engine: CommitEngine, batch: dict[bytes, bytes], contents: dict[bytes, bytes],
    snapshots: dict[bytes, dict[bytes, bytes]],
) -> bytes:
    """Commit `batch`, keep `contents` equal to the trie's, and record them under the new root."""
    root = engine.commit(batch)
    for key, value in batch.items():
        if value:
            contents[key] = value
        else:
            contents.pop(key, None)
    snapshots[root] = dict(contents)
    return root


def _check_provable(engine: CommitEngine, roots: set[bytes], snapshots: dict[bytes, dict[bytes, bytes]]) -> None:
    """Every key of every root in `roots` proves its value under that root."""
    for root in roots:
        for key, value in snapshots[root].items():
            assert verify_proof(root, key, engine.prove(key, root)) == value


steps = st.lists(trie_keys, min_size=1, max_size=16, unique=True).flatmap(
    lambda pool: st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(pool), trie_values, max_size=len(pool)),
            st.booleans(),  # retain the new root
            st.booleans(),  # release the oldest retained root
            st.booleans(),  # prune afterwards
        ),
        min_size=1,
        max_size=10,
    )
)


@settings(max_examples=120, deadline=None)
@given(steps)
def test_prune_keeps_exactly_the_nodes_of_retained_roots_and_the_current_root(native: bool, workload) -> None:
    store = MemoryStore()
    engine = CommitEngine(store, pruning=True, native=native)
    retained: list[bytes] = []
    snapshots: dict[bytes, dict[bytes, bytes]] = {}
    contents: dict[bytes, bytes] = {}
    for batch, retain, release, prune in workload:
        root = _commit(engine, batch, contents, snapshots)
        if retain:
            engine.retain(root)
            retained.append(root)
        if release and retained:
            engine.release(retained.pop(0))
        if prune:
            engine.prune()
            kept = set(retained) | {engine.root}
            assert set(store) == _reachable(engine, kept)
            _check_provable(engine, kept, snapshots)


def test_nodes_shared_between_a_released_and_a_retained_root_survive_pruning(native: bool) -> None:
    store = MemoryStore()
    engine = CommitEngine(store, pruning=True, native=native)
    keys = [os.urandom(32) for _ in range(2_000)]
    first = engine.commit({key: b"a" * 40 for key in keys})
    engine.retain(first)
    second = engine.commit({keys[0]: b"b" * 40})
    engine.retain(second)
    engine.commit({keys[1]: b"c" * 40})
    shared = set(engine.stored_nodes(first)) & set(engine.stored_nodes(second))
    assert len(shared) > 100
    engine.release(first)
    deleted = engine.prune()
    assert deleted > 0
    assert shared <= set(store)
    assert set(engine.stored_nodes(second)) <= set(store)
    with pytest.raises(UnknownRootError):
        engine.prove(keys[0], first)  # its root node is gone
    assert verify_proof(second, keys[0], engine.prove(keys[0], second)) == b"b" * 40


def test_retains_are_counted(native: bool) -> None:
    engine = CommitEngine(MemoryStore(), pruning=True, native=native)
    key = os.urandom(32)
    root = engine.commit({key: b"v" * 40})
    engine.retain(root)
    engine.retain(root)
    engine.commit({key: b"w" * 40})
    engine.release(root)
    engine.prune()
    assert verify_proof(root, key, engine.prove(key, root)) == b"v" * 40
    engine.release(root)
    engine.prune()
    with pytest.raises(UnknownRootError):
        engine.prove(key, root)
    with pytest.raises(NotRetainedError):
        engine.release(root)


def test_only_roots_the_engine_held_can_be_retained(native: bool) -> None:
    engine = CommitEngine(MemoryStore(), pruning=True, native=native)
    with pytest.raises(UnknownRootError):
        engine.retain(os.urandom(32))


def test_an_engine_reopened_from_the_store_prunes_without_touching_older_retained_data(native: bool) -> None:
    store = MemoryStore()
    engine = CommitEngine(store, pruning=True, native=native)
    keys = [os.urandom(32) for _ in range(300)]
    old_root = engine.commit({key: b"old" * 12 for key in keys})
    opened_root = engine.commit({key: b"new" * 12 for key in keys[:10]})
    reopened = CommitEngine(store, opened_root, pruning=True, native=native)
    reopened.retain(opened_root)
    reopened.commit({key: b"later" * 8 for key in keys[:50]})
    reopened.commit({key: b"" for key in keys[:20]})
    assert reopened.prune() > 0
    assert set(reopened.stored_nodes(opened_root)) <= set(store)
    assert set(reopened.stored_nodes(old_root)) <= set(store)  # unknown to the reopened engine: kept
    assert verify_proof(opened_root, keys[5], reopened.prove(keys[5], opened_root)) == b"new" * 12
    reopened.release(opened_root)
    reopened.prune()
    assert set(reopened.stored_nodes()) <= set(store)


def test_prune_needs_a_store_that_can_delete(native: bool) -> None:
    class AppendOnlyStore:
        def __init__(self) -> None:
            self.nodes: dict[bytes, bytes] = {}

        def get(self, node_hash: bytes) -> bytes | None:
            return self.nodes.get(node_hash)

        def put_many(self, items) -> None:
            self.nodes.update(items)

    engine = CommitEngine(AppendOnlyStore(), pruning=True, native=native)
    engine.commit({os.urandom(32): b"v"})
    with pytest.raises(PruningUnsupportedError):
        engine.prune()


def test_a_root_must_be_retained_before_the_prune_that_may_delete_its_nodes(native: bool) -> None:
    engine = CommitEngine(MemoryStore(), pruning=True, native=native)
    key = os.urandom(32)
    first = engine.commit({key: b"1" * 40})
    engine.commit({key: b"2" * 40})
    engine.prune()
    with pytest.raises(UnknownRootError):
        engine.retain(first)
    with pytest.raises(UnknownRootError):
        engine.prove(key, first)
    engine.retain(engine.root)  # the current root can always be retained


def test_without_pruning_every_root_stays_provable_and_prune_is_refused(native: bool) -> None:
    store = MemoryStore()
    engine = CommitEngine(store, native=native)
    keys = [os.urandom(32) for _ in range(100)]
    roots = [engine.commit({key: bytes([round_]) * 40 for key in keys[: 50 + round_]}) for round_ in range(5)]
    with pytest.raises(PruningUnsupportedError):
        engine.prune()
    for round_, root in enumerate(roots):
        assert verify_proof(root, keys[0], engine.prove(keys[0], root)) == bytes([round_]) * 40


any_release_steps = st.lists(trie_keys, min_size=1, max_size=12, unique=True).flatmap(
    lambda pool: st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(pool), trie_values, max_size=len(pool)),
            st.booleans(),  # retain the new root
            st.integers(min_value=-1, max_value=5),  # release the retained root at this index (-1: none)
            st.booleans(),  # prune afterwards
        ),
        min_size=1,
        max_size=14,
    )
)


@settings(max_examples=120, deadline=None)
@given(any_release_steps)
def test_prune_after_releasing_any_retained_root_reclaims_exactly_what_it_alone_held(
    native: bool, workload
) -> None:
    """Prunes classify only new lifetimes and those whose keeping root was released: releasing a
    root in the middle, whose lifetimes another retained root also covers, must move them to that
    root, not reclaim them; and repeated prunes leave exactly the reachable nodes."""
    store = MemoryStore()
    engine = CommitEngine(store, pruning=True, native=native)
    retained: list[bytes] = []
    snapshots: dict[bytes, dict[bytes, bytes]] = {}
    contents: dict[bytes, bytes] = {}
    for batch, retain, release_at, prune in workload:
        root = _commit(engine, batch, contents, snapshots)
        if retain:
            engine.retain(root)
            retained.append(root)
        if 0 <= release_at < len(retained):
            engine.release(retained.pop(release_at))
        if prune:
            engine.prune()
            kept = set(retained) | {engine.root}
            assert set(store) == _reachable(engine, kept)
            _check_provable(engine, kept, snapshots)


stepwise_workloads = st.lists(trie_keys, min_size=1, max_size=12, unique=True).flatmap(
    lambda pool: st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(pool), trie_values, max_size=len(pool)),
            st.booleans(),  # retain the new root
            st.integers(min_value=-1, max_value=4),  # release the retained root at this index
            st.integers(min_value=-1, max_value=4),  # retain the n-th newest earlier root, if allowed
            st.integers(min_value=0, max_value=6),  # a prune step of this many lifetimes (0: none)
        ),
        min_size=1,
        max_size=16,
    )
)


@settings(max_examples=150, deadline=None)
@given(stepwise_workloads)
def test_a_stepwise_prune_keeps_every_retained_root_provable_between_steps(native: bool, workload) -> None:
    """Prune rounds done a few lifetimes at a time, with commits, retains (of new roots and of
    earlier ones the engine still holds) and releases between the steps: after every step every
    retained root and the current root prove all their contents, and a final full prune leaves
    exactly the nodes they reach."""
    store = MemoryStore()
    engine = CommitEngine(store, pruning=True, native=native)
    retained: list[bytes] = []
    history: list[bytes] = []
    snapshots: dict[bytes, dict[bytes, bytes]] = {}
    contents: dict[bytes, bytes] = {}

    for batch, retain_new, release_at, retain_old, step in workload:
        root = _commit(engine, batch, contents, snapshots)
        history.append(root)
        if retain_new:
            engine.retain(root)
            retained.append(root)
        if 0 <= retain_old < len(history) - 1:
            earlier = history[-2 - retain_old]
            try:
                engine.retain(earlier)  # allowed while no finished prune could have cut it
                retained.append(earlier)
            except UnknownRootError:
                pass
        if 0 <= release_at < len(retained):
            engine.release(retained.pop(release_at))
        if step:
            engine.prune(max_records=step)
        _check_provable(engine, set(retained) | {engine.root}, snapshots)
    engine.prune()
    assert not engine.pruning
    kept = set(retained) | {engine.root}
    assert set(store) == _reachable(engine, kept)
    _check_provable(engine, kept, snapshots)


def test_a_root_committed_while_a_prune_round_is_open_can_be_retained_after_it(native: bool) -> None:
    store = MemoryStore()
    engine = CommitEngine(store, pruning=True, native=native)
    keys = [bytes([i]) * 32 for i in range(1, 40)]
    engine.commit({key: b"a" * 40 for key in keys})
    engine.commit({key: b"b" * 40 for key in keys})  # replaces every leaf: many lifetimes
    engine.prune(max_records=1)
    assert engine.pruning
    middle = engine.commit({keys[0]: b"c" * 40})  # committed while the round is open
    engine.commit({keys[1]: b"d" * 40})
    while engine.pruning:
        engine.prune(max_records=7)
    engine.retain(middle)  # its nodes were recorded after the round began: it lost none
    engine.prune()
    assert verify_proof(middle, keys[0], engine.prove(keys[0], middle)) == b"c" * 40
    assert verify_proof(middle, keys[1], engine.prove(keys[1], middle)) == b"b" * 40


def test_nodes_recreated_and_replaced_while_a_round_deletes_stay_for_a_root_retained_meanwhile(native: bool) -> None:
    """A round deletes its candidates a slice at a time, with commits between the slices. A node
    it holds as a candidate can come back in a commit made meanwhile and be replaced again; a
    root retained from those commits still needs it, so no later slice may delete it."""
    store = MemoryStore()
    engine = CommitEngine(store, pruning=True, native=native)
    keys = [bytes([i]) * 32 for i in range(1, 60)]
    first = {key: b"a" * 40 for key in keys}
    engine.commit(first)
    engine.commit({key: b"b" * 40 for key in keys})  # every node of the first root dies: candidates
    before = len(store)
    while len(store) == before:  # one lifetime per step, until the first node is deleted
        engine.prune(max_records=1)
    assert engine.pruning
    again = engine.commit(first)  # the first root's nodes are back (those not yet deleted: stored again)
    engine.retain(again)
    engine.commit({key: b"c" * 40 for key in keys})  # and replaced again
    while engine.pruning:
        engine.prune(max_records=1)
    for key in keys:
        assert verify_proof(again, key, engine.prove(key, again)) == b"a" * 40
    engine.prune()
    for key in keys:
        assert verify_proof(again, key, engine.prove(key, again)) == b"a" * 40


def test_a_stepwise_round_counts_each_deleted_node_once(native: bool) -> None:
    """The same node can die twice before a round (its lifetimes are both candidates): the round
    deletes it once and says so once, whatever the step size."""
    store = MemoryStore()
    engine = CommitEngine(store, pruning=True, native=native)
    keys = [bytes([i]) * 32 for i in range(1, 30)]
    for value in (b"x", b"y", b"x", b"y"):
        engine.commit({key: value * 40 for key in keys})
    before = len(store)
    deleted = engine.prune(max_records=1)
    while engine.pruning:
        deleted += engine.prune(max_records=1)
    assert deleted == before - len(store) > 0
