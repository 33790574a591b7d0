"""A small key-value store with atomic write batches, shared by every component that persists.

`KVStore` is the interface; `LevelDBStore` is the plyvel (LevelDB) implementation. Every write
that must survive a crash together goes through one `write_batch` call (or one `batch()` block),
which LevelDB applies all-or-nothing: after a crash either every key of the batch is there or
none is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

import plyvel


class StoreError(Exception):
    """The store cannot be opened or used (locked by another process, closed, corrupt)."""


class StoreLockedError(StoreError):
    """Another process holds the LevelDB lock on this directory."""


class StoreClosedError(StoreError):
    """The store was used after `close()`."""


@runtime_checkable
class KVStore(Protocol):
    """A byte-keyed, byte-valued store whose batches are written atomically."""

    def get(self, key: bytes) -> bytes | None:
        """Return the value stored under `key`, or None if there is none."""
        ...

    def exists(self, key: bytes) -> bool:
        """Return True if `key` has a value."""
        ...

    def put(self, key: bytes, value: bytes) -> None:
        """Store `value` under `key` (one atomic write)."""
        ...

    def delete(self, key: bytes) -> None:
        """Remove `key` if present (one atomic write; absent keys are not an error)."""
        ...

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        """Apply all `puts` and `deletes` as one atomic write: all of them persist or none does.

        A key in both `puts` and `deletes` ends up deleted.
        """
        ...

    def iterate_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Yield (key, value) for every key starting with `prefix`, in byte order."""
        ...

    def close(self) -> None:
        """Release the store; later calls raise StoreClosedError."""
        ...


class StoreBatch:
    """Writes collected by `LevelDBStore.batch()`; reads see the batch's own pending writes."""

    def __init__(self, store: KVStore) -> None:
        self._store = store
        self.puts: dict[bytes, bytes] = {}
        self.deletes: set[bytes] = set()

    def put(self, key: bytes, value: bytes) -> None:
        self.deletes.discard(key)
        self.puts[key] = value

    def delete(self, key: bytes) -> None:
        self.puts.pop(key, None)
        self.deletes.add(key)

    def get(self, key: bytes) -> bytes | None:
        if key in self.deletes:
            return None
        if key in self.puts:
            return self.puts[key]
        return self._store.get(key)


class LevelDBStore:
    """`KVStore` over one LevelDB directory (plyvel).

    With `sync=True` (the default) every write is flushed to disk before it returns, so a
    completed write survives a power loss as well as a process kill. A process kill alone
    never loses a completed write in either mode: LevelDB appends each write batch to its log
    as a single record, which it replays, or discards if torn, on the next open.
    """

    def __init__(self, path: str | Path, *, sync: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._sync = sync
        try:
            self._db: plyvel.DB | None = plyvel.DB(str(self.path), create_if_missing=True)
        except plyvel.IOError as exc:
            if "lock" in str(exc).lower():
                raise StoreLockedError(f"{self.path} is in use by another process: {exc}") from exc
            raise StoreError(f"cannot open {self.path}: {exc}") from exc
        except plyvel.Error as exc:
            raise StoreError(f"cannot open {self.path}: {exc}") from exc

    def _open_db(self) -> plyvel.DB:
        if self._db is None:
            raise StoreClosedError(f"{self.path} is closed")
        return self._db

    def get(self, key: bytes) -> bytes | None:
        return self._open_db().get(key)

    def exists(self, key: bytes) -> bool:
        return self._open_db().get(key) is not None

    def put(self, key: bytes, value: bytes) -> None:
        self._open_db().put(key, value, sync=self._sync)

    def delete(self, key: bytes) -> None:
        self._open_db().delete(key, sync=self._sync)

    def write_batch(self, puts: Mapping[bytes, bytes], deletes: Iterable[bytes] = ()) -> None:
        db = self._open_db()
        with db.write_batch(transaction=True, sync=self._sync) as batch:
            for key, value in puts.items():
                batch.put(key, value)
            for key in deletes:
                batch.delete(key)

    @contextmanager
    def batch(self) -> Iterator[StoreBatch]:
        """Collect writes in a block and apply them as one atomic write when it exits normally.

        If the block raises, nothing is written and the exception propagates.
        """
        pending = StoreBatch(self)
        yield pending
        self.write_batch(pending.puts, pending.deletes)

    def iterate_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        yield from self._open_db().iterator(prefix=prefix)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def closed(self) -> bool:
        return self._db is None

    def __enter__(self) -> LevelDBStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
