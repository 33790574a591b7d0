"""The commit engine: an Ethereum hexary Merkle-Patricia trie updated in batches.

Design (see docs/proofs.md):
- The current trie lives in memory as a tree of immutable tuples that carry their RLP encoding and
  hash (tuples of atoms are untracked by Python's cyclic collector, so a million-leaf trie costs it
  nothing). Children not yet read from the store are kept as their 32-byte hash and loaded on use.
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
from typing import Any

from proofs.encoding import (
    BLANK_NODE_REF,
    BLANK_ROOT,
    HASH_REF_PREFIX,
    encode_extension,
    keccak256,
    rlp_list,
    rlp_string,
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


# A node is a tuple (tag, a, b, enc, ref, hash, born):
#   leaf      (LEAF,   path: str, value: bytes, ...)
#   extension (EXT,    path: str, child, ...)
#   branch    (BRANCH, children: tuple of 16 children, refs: tuple of the 17 RLP items or None, ...)
# enc: RLP encoding (None while the node is being built in a commit); ref: how a parent embeds it
# (0xa0 ‖ hash, or enc itself when shorter than 32 bytes); hash: keccak(enc) or None when embedded;
# born: the version that created it (_UNBORN if read from the store). A child is None, a node, or the
# 32-byte hash of a node not read from the store yet. While a branch is being built its children are a
# list, and the ref slot lists the slots whose refs must be recomputed.
_Node = tuple[Any, ...]
_Child = _Node | bytes | None
LEAF, EXT, BRANCH = 0, 1, 2
_TAG, _A, _B, _ENC, _REF, _HASH, _BORN = range(7)


_keccak = keccak256


def _encode_leaf(path: str, value: bytes) -> bytes:
    """Return `encode_leaf(path, value)`, building the hex-prefixed path and its RLP header in one step."""
    if len(path) & 1:
        path_item = bytes.fromhex(f"{0x80 + (len(path) + 1) // 2:02x}3{path}") if len(path) > 1 else bytes.fromhex(f"3{path}")
    else:
        path_item = bytes.fromhex(f"{0x81 + len(path) // 2:02x}20{path}") if path else b"\x20"
    size = len(value)
    if size == 1 and value[0] < 0x80:
        payload = path_item + value
    elif size < 56:
        payload = path_item + bytes((0x80 + size,)) + value
    else:
        payload = path_item + rlp_string(value)
    return rlp_list(payload)


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
        if root != BLANK_ROOT and store.get(root) is None:
            raise MissingNodeError(root)
        self._store = store
        self._root_node: _Child = None if root == BLANK_ROOT else root
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
        while node is not None:
            if node.__class__ is bytes:
                node = self._load(node)  # type: ignore[arg-type]
            tag = node[_TAG]  # type: ignore[index]
            if tag == BRANCH:
                node = node[_A][_NIBBLE[nibbles[depth]]]  # type: ignore[index]
                depth += 1
            elif tag == LEAF:
                return node[_B] if nibbles[depth:] == node[_A] else b""  # type: ignore[index]
            else:
                path = node[_A]  # type: ignore[index]
                if not nibbles.startswith(path, depth):
                    return b""
                depth += len(path)
                node = node[_B]  # type: ignore[index]
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
        while node is not None:
            if node.__class__ is bytes:
                node = self._load(node)  # type: ignore[arg-type]
            if node[_HASH] is not None:  # type: ignore[index]
                proof.append(node[_ENC])  # type: ignore[index]
            tag = node[_TAG]  # type: ignore[index]
            if tag == BRANCH:
                node = node[_A][_NIBBLE[nibbles[depth]]]  # type: ignore[index]
                depth += 1
            elif tag == LEAF:
                break
            else:
                path = node[_A]  # type: ignore[index]
                if not nibbles.startswith(path, depth):
                    break
                depth += len(path)
                node = node[_B]  # type: ignore[index]
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
        for key, value in dirty.items():
            if key.__class__ is not bytes or len(key) != KEY_LENGTH:
                raise InvalidKeyError(f"trie keys are 32 bytes, got {key!r}")
            if value.__class__ is not bytes:
                raise InvalidValueError(f"trie values are bytes, got {type(value).__name__}")
        entries = sorted([(key.hex(), value) for key, value in dirty.items()])
        self._keys = [entry[0] for entry in entries]
        self._values = [entry[1] for entry in entries]
        self._new = []
        self._dropped = []
        version = self._version + 1
        # Pausing the collector keeps it from scanning the commit's short-lived lists mid-commit; the
        # trie holds no reference cycles.
        collecting = gc.isenabled()
        gc.disable()
        try:
            new_root_node = self._root_node
            if self._keys:
                new_root_node = self._apply(new_root_node, 0, 0, len(self._keys))
            if new_root_node is None:
                new_root = BLANK_ROOT
            else:
                if new_root_node.__class__ is bytes:  # unchanged and still unread
                    new_root_node = self._load(new_root_node)  # type: ignore[arg-type]
                if new_root_node[_ENC] is None:  # type: ignore[index]
                    new_root_node = self._finalize(new_root_node, version)  # type: ignore[arg-type]
                if new_root_node[_HASH] is None:  # type: ignore[index]
                    # A root shorter than 32 bytes is still stored and named by its hash.
                    encoded = new_root_node[_ENC]  # type: ignore[index]
                    root_hash = keccak256(encoded)
                    new_root_node = (*new_root_node[:_HASH], root_hash, new_root_node[_BORN])  # type: ignore[index]
                    self._new.append((root_hash, encoded))
                new_root = new_root_node[_HASH]  # type: ignore[index]
            if self._new:
                self._store.put_many(self._new)
            self._journal.append(
                (
                    version,
                    [node_hash for node_hash, _ in self._new],
                    [(node[_HASH], node[_BORN]) for node in self._dropped if node[_HASH] is not None],
                )
            )
        finally:
            self._keys = []
            self._values = []
            self._new = []
            self._dropped = []
            if collecting:
                gc.enable()
        self._root_node = new_root_node
        self._root = new_root
        self._version = version
        self._root_versions.setdefault(new_root, []).append(version)
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

    def _apply(self, node: _Child, depth: int, lo: int, hi: int) -> _Child:
        """Return the node standing at `depth` after applying dirty entries `lo:hi` (all below it).

        Returns `node` itself (the same object) when nothing under it changes.
        """
        if node is None:
            return self._build_fresh(depth, lo, hi)
        if node.__class__ is bytes:
            loaded = self._load(node)  # type: ignore[arg-type]
            result = self._apply(loaded, depth, lo, hi)
            return node if result is loaded else result
        tag = node[_TAG]  # type: ignore[index]
        if tag == BRANCH:
            return self._apply_branch(node, depth, lo, hi)  # type: ignore[arg-type]
        if tag == LEAF:
            return self._apply_leaf(node, depth, lo, hi)  # type: ignore[arg-type]
        return self._apply_extension(node, depth, lo, hi)  # type: ignore[arg-type]

    def _apply_branch(self, node: _Node, depth: int, lo: int, hi: int) -> _Child:
        keys = self._keys
        old_children = node[_A]
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
            new_child = self._apply(child, depth + 1, i, j)
            if new_child is not child:
                if new_children is None:
                    new_children = list(old_children)
                new_children[index] = new_child
                changed.append(index)
            i = j
        if new_children is None:
            if node[_ENC] is not None:
                return node
            new_children = list(old_children)
        self._drop(node)
        if new_children.count(None) <= 14:
            refs = node[_B]
            if node[_ENC] is not None and refs is not None:
                return (BRANCH, new_children, list(refs), None, changed, None, _UNBORN)
            return (BRANCH, new_children, None, None, None, None, _UNBORN)
        return self._normalize_branch(new_children)

    def _apply_leaf(self, node: _Node, depth: int, lo: int, hi: int) -> _Child:
        keys = self._keys
        values = self._values
        path = node[_A]
        full_key = keys[lo][:depth] + path
        if hi - lo == 1 and keys[lo] == full_key:
            value = values[lo]
            if value == node[_B]:
                return node
            self._drop(node)
            if not value:
                return None
            return (LEAF, path, value, None, None, None, _UNBORN)
        pairs = [(keys[i], values[i]) for i in range(lo, hi) if values[i]]
        touched = any(keys[i] == full_key for i in range(lo, hi))
        if not pairs and not touched:
            return node  # only deletes of absent keys
        self._drop(node)
        if not touched:
            pairs.insert(bisect_left(pairs, (full_key, b"")), (full_key, node[_B]))
        return self._build(depth, pairs, 0, len(pairs))

    def _apply_extension(self, node: _Node, depth: int, lo: int, hi: int) -> _Child:
        keys = self._keys
        path = node[_A]
        length = len(path)
        first = keys[lo]
        last = keys[hi - 1]
        child = node[_B]
        if first.startswith(path, depth) and last.startswith(path, depth):
            new_child = self._apply(child, depth + length, lo, hi)
            if new_child is child and node[_ENC] is not None:
                return node
            self._drop(node)
            if new_child is None:
                return None
            return self._prefix(path, new_child)
        # Some keys leave the extension's path: split it at the first diverging nibble, then apply.
        split = min(
            _common_prefix_length(first, first[:depth] + path, depth),
            _common_prefix_length(last, last[:depth] + path, depth),
        )
        self._drop(node)
        lower: _Child = child if split + 1 == length else (EXT, path[split + 1 :], child, None, None, None, _UNBORN)
        children: list[_Child] = [None] * 16
        children[_NIBBLE[path[split]]] = lower
        top: _Node = (BRANCH, children, None, None, None, None, _UNBORN)
        if split:
            top = (EXT, path[:split], top, None, None, None, _UNBORN)
        return self._apply(top, depth, lo, hi)

    def _prefix(self, path: str, node: _Child) -> _Node:
        """Return the node equal to an extension with `path` over `node`, merging paths as MPT requires."""
        if node.__class__ is bytes:
            node = self._load(node)  # type: ignore[arg-type]
        tag = node[_TAG]  # type: ignore[index]
        if tag == BRANCH:
            return (EXT, path, node, None, None, None, _UNBORN)
        self._drop(node)  # type: ignore[arg-type]
        return (tag, path + node[_A], node[_B], None, None, None, _UNBORN)  # type: ignore[index]

    def _normalize_branch(self, children: list[_Child]) -> _Child:
        """Return the node for a branch with these children: a branch, or a collapsed leaf/extension."""
        occupied = 16 - children.count(None)
        if occupied >= 2:
            return (BRANCH, children, None, None, None, None, _UNBORN)
        if occupied == 0:
            return None
        index = next(i for i in range(16) if children[i] is not None)
        return self._prefix(_HEX[index], children[index])

    def _build_fresh(self, depth: int, lo: int, hi: int) -> _Child:
        keys = self._keys
        values = self._values
        if hi - lo == 1:
            return (LEAF, keys[lo][depth:], values[lo], None, None, None, _UNBORN) if values[lo] else None
        pairs = [(keys[i], values[i]) for i in range(lo, hi) if values[i]]
        return self._build(depth, pairs, 0, len(pairs))

    def _build(self, depth: int, pairs: list[tuple[str, bytes]], lo: int, hi: int) -> _Child:
        """Return a new subtree at `depth` holding exactly `pairs[lo:hi]` (sorted, non-empty values)."""
        if lo == hi:
            return None
        if hi - lo == 1:
            key, value = pairs[lo]
            return (LEAF, key[depth:], value, None, None, None, _UNBORN)
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
        branch: _Node = (BRANCH, children, None, None, None, None, _UNBORN)
        if shared:
            return (EXT, first[depth:at], branch, None, None, None, _UNBORN)
        return branch

    def _drop(self, node: _Node) -> None:
        if node[_ENC] is not None:
            self._dropped.append(node)

    def _finalize(self, node: _Node, version: int) -> _Node:
        """Return `node` (built in this commit) encoded and hashed, with every new node under it.

        Each hashed result is queued for the store's `put_many`.
        """
        tag = node[_TAG]
        if tag == LEAF:
            a = node[_A]
            b = node[_B]
            encoded = _encode_leaf(a, b)
        elif tag == BRANCH:
            children = node[_A]
            refs = node[_B]
            indices: Iterable[int]
            if refs is None:
                refs = [BLANK_NODE_REF] * 17
                indices = range(16)
            else:
                indices = node[_REF]
            for index in indices:
                child = children[index]
                if child is None:
                    refs[index] = BLANK_NODE_REF
                elif child.__class__ is bytes:
                    refs[index] = HASH_REF_PREFIX + child
                else:
                    if child[_ENC] is None:
                        child = children[index] = self._finalize(child, version)
                    refs[index] = child[_REF]
            payload = b"".join(refs)
            length = len(payload)
            if length > 255:  # the usual case: a branch with hashed children
                encoded = b"\xf9" + length.to_bytes(2, "big") + payload
            else:
                encoded = rlp_list(payload)
            a = tuple(children)
            b = tuple(refs)
        else:
            a = node[_A]
            b = node[_B]
            if b.__class__ is bytes:
                child_ref = HASH_REF_PREFIX + b
            else:
                if b[_ENC] is None:
                    b = self._finalize(b, version)
                child_ref = b[_REF]
            encoded = encode_extension(a, child_ref)
        if len(encoded) >= 32:
            node_hash = _keccak(encoded)
            self._new.append((node_hash, encoded))
            return (tag, a, b, encoded, HASH_REF_PREFIX + node_hash, node_hash, version)
        return (tag, a, b, encoded, encoded, None, version)

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
        return self._decode(self._read(node_hash), node_hash)

    def _decode(self, encoded: bytes, node_hash: bytes | None) -> _Node:
        items = self._split(encoded)
        ref = HASH_REF_PREFIX + node_hash if node_hash is not None and len(encoded) >= 32 else encoded
        if len(items) == 17:
            if items[16] != BLANK_NODE_REF:
                raise CorruptNodeError("branch with a value: keys are not all 32 bytes")
            children = tuple(self._decode_ref(raw) for raw in items[:16])
            return (BRANCH, children, None, encoded, ref, node_hash, _UNBORN)
        path, is_leaf = self._path(items[0])
        if is_leaf:
            try:
                value = decode_string(items[1])
            except ProofError as exc:
                raise CorruptNodeError(str(exc)) from exc
            return (LEAF, path, value, encoded, ref, node_hash, _UNBORN)
        child = self._decode_ref(items[1])
        if child is None or not path:
            raise CorruptNodeError("extension without a path or a child")
        return (EXT, path, child, encoded, ref, node_hash, _UNBORN)

    def _decode_ref(self, raw: bytes) -> _Child:
        if raw == BLANK_NODE_REF:
            return None
        if len(raw) == 33 and raw[0] == 0xA0:
            return raw[1:]
        if raw[0] >= 0xC0 and len(raw) < 32:
            return self._decode(raw, None)
        raise CorruptNodeError("child reference is neither empty, a hash nor a short embedded node")

    def _load_all(self, node: _Child, live: dict[bytes, int]) -> _Child:
        """Return `node` with every descendant read from the store, counting hashed occurrences."""
        if node is None:
            return None
        if node.__class__ is bytes:
            node = self._load(node)  # type: ignore[arg-type]
        node_hash = node[_HASH]  # type: ignore[index]
        if node_hash is not None:
            live[node_hash] = live.get(node_hash, 0) + 1
        tag = node[_TAG]  # type: ignore[index]
        if tag == LEAF:
            return node
        if tag == EXT:
            return (EXT, node[_A], self._load_all(node[_B], live), *node[_ENC:])  # type: ignore[index]
        children = tuple(self._load_all(child, live) for child in node[_A])  # type: ignore[index]
        return (BRANCH, children, *node[_B:])  # type: ignore[index]

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
        self._root_node = self._load_all(self._root_node, live)
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
