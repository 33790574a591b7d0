"""The commit engine: an Ethereum hexary Merkle-Patricia trie updated in batches.

Design (see docs/proofs.md):
- The current trie lives in memory as a tree of node objects that cache their RLP encoding and hash.
  Children not yet read from the store are kept as their 32-byte hash and loaded on first use.
- `commit(dirty)` applies the sorted dirty set in one recursive copy-on-write pass: only nodes on dirty
  paths are rebuilt, each of them encoded and hashed once, and every new hashed node is written with
  one `put_many`. The old tree is never mutated, so a failing commit leaves the engine unchanged.
- Retention: every commit is a version; each hashed node occurrence records the version it was born
  in and, when a commit replaces it, the version it died in. `prune()` deletes the nodes whose
  lifetimes contain no retained version and that the current trie does not hold.

Keys are the 32-byte trie keys (already keccak-hashed by the caller); a value b"" means absent.
Roots are byte-identical to py-trie's `HexaryTrie` for the same contents.
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping

from proofs.encoding import (
    BLANK_NODE_REF,
    BLANK_ROOT,
    HASH_REF_PREFIX,
    encode_extension,
    encode_leaf,
    keccak256,
    rlp_list,
)
from proofs.store import NodeStore, PrunableStore
from proofs.verify import ProofError, decode_path, decode_string, split_node

__all__ = [
    "BLANK_ROOT",
    "CommitEngine",
    "CommitError",
    "CorruptNodeError",
    "InvalidKeyError",
    "InvalidValueError",
    "MissingNodeError",
    "NotRetainedError",
    "PruningUnsupportedError",
    "TrieError",
    "UnknownRootError",
]

KEY_LENGTH = 32
_HEX = "0123456789abcdef"
_NIBBLE = {c: i for i, c in enumerate(_HEX)}
_UNBORN = -1  # birth version of nodes that existed before this engine started tracking


class TrieError(Exception):
    """Base of every error the commit engine raises."""


class CommitError(TrieError, ValueError):
    """A dirty set cannot be applied; nothing was changed."""


class InvalidKeyError(CommitError):
    """A key is not a 32-byte trie key."""


class InvalidValueError(CommitError):
    """A value is not a byte string."""


class MissingNodeError(TrieError):
    """A node the walk needs is not in the store (never written, or pruned)."""

    def __init__(self, node_hash: bytes) -> None:
        super().__init__(f"trie node 0x{node_hash.hex()} is not in the store")
        self.node_hash = node_hash


class CorruptNodeError(TrieError):
    """A stored node does not decode as a node of a 32-byte-key trie."""


class UnknownRootError(TrieError):
    """A root this engine never held (neither opened at nor committed)."""


class NotRetainedError(TrieError):
    """`release` of a root that is not retained."""


class PruningUnsupportedError(TrieError):
    """`prune` on a store without `delete_many`."""


class _Leaf:
    __slots__ = ("path", "value", "enc", "ref", "hash", "born")

    def __init__(self, path: str, value: bytes) -> None:
        self.path = path
        self.value = value
        self.enc: bytes | None = None
        self.ref: bytes = b""
        self.hash: bytes | None = None
        self.born = _UNBORN


class _Ext:
    __slots__ = ("path", "child", "enc", "ref", "hash", "born")

    def __init__(self, path: str, child: _Node | bytes) -> None:
        self.path = path
        self.child = child
        self.enc: bytes | None = None
        self.ref: bytes = b""
        self.hash: bytes | None = None
        self.born = _UNBORN


class _Branch:
    # refs: the 17 RLP items of the encoding, kept so that a copy re-encodes only its changed slots
    # (listed in `pending`; None means every slot).
    __slots__ = ("children", "refs", "pending", "enc", "ref", "hash", "born")

    def __init__(
        self,
        children: list[_Node | bytes | None],
        refs: list[bytes] | None = None,
        pending: list[int] | None = None,
    ) -> None:
        self.children = children
        self.refs = refs
        self.pending = pending
        self.enc: bytes | None = None
        self.ref: bytes = b""
        self.hash: bytes | None = None
        self.born = _UNBORN


_Node = _Leaf | _Ext | _Branch
_Child = _Node | bytes | None  # bytes: the hash of a node not loaded from the store yet


def _common_prefix_length(a: str, b: str, start: int) -> int:
    n = min(len(a), len(b))
    i = start
    while i < n and a[i] == b[i]:
        i += 1
    return i - start


class CommitEngine:
    """A Merkle-Patricia trie over 32-byte keys, updated in batches, with root retention and proofs.

    Guarantees: `root` is the Ethereum MPT root of the contents (py-trie's root for the same pairs);
    every node reachable from `root` and from every retained root is in the store; a failed commit
    changes nothing.
    """

    def __init__(self, store: NodeStore, root: bytes = BLANK_ROOT) -> None:
        if not isinstance(root, bytes) or len(root) != 32:
            raise UnknownRootError("a root is 32 bytes")
        self._store = store
        self._root_node: _Node | bytes | None = None if root == BLANK_ROOT else root
        if root != BLANK_ROOT and store.get(root) is None:
            raise MissingNodeError(root)
        self._root = root
        self._version = 0
        self._root_versions: dict[bytes, list[int]] = {root: [0]}
        self._retained: Counter[bytes] = Counter()
        # Retention bookkeeping: occurrences of each hashed node in the current trie (complete only once
        # `_tracked`), and the lifetimes [born, died) of replaced occurrences since the last prune.
        self._tracked = root == BLANK_ROOT
        self._live: dict[bytes, int] = {}
        self._deaths: list[tuple[bytes, int, int]] = []
        # Births and deaths of each commit since the last prune, folded into _live/_deaths by prune().
        self._journal: list[tuple[int, list[bytes], list[tuple[bytes, int]]]] = []
        self._new: list[tuple[bytes, bytes]] = []
        self._dropped: list[_Node] = []
        self._keys: list[str] = []
        self._values: list[bytes] = []

    # ------------------------------------------------------------------------------------------ reads

    @property
    def root(self) -> bytes:
        """The root hash of the current contents."""
        return self._root

    @property
    def version(self) -> int:
        """How many commits this engine has applied (0 right after opening)."""
        return self._version

    def get(self, key: bytes) -> bytes:
        """Return the value stored under `key` in the current trie, b"" if absent."""
        if not isinstance(key, bytes) or len(key) != KEY_LENGTH:
            raise InvalidKeyError("a trie key is 32 bytes")
        nibbles = key.hex()
        depth = 0
        node = self._root_node
        if node is not None and node.__class__ is bytes:
            node = self._root_node = self._load(node)
        while node is not None:
            cls = node.__class__
            if cls is _Branch:
                children = node.children  # type: ignore[union-attr]
                index = _NIBBLE[nibbles[depth]]
                child = children[index]
                if child is not None and child.__class__ is bytes:
                    child = children[index] = self._load(child)  # type: ignore[arg-type]
                node = child
                depth += 1
            elif cls is _Leaf:
                return node.value if nibbles[depth:] == node.path else b""  # type: ignore[union-attr]
            else:
                if not nibbles.startswith(node.path, depth):  # type: ignore[union-attr]
                    return b""
                depth += len(node.path)  # type: ignore[union-attr]
                child = node.child  # type: ignore[union-attr]
                if child.__class__ is bytes:
                    child = node.child = self._load(child)  # type: ignore[union-attr,arg-type]
                node = child
        return b""

    def prove(self, key: bytes, root: bytes | None = None) -> list[bytes]:
        """Return the EIP-1186 proof of `key` under `root` (default: the current root).

        The list holds the RLP encoding of every hashed node on the path, root first; embedded nodes
        travel inside their parent. It proves presence (value) or absence (b"") with `verify_proof`.
        Raises UnknownRootError if `root`'s nodes are not in the store (never held, or pruned).
        """
        if not isinstance(key, bytes) or len(key) != KEY_LENGTH:
            raise InvalidKeyError("a trie key is 32 bytes")
        if root is None or root == self._root:
            return self._prove_current(key)
        if root == BLANK_ROOT:
            return []
        if self._store.get(root) is None:
            raise UnknownRootError(f"root 0x{root.hex()} is not available")
        return self._prove_stored(key, root)

    def _prove_current(self, key: bytes) -> list[bytes]:
        proof: list[bytes] = []
        nibbles = key.hex()
        depth = 0
        node = self._root_node
        if node is not None and node.__class__ is bytes:
            node = self._root_node = self._load(node)
        while node is not None:
            if node.hash is not None:  # type: ignore[union-attr]
                proof.append(node.enc)  # type: ignore[union-attr,arg-type]
            cls = node.__class__
            if cls is _Branch:
                children = node.children  # type: ignore[union-attr]
                index = _NIBBLE[nibbles[depth]]
                child = children[index]
                if child is not None and child.__class__ is bytes:
                    child = children[index] = self._load(child)  # type: ignore[arg-type]
                node = child
                depth += 1
            elif cls is _Leaf:
                break
            else:
                if not nibbles.startswith(node.path, depth):  # type: ignore[union-attr]
                    break
                depth += len(node.path)  # type: ignore[union-attr]
                child = node.child  # type: ignore[union-attr]
                if child.__class__ is bytes:
                    child = node.child = self._load(child)  # type: ignore[union-attr,arg-type]
                node = child
        return proof

    def _prove_stored(self, key: bytes, root: bytes) -> list[bytes]:
        proof: list[bytes] = []
        nibbles = key.hex()
        depth = 0
        ref: bytes | None = HASH_REF_PREFIX + root
        while ref is not None:
            if len(ref) == 33 and ref[0] == 0xA0:
                encoded = self._read(ref[1:])
                proof.append(encoded)
            else:
                encoded = ref
            items = self._split(encoded)
            ref = None
            if len(items) == 17:
                raw = items[_NIBBLE[nibbles[depth]]]
                depth += 1
                if raw != BLANK_NODE_REF:
                    ref = raw
            else:
                path, is_leaf = self._path(items[0])
                if not is_leaf and nibbles.startswith(path, depth):
                    depth += len(path)
                    ref = items[1]
        return proof

    # ------------------------------------------------------------------------------------------ commit

    def commit(self, dirty: Mapping[bytes, bytes]) -> bytes:
        """Apply every `key -> value` of `dirty` (value b"" deletes) at once and return the new root.

        Guarantees: each node on a dirty path is rebuilt, encoded and hashed once; all new nodes are
        written in one `put_many`; on any error (invalid key or value, missing node, store failure)
        the engine's contents, root and retention state are unchanged.
        """
        keys: list[str] = []
        values: list[bytes] = []
        for key, value in sorted(dirty.items()):
            if not isinstance(key, bytes) or len(key) != KEY_LENGTH:
                raise InvalidKeyError(f"trie keys are 32 bytes, got {key!r}")
            if not isinstance(value, bytes):
                raise InvalidValueError(f"trie values are bytes, got {type(value).__name__}")
            keys.append(key.hex())
            values.append(value)
        self._keys = keys
        self._values = values
        self._new = []
        self._dropped = []
        version = self._version + 1
        # The trie holds no reference cycles; pausing the collector keeps it from traversing the whole
        # in-memory trie in the middle of a commit.
        collecting = gc.isenabled()
        gc.disable()
        try:
            old_root_node = self._root_node
            if old_root_node is not None and old_root_node.__class__ is bytes:
                old_root_node = self._root_node = self._load(old_root_node)
            if keys:
                new_root_node = self._apply(old_root_node, 0, 0, len(keys))  # type: ignore[arg-type]
            else:
                new_root_node = old_root_node  # type: ignore[assignment]
            if new_root_node is None:
                new_root = BLANK_ROOT
            else:
                if new_root_node.enc is None:
                    self._encode(new_root_node, version)
                if new_root_node.hash is None:  # a root shorter than 32 bytes is still stored by hash
                    new_root_node.hash = keccak256(new_root_node.enc)  # type: ignore[arg-type]
                    self._new.append((new_root_node.hash, new_root_node.enc))  # type: ignore[arg-type]
                new_root = new_root_node.hash
            if self._new:
                self._store.put_many(self._new)
        finally:
            self._keys = []
            self._values = []
            if collecting:
                gc.enable()
        self._root_node = new_root_node
        self._root = new_root
        self._version = version
        self._root_versions.setdefault(new_root, []).append(version)
        self._journal.append(
            (
                version,
                [node_hash for node_hash, _ in self._new],
                [(node.hash, node.born) for node in self._dropped if node.hash is not None],  # type: ignore[misc]
            )
        )
        self._new = []
        self._dropped = []
        return new_root

    def _replay_journal(self) -> None:
        """Fold the journaled commits, in order, into the live counts and the death records."""
        live = self._live
        deaths = self._deaths
        for version, born, died in self._journal:
            for node_hash in born:
                live[node_hash] = live.get(node_hash, 0) + 1
            for node_hash, born_in in died:
                count = live.get(node_hash, 0) - 1
                if count > 0:
                    live[node_hash] = count
                else:
                    live.pop(node_hash, None)
                deaths.append((node_hash, born_in, version))
        self._journal = []

    def _apply(self, node: _Node | None, depth: int, lo: int, hi: int) -> _Node | None:
        """Return the node standing at `depth` after applying dirty entries `lo:hi` (all below it)."""
        if node is None:
            return self._build_fresh(depth, lo, hi)
        cls = node.__class__
        keys = self._keys
        if cls is _Branch:
            old_children = node.children  # type: ignore[union-attr]
            new_children: list[_Child] | None = None
            changed: list[int] = []
            i = lo
            while i < hi:
                nibble = keys[i][depth]
                j = i + 1
                while j < hi and keys[j][depth] == nibble:
                    j += 1
                index = _NIBBLE[nibble]
                child = old_children[index]
                if child is not None and child.__class__ is bytes:
                    child = old_children[index] = self._load(child)  # type: ignore[arg-type]
                new_child = self._apply(child, depth + 1, i, j)  # type: ignore[arg-type]
                if new_child is not child:
                    if new_children is None:
                        new_children = old_children[:]
                    new_children[index] = new_child
                    changed.append(index)
                i = j
            if new_children is None:
                if node.enc is not None:
                    return node
                new_children = old_children
            self._drop(node)
            if new_children.count(None) <= 14:
                refs = node.refs  # type: ignore[union-attr]
                if refs is None or node.pending is not None:  # type: ignore[union-attr]
                    return _Branch(new_children)
                return _Branch(new_children, refs[:], changed)
            return self._normalize_branch(new_children)
        if cls is _Leaf:
            return self._apply_leaf(node, depth, lo, hi)  # type: ignore[arg-type]
        return self._apply_extension(node, depth, lo, hi)  # type: ignore[arg-type]

    def _apply_leaf(self, node: _Leaf, depth: int, lo: int, hi: int) -> _Node | None:
        keys = self._keys
        values = self._values
        full_key = keys[lo][:depth] + node.path
        if hi - lo == 1 and keys[lo] == full_key:
            value = values[lo]
            if value == node.value:
                return node
            self._drop(node)
            if not value:
                return None
            return _Leaf(node.path, value)
        pairs = [(keys[i], values[i]) for i in range(lo, hi) if values[i]]
        touched = any(keys[i] == full_key for i in range(lo, hi))
        if not pairs and not touched:
            return node  # only deletes of absent keys
        self._drop(node)
        if not touched:
            pairs.insert(bisect_left(pairs, (full_key, b"")), (full_key, node.value))
        return self._build(depth, pairs, 0, len(pairs))

    def _apply_extension(self, node: _Ext, depth: int, lo: int, hi: int) -> _Node | None:
        keys = self._keys
        path = node.path
        length = len(path)
        first = keys[lo]
        last = keys[hi - 1]
        if first.startswith(path, depth) and last.startswith(path, depth):
            child = node.child
            if child.__class__ is bytes:
                child = node.child = self._load(child)  # type: ignore[arg-type]
            new_child = self._apply(child, depth + length, lo, hi)  # type: ignore[arg-type]
            if new_child is child and node.enc is not None:
                return node
            self._drop(node)
            if new_child is None:
                return None
            return self._prefix(path, new_child)
        # Some keys leave the extension's path: split it at the first diverging nibble.
        split = min(
            _common_prefix_length(first, first[:depth] + path, depth),
            _common_prefix_length(last, last[:depth] + path, depth),
        )
        self._drop(node)
        child = node.child
        lower: _Child = child if split + 1 == length else _Ext(path[split + 1 :], child)
        children: list[_Child] = [None] * 16
        children[_NIBBLE[path[split]]] = lower
        branch = _Branch(children)
        top: _Node = branch if split == 0 else _Ext(path[:split], branch)
        return self._apply(top, depth, lo, hi)

    def _prefix(self, path: str, node: _Node) -> _Node:
        """Return the node equal to an extension with `path` over `node`, merging paths as MPT requires."""
        cls = node.__class__
        if cls is _Leaf:
            self._drop(node)
            return _Leaf(path + node.path, node.value)  # type: ignore[union-attr]
        if cls is _Ext:
            self._drop(node)
            return _Ext(path + node.path, node.child)  # type: ignore[union-attr]
        return _Ext(path, node)

    def _normalize_branch(self, children: list[_Child]) -> _Node | None:
        """Return the node for a branch with these children: a branch, or a collapsed leaf/extension."""
        occupied = 16 - children.count(None)
        if occupied >= 2:
            return _Branch(children)
        if occupied == 0:
            return None
        for index in range(16):
            child = children[index]
            if child is not None:
                break
        if child.__class__ is bytes:
            child = self._load(child)  # type: ignore[arg-type]
        return self._prefix(_HEX[index], child)  # type: ignore[arg-type]

    def _build_fresh(self, depth: int, lo: int, hi: int) -> _Node | None:
        keys = self._keys
        values = self._values
        if hi - lo == 1:
            return _Leaf(keys[lo][depth:], values[lo]) if values[lo] else None
        pairs = [(keys[i], values[i]) for i in range(lo, hi) if values[i]]
        return self._build(depth, pairs, 0, len(pairs))

    def _build(self, depth: int, pairs: list[tuple[str, bytes]], lo: int, hi: int) -> _Node | None:
        """Return a new subtree at `depth` holding exactly `pairs[lo:hi]` (sorted, non-empty values)."""
        if lo == hi:
            return None
        if hi - lo == 1:
            key, value = pairs[lo]
            return _Leaf(key[depth:], value)
        first = pairs[lo][0]
        shared = _common_prefix_length(first, pairs[hi - 1][0], depth)
        children: list[_Child] = [None] * 16
        at = depth + shared
        i = lo
        while i < hi:
            nibble = pairs[i][0][at]
            j = i + 1
            while j < hi and pairs[j][0][at] == nibble:
                j += 1
            children[_NIBBLE[nibble]] = self._build(at + 1, pairs, i, j)
            i = j
        branch = _Branch(children)
        if shared:
            return _Ext(first[depth:at], branch)
        return branch

    def _drop(self, node: _Node) -> None:
        if node.enc is not None:
            self._dropped.append(node)

    def _encode(self, node: _Node, version: int) -> None:
        """Encode and hash `node` and every not-yet-encoded node under it; queue hashed ones for the store."""
        cls = node.__class__
        if cls is _Leaf:
            encoded = encode_leaf(node.path, node.value)  # type: ignore[union-attr]
        elif cls is _Branch:
            children = node.children  # type: ignore[union-attr]
            refs = node.refs  # type: ignore[union-attr]
            if refs is None:
                refs = [BLANK_NODE_REF] * 17
                indices: Iterable[int] = range(16)
            else:
                indices = node.pending  # type: ignore[union-attr,assignment]
            for index in indices:
                child = children[index]
                if child is None:
                    refs[index] = BLANK_NODE_REF
                elif child.__class__ is bytes:
                    refs[index] = HASH_REF_PREFIX + child  # type: ignore[operator]
                else:
                    if child.enc is None:  # type: ignore[union-attr]
                        self._encode(child, version)  # type: ignore[arg-type]
                    refs[index] = child.ref  # type: ignore[union-attr]
            node.refs = refs  # type: ignore[union-attr]
            node.pending = None  # type: ignore[union-attr]
            encoded = rlp_list(b"".join(refs))
        else:
            child = node.child  # type: ignore[union-attr]
            if child.__class__ is bytes:
                child_ref = HASH_REF_PREFIX + child  # type: ignore[operator]
            else:
                if child.enc is None:  # type: ignore[union-attr]
                    self._encode(child, version)  # type: ignore[arg-type]
                child_ref = child.ref  # type: ignore[union-attr]
            encoded = encode_extension(node.path, child_ref)  # type: ignore[union-attr]
        node.enc = encoded
        node.born = version
        if len(encoded) >= 32:
            node_hash = keccak256(encoded)
            node.hash = node_hash
            node.ref = HASH_REF_PREFIX + node_hash
            self._new.append((node_hash, encoded))
        else:
            node.ref = encoded

    # ------------------------------------------------------------------------------------------ loading

    def _read(self, node_hash: bytes) -> bytes:
        encoded = self._store.get(node_hash)
        if encoded is None:
            raise MissingNodeError(node_hash)
        return encoded

    @staticmethod
    def _split(encoded: bytes) -> list[bytes]:
        try:
            items = split_node(encoded)
        except ProofError as exc:
            raise CorruptNodeError(str(exc)) from exc
        if len(items) not in (2, 17):
            raise CorruptNodeError(f"a trie node has 2 or 17 items, not {len(items)}")
        return items

    @staticmethod
    def _path(raw: bytes) -> tuple[str, bool]:
        try:
            return decode_path(raw)
        except ProofError as exc:
            raise CorruptNodeError(str(exc)) from exc

    def _load(self, node_hash: bytes) -> _Node:
        """Read and decode the node `node_hash` from the store (embedded children decoded too)."""
        node = self._decode(self._read(node_hash))
        node.hash = node_hash
        node.ref = HASH_REF_PREFIX + node_hash if len(node.enc) >= 32 else node.enc  # type: ignore[arg-type]
        return node

    def _decode(self, encoded: bytes) -> _Node:
        items = self._split(encoded)
        node: _Node
        if len(items) == 17:
            if items[16] != BLANK_NODE_REF:
                raise CorruptNodeError("branch with a value: keys are not all 32 bytes")
            node = _Branch([self._decode_ref(raw) for raw in items[:16]])
        else:
            path, is_leaf = self._path(items[0])
            if is_leaf:
                try:
                    node = _Leaf(path, decode_string(items[1]))
                except ProofError as exc:
                    raise CorruptNodeError(str(exc)) from exc
            else:
                child = self._decode_ref(items[1])
                if child is None or not path:
                    raise CorruptNodeError("extension without a path or a child")
                node = _Ext(path, child)
        node.enc = encoded
        return node

    def _decode_ref(self, raw: bytes) -> _Child:
        if raw == BLANK_NODE_REF:
            return None
        if len(raw) == 33 and raw[0] == 0xA0:
            return raw[1:]
        if raw[0] >= 0xC0 and len(raw) < 32:
            node = self._decode(raw)
            node.ref = raw
            return node
        raise CorruptNodeError("child reference is neither empty, a hash nor a short embedded node")

    # ------------------------------------------------------------------------------------------ retention

    def retain(self, root: bytes) -> None:
        """Keep `root` provable until a matching `release`: `prune` never deletes a node it reaches.

        Retains are counted. Only roots this engine opened at or committed can be retained.
        """
        if root not in self._root_versions:
            raise UnknownRootError(f"root 0x{root.hex()} was never held by this engine")
        self._retained[root] += 1

    def release(self, root: bytes) -> None:
        """Undo one `retain(root)`; its nodes become prunable once no retain of it is left."""
        if self._retained[root] <= 0:
            self._retained.pop(root, None)
            raise NotRetainedError(f"root 0x{root.hex()} is not retained")
        self._retained[root] -= 1
        if self._retained[root] == 0:
            del self._retained[root]

    def retained_roots(self) -> frozenset[bytes]:
        """The roots currently retained (the current root is always kept too, retained or not)."""
        return frozenset(self._retained)

    def track(self) -> None:
        """Make retention bookkeeping complete for an engine opened at a stored root.

        Loads the whole current trie into memory (cost proportional to its size). `prune` calls it when
        needed. Nodes the trie held only before this engine opened are unknown to it and never deleted.
        """
        if self._tracked:
            return
        # Deaths journaled so far stay valid; live counts are taken from the trie as it is now.
        for version, _, died in self._journal:
            self._deaths.extend((node_hash, born_in, version) for node_hash, born_in in died)
        self._journal = []
        live: dict[bytes, int] = {}
        stack: list[_Node] = []
        if self._root_node is not None:
            if self._root_node.__class__ is bytes:
                self._root_node = self._load(self._root_node)  # type: ignore[arg-type]
            stack.append(self._root_node)  # type: ignore[arg-type]
        while stack:
            node = stack.pop()
            if node.hash is not None:
                live[node.hash] = live.get(node.hash, 0) + 1
            if node.__class__ is _Branch:
                children = node.children  # type: ignore[union-attr]
                for index in range(16):
                    child = children[index]
                    if child is not None:
                        if child.__class__ is bytes:
                            child = children[index] = self._load(child)  # type: ignore[arg-type]
                        stack.append(child)  # type: ignore[arg-type]
            elif node.__class__ is _Ext:
                child = node.child  # type: ignore[union-attr]
                if child.__class__ is bytes:
                    child = node.child = self._load(child)  # type: ignore[union-attr,arg-type]
                stack.append(child)  # type: ignore[arg-type]
        self._live = live
        self._tracked = True

    def prune(self) -> int:
        """Delete from the store every node that no retained root and not the current root reaches.

        Guarantees: every retained root and the current root stay fully provable; a node shared by a
        pruned root and a retained one is kept. Returns the number of nodes deleted.
        """
        store = self._store
        if not isinstance(store, PrunableStore):
            raise PruningUnsupportedError("the node store cannot delete nodes")
        self.track()
        self._replay_journal()
        retained_versions = sorted(
            {version for root in self._retained for version in self._root_versions[root]}
            | {self._version}
        )
        kept: list[tuple[bytes, int, int]] = []
        candidates: set[bytes] = set()
        for record in self._deaths:
            _, born, died = record
            position = bisect_left(retained_versions, born)
            if position < len(retained_versions) and retained_versions[position] < died:
                kept.append(record)
            else:
                candidates.add(record[0])
        needed = {record[0] for record in kept}
        live = self._live
        doomed = [h for h in candidates if h not in needed and h not in live]
        store.delete_many(doomed)
        self._deaths = kept
        return len(doomed)

    def stored_nodes(self, root: bytes | None = None) -> Iterable[bytes]:
        """Yield the hash of every hashed node reachable from `root` (default: current), reading the store."""
        start = self._root if root is None else root
        if start == BLANK_ROOT:
            return
        pending = [start]
        seen: set[bytes] = set()
        while pending:
            node_hash = pending.pop()
            if node_hash in seen:
                continue
            seen.add(node_hash)
            yield node_hash
            refs = [self._read(node_hash)]
            while refs:
                items = self._split(refs.pop())
                raws = items[:16] if len(items) == 17 else ([] if self._path(items[0])[1] else [items[1]])
                for raw in raws:
                    if len(raw) == 33 and raw[0] == 0xA0:
                        pending.append(raw[1:])
                    elif raw != BLANK_NODE_REF and raw[0] >= 0xC0:
                        refs.append(raw)
