"""py-evm's `AtomicDatabaseAPI` over a `KVStore`, with one LevelDB write per mined block.

py-evm writes a block in several steps (state trie nodes, then the block, receipts, and the
canonical head), each in its own `atomic_batch()`. `EvmDatabase.unit()` groups all of them:
inside a unit every write lands in an in-memory overlay that reads see, and the overlay is
written to the store as one atomic batch when the unit ends normally, or dropped if it raises.
So a block and its state reach the disk together or not at all.

A unit belongs to the thread that opened it: other threads keep reading the committed store
while one thread mines inside a unit, and see the whole block at once when it is written.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from eth.abc import AtomicWriteBatchAPI
from eth.db.backends.base import BaseAtomicDB, BaseDB

from node.db import KVStore

# Marks a key deleted inside an overlay (values are bytes, so None cannot collide).
_DELETED = None


class BatchClosedError(Exception):
    """An atomic batch was used after its `with` block ended."""


class _Overlay:
    """Pending writes (value, or _DELETED) over a base reader."""

    def __init__(self) -> None:
        self.changes: dict[bytes, bytes | None] = {}

    def put(self, key: bytes, value: bytes) -> None:
        self.changes[key] = value

    def delete(self, key: bytes) -> None:
        self.changes[key] = _DELETED

    def merge_into(self, other: _Overlay) -> None:
        other.changes.update(self.changes)

    def split(self) -> tuple[dict[bytes, bytes], list[bytes]]:
        puts = {k: v for k, v in self.changes.items() if v is not None}
        deletes = [k for k, v in self.changes.items() if v is None]
        return puts, deletes


class EvmWriteBatch(BaseDB, AtomicWriteBatchAPI):
    """The view py-evm writes into during `atomic_batch()`: sees its own writes first."""

    def __init__(self, parent: EvmDatabase) -> None:
        self._parent: EvmDatabase | None = parent
        self._overlay: _Overlay | None = _Overlay()

    def _check_open(self) -> tuple[EvmDatabase, _Overlay]:
        if self._parent is None or self._overlay is None:
            raise BatchClosedError("atomic batch used outside its context")
        return self._parent, self._overlay

    def __getitem__(self, key: bytes) -> bytes:
        parent, overlay = self._check_open()
        if key in overlay.changes:
            value = overlay.changes[key]
            if value is None:
                raise KeyError(key)
            return value
        return parent[key]

    def __setitem__(self, key: bytes, value: bytes) -> None:
        _, overlay = self._check_open()
        overlay.put(key, value)

    def __delitem__(self, key: bytes) -> None:
        _, overlay = self._check_open()
        if not self._exists(key):
            raise KeyError(key)
        overlay.delete(key)

    def _exists(self, key: bytes) -> bool:
        try:
            self[key]
        except KeyError:
            return False
        return True

    def _close(self) -> _Overlay:
        _, overlay = self._check_open()
        self._parent = None
        self._overlay = None
        return overlay


class EvmDatabase(BaseAtomicDB):
    """`AtomicDatabaseAPI` for py-evm over a `KVStore`.

    Guarantees: outside a unit, each `atomic_batch()` is one atomic store write and a single
    set/delete is one store write; inside `unit()`, nothing reaches the store until the unit
    ends, and then everything written during it reaches the store in one atomic write. Units
    are per thread: another thread neither sees nor joins an open unit.
    """

    def __init__(self, store: KVStore) -> None:
        self.store = store
        self._local = threading.local()

    @property
    def _unit(self) -> _Overlay | None:
        return getattr(self._local, "unit", None)

    @_unit.setter
    def _unit(self, value: _Overlay | None) -> None:
        self._local.unit = value

    # reads see the open unit's pending writes first
    def __getitem__(self, key: bytes) -> bytes:
        unit = self._unit
        if unit is not None and key in unit.changes:
            value = unit.changes[key]
            if value is None:
                raise KeyError(key)
            return value
        value = self.store.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def _exists(self, key: bytes) -> bool:
        unit = self._unit
        if unit is not None and key in unit.changes:
            return unit.changes[key] is not None
        return self.store.exists(key)

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self._unit is not None:
            self._unit.put(key, value)
        else:
            self.store.put(key, value)

    def __delitem__(self, key: bytes) -> None:
        if not self._exists(key):
            raise KeyError(key)
        if self._unit is not None:
            self._unit.delete(key)
        else:
            self.store.delete(key)

    def _apply(self, overlay: _Overlay) -> None:
        if self._unit is not None:
            overlay.merge_into(self._unit)
        else:
            puts, deletes = overlay.split()
            self.store.write_batch(puts, deletes)

    @contextmanager
    def atomic_batch(self) -> Iterator[AtomicWriteBatchAPI]:
        """A write batch applied atomically when the block exits normally, dropped if it raises."""
        batch = EvmWriteBatch(self)
        try:
            yield batch
        except BaseException:
            batch._close()
            raise
        self._apply(batch._close())

    @contextmanager
    def unit(self) -> Iterator[None]:
        """Group every write made in the block into one atomic store write.

        If the block raises, nothing it wrote reaches the store (and reads no longer see it).
        Units do not nest: an inner `unit()` joins the outer one.
        """
        if self._unit is not None:
            yield
            return
        self._unit = _Overlay()
        try:
            yield
        except BaseException:
            self._unit = None
            raise
        overlay, self._unit = self._unit, None
        puts, deletes = overlay.split()
        if puts or deletes:
            self.store.write_batch(puts, deletes)

    @property
    def in_unit(self) -> bool:
        return self._unit is not None
