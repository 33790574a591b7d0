"""The LevelDB store and the py-evm database adapter: atomic batches, units, reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.db import LevelDBStore, StoreClosedError, StoreLockedError
from node.evm.db import BatchClosedError, EvmDatabase


class Boom(Exception):
    pass


def test_store_roundtrip_and_prefix_iteration(tmp_path: Path) -> None:
    with LevelDBStore(tmp_path / "db") as store:
        store.put(b"a:1", b"x")
        store.write_batch({b"a:2": b"y", b"b:1": b"z"}, [b"a:1"])
        assert store.get(b"a:1") is None
        assert list(store.iterate_prefix(b"a:")) == [(b"a:2", b"y")]
        assert store.exists(b"b:1") and not store.exists(b"b:2")


def test_store_batch_that_raises_writes_nothing(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    store.put(b"k", b"old")
    with pytest.raises(Boom), store.batch() as batch:
        batch.put(b"k", b"new")
        batch.put(b"other", b"v")
        assert batch.get(b"k") == b"new"
        raise Boom
    store.close()
    with LevelDBStore(tmp_path / "db") as reopened:
        assert reopened.get(b"k") == b"old"
        assert reopened.get(b"other") is None


def test_store_is_locked_against_a_second_opener_and_closed_use_fails(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    with pytest.raises(StoreLockedError):
        LevelDBStore(tmp_path / "db")
    store.close()
    with pytest.raises(StoreClosedError):
        store.get(b"k")


def test_atomic_batch_commits_on_success_and_writes_nothing_on_failure(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    db = EvmDatabase(store)
    db[b"keep"] = b"1"
    with db.atomic_batch() as batch:
        batch[b"a"] = b"A"
        del batch[b"keep"]
        assert batch[b"a"] == b"A" and not batch.exists(b"keep")
        assert store.get(b"a") is None  # not written before the batch ends
    assert store.get(b"a") == b"A" and store.get(b"keep") is None
    with pytest.raises(Boom), db.atomic_batch() as batch:
        batch[b"b"] = b"B"
        batch[b"a"] = b"changed"
        raise Boom
    assert store.get(b"b") is None and store.get(b"a") == b"A"
    with pytest.raises(BatchClosedError):
        batch[b"late"] = b"x"
    with pytest.raises(KeyError):
        del db[b"missing"]


def test_unit_groups_nested_batches_into_one_write_and_drops_all_on_failure(tmp_path: Path) -> None:
    store = LevelDBStore(tmp_path / "db")
    db = EvmDatabase(store)
    with pytest.raises(Boom), db.unit():
        db[b"direct"] = b"1"
        with db.atomic_batch() as batch:
            batch[b"nested"] = b"2"
        assert db[b"nested"] == b"2" and db.exists(b"direct")
        raise Boom
    assert not db.exists(b"direct") and not db.exists(b"nested")
    assert store.get(b"direct") is None
    with db.unit():
        db[b"direct"] = b"1"
        with db.atomic_batch() as batch:
            batch[b"nested"] = b"2"
        del db[b"direct"]
        assert store.get(b"nested") is None  # nothing reaches the store inside a unit
    store.close()
    with LevelDBStore(tmp_path / "db") as reopened:
        assert reopened.get(b"nested") == b"2"
        assert reopened.get(b"direct") is None
