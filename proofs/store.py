"""Content-addressed storage of trie nodes: `hash -> RLP encoding`.

The commit engine reads nodes through `NodeStore.get` and writes each commit's new nodes with a single
`NodeStore.put_many`. Pruning additionally needs `PrunableStore.delete_many`. The node's LevelDB store
implements the same protocols; `MemoryStore` is the in-process dict used by tests, benchmarks and
light clients.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable


@runtime_checkable
class NodeStore(Protocol):
    """A key-value store of trie nodes keyed by the keccak256 of their RLP encoding."""

    def get(self, node_hash: bytes) -> bytes | None:
        """Return the encoding stored under `node_hash`, or None when it is not stored."""
        ...

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Store every `(node_hash, encoding)` pair; all of them or none (one write batch)."""
        ...


@runtime_checkable
class PrunableStore(NodeStore, Protocol):
    """A node store that can also forget nodes (needed by `CommitEngine.prune`)."""

    def delete_many(self, node_hashes: Iterable[bytes]) -> None:
        """Remove every listed node; hashes that are not stored are ignored."""
        ...


class MemoryStore:
    """A `PrunableStore` in a Python dict. Guarantees the same semantics as the LevelDB store."""

    __slots__ = ("_nodes",)

    def __init__(self, nodes: dict[bytes, bytes] | None = None) -> None:
        self._nodes: dict[bytes, bytes] = dict(nodes) if nodes else {}

    def get(self, node_hash: bytes) -> bytes | None:
        """Return the stored encoding of `node_hash`, or None."""
        return self._nodes.get(node_hash)

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Store all pairs (a dict update: atomic with respect to other callers of this store)."""
        self._nodes.update(items)

    def delete_many(self, node_hashes: Iterable[bytes]) -> None:
        """Forget every listed node that is stored."""
        pop = self._nodes.pop
        for node_hash in node_hashes:
            pop(node_hash, None)

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, node_hash: object) -> bool:
        return node_hash in self._nodes

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._nodes)
