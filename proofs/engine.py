"""The commit engine: an Ethereum hexary Merkle-Patricia trie updated in batches.

Design (see docs/proofs.md):
- The current trie lives in memory as a node cache: a dict from each hashed node's reference
  (0xa0 ‖ keccak) to an immutable tuple of atoms (tag, encoding, birth version, path/value or the
  RLP references of its children). Tuples of atoms are untracked by Python's cyclic collector, so a
  million-node trie costs the collector nothing. A reference missing from the cache (an engine
  opened at a stored root) is read from the store on use.
- `commit(dirty)` applies the sorted dirty set in one recursive copy-on-write pass: only nodes on dirty
  paths are rebuilt, each of them encoded and hashed once, and every new hashed node is written with
  one `put_many`. The cache is updated only after the store accepted the nodes, so a failing commit
  leaves the engine unchanged.
- Retention: every commit is a version; each hashed node remembers the version it entered the trie
  in and, when a commit removes its last occurrence, the version it left in. `prune()` deletes the
  nodes whose lifetimes contain no retained version and that the current trie does not hold.

Keys are the 32-byte trie keys (already keccak-hashed by the caller); a value b"" means absent.
Roots are byte-identical to py-trie's `HexaryTrie` for the same contents.

Backends: the commit pass exists twice, in Python below and in C (`proofs/_commit.c`, the module
`proofs._commit`, built at install when a compiler is present). Both work on the same node tuples and
cache, follow the same steps and produce the same roots, nodes and store writes; everything else
(reads, proofs, retention, pruning) is shared Python. `BACKEND` names the default: "native" when the
extension is importable, "python" without it or when the environment sets EXOS_PROOFS_NATIVE=0.
`CommitEngine(..., native=False)` selects the Python pass for one engine.
"""

from __future__ import annotations

import gc
import os
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from itertools import repeat
from operator import itemgetter
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
    "BACKEND",
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


# A cached node is a tuple of atoms:
#   leaf      (LEAF,   enc, born, path: str, value: bytes)
#   extension (EXT,    enc, born, path: str, child_ref: bytes)
#   branch    (BRANCH, enc, born, ref_0, ..., ref_15)
# A reference (ref) is how a parent embeds a child in its RLP: 0xa0 ‖ keccak(enc) for nodes of 32
# bytes or more, the encoding itself for shorter (embedded) nodes, b"\x80" for an empty slot.
# A node being built in a commit has enc None; a branch being built is
# (BRANCH, None, _UNBORN, slots, changed) with a list of 16 slots, each a ref or a node being built,
# and the indices of the slots that may hold nodes being built (None: any); an extension's child may
# be a node being built too.
_Node = tuple[Any, ...]
_Slot = _Node | bytes  # a reference, or a node being built in the current commit
LEAF, EXT, BRANCH = 0, 1, 2
_TAG, _ENC, _BORN, _A, _B = range(5)
_BLANK = BLANK_NODE_REF

_keccak = keccak256


def native_module() -> Any:
    """The native extension ``proofs._commit``, configured for this module, or None when it is not
    built or the environment sets EXOS_PROOFS_NATIVE=0 (read at each call). Other hot paths take
    their native helpers through it, under the same rule."""
    if os.environ.get("EXOS_PROOFS_NATIVE", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        from proofs import _commit
    except ImportError:
        return None
    _commit.configure(_BLANK, InvalidKeyError, InvalidValueError, CorruptNodeError)
    return _commit


_native = native_module()
BACKEND: str = "python" if _native is None else "native"  # the commit pass engines use by default


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


def _is_hash_ref(ref: bytes) -> bool:
    return len(ref) == 33 and ref[0] == 0xA0


def _died(record: tuple[bytes, int, int]) -> int:
    return record[2]


class _PruneRound:
    """A prune in progress: the lifetimes to classify, how far it got, and the ones no retained
    version kept (deleted when the round finishes, unless something keeps them by then).

    A round goes through three kinds of step, each bounded by the step's record budget:
    uncounting the lifetimes whose keeper was released (``unkeep``), classifying ``pending``,
    and finishing: deleting the candidates nothing keeps, a slice at a time."""

    __slots__ = ("start_version", "pending", "position", "candidates", "unkeep", "unkept", "finishing",
                 "finished", "recent", "recent_seen")

    def __init__(self, start_version: int, pending: list[tuple[bytes, int, int]],
                 unkeep: list[tuple[bytes, int, int]] | None = None) -> None:
        self.start_version = start_version
        self.pending = pending
        self.position = 0
        self.candidates: list[tuple[bytes, int, int]] = []
        self.unkeep: list[tuple[bytes, int, int]] = unkeep if unkeep is not None else []
        self.unkept = 0  # how many of ``unkeep`` no longer count in ``kept_refs``
        self.finishing = False  # classification is over; deleting candidates
        self.finished = 0  # candidates already looked at by the finishing steps
        self.recent: set[bytes] = set()  # nodes with a lifetime recorded since the round began
        self.recent_seen = 0  # how many of those records ``recent`` holds

    def __getstate__(self) -> tuple[object, ...]:
        return (self.start_version, self.pending, self.position, self.candidates, self.unkeep, self.unkept,
                self.finishing, self.finished, self.recent, self.recent_seen)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        if len(state) == 4:  # a round saved before rounds were stepped through uncounting and finishing
            state = (*state, [], 0, False, 0, set(), 0)
        (self.start_version, self.pending, self.position, self.candidates, self.unkeep, self.unkept,
         self.finishing, self.finished, self.recent, self.recent_seen) = state  # type: ignore[assignment]


class CommitEngine:
    """A Merkle-Patricia trie over 32-byte keys, updated in batches, with root retention and proofs.

    Guarantees: `root` is the Ethereum MPT root of the contents (py-trie's root for the same pairs);
    every node reachable from `root` and from every retained root is in the store; a failed commit
    changes nothing.
    """

    def __init__(
        self, store: NodeStore, root: bytes = BLANK_ROOT, *, pruning: bool = False, native: bool | None = None
    ) -> None:
        """Open the trie `root` (default: empty) over `store`.

        With `pruning=True` the engine records node lifetimes so that `prune()` can delete what no
        retained root reaches; without it nothing is ever deleted (every root stays provable while
        the store keeps its nodes) and commits skip that bookkeeping.

        `native` selects the commit pass: None uses `BACKEND`, False the pure-Python pass, True the
        native one (ImportError if it is unavailable). Results are identical either way.
        """
        if not isinstance(root, bytes) or len(root) != 32:
            raise UnknownRootError("a root is 32 bytes")
        if native and _native is None:
            raise ImportError("the native commit pass (proofs._commit) is not available")
        if root != BLANK_ROOT and store.get(root) is None:
            raise MissingNodeError(root)
        self._pass: Any = _native if native is None or native else None
        self._store = store
        self._pruning = pruning
        self._root = root
        self._root_ref = _BLANK if root == BLANK_ROOT else HASH_REF_PREFIX + root
        self._version = 0
        self._root_versions: dict[bytes, list[int]] = {root: [0]}
        self._retained: Counter[bytes] = Counter()
        # The node cache. Once `_tracked`, it holds exactly the hashed nodes of the current trie, and
        # `_extra` counts the occurrences of a node beyond its first (equal subtrees at two positions).
        # Before that (an engine opened at a stored root) it is a plain read cache.
        self._tracked = root == BLANK_ROOT
        self._nodes: dict[bytes, _Node] = {}
        self._extra: dict[bytes, int] = {}
        # Lifetimes [born, died) of hashed nodes that left the trie since the last prune, and the
        # lifetimes a prune kept, by the retained version that keeps each ("keeper"), with the
        # number of kept lifetimes per node.
        self._deaths: list[tuple[bytes, int, int]] = []
        self._kept: dict[int, list[tuple[bytes, int, int]]] = {}
        self._kept_refs: Counter[bytes] = Counter()
        self._round: _PruneRound | None = None  # an open stepwise prune
        # A commit's new hashed nodes: for the store (hash, encoding) and for the cache (ref, node), in
        # parallel lists rather than pairs, so that the collector has fewer objects to look at.
        self._new_hashes: list[bytes] = []
        self._new_encodings: list[bytes] = []
        self._created_refs: list[bytes] = []
        self._created_nodes: list[_Node] = []
        self._dropped: list[bytes] = []
        self._version_in_progress = 0
        self._keys: list[str] = []
        self._values: list[bytes] = []

    # ------------------------------------------------------------------------------------------ reads

    @property
    def root(self) -> bytes:
        """The root hash of the current contents."""
        return self._root

    @property
    def backend(self) -> str:
        """The commit pass this engine uses: "native" or "python"."""
        return "python" if self._pass is None else "native"

    def __getstate__(self) -> dict[str, Any]:
        """A pickled engine (the sequencer's state snapshots hold one) names its commit pass
        instead of carrying the extension module, which cannot be pickled."""
        state = self.__dict__.copy()
        state["_pass"] = self._pass is not None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled engine; one pickled with the native pass falls back to the Python
        pass where the extension is not built (both give the same roots)."""
        state = dict(state)
        state["_pass"] = _native if state.get("_pass") else None
        state.setdefault("_kept", {})  # pickled before kept lifetimes were kept apart
        state.setdefault("_kept_refs", Counter())
        state.setdefault("_round", None)
        self.__dict__.update(state)

    @property
    def version(self) -> int:
        """How many commits this engine has applied (0 right after opening)."""
        return self._version

    def _node(self, ref: bytes) -> _Node:
        """Return the node a (non-empty) reference stands for: cached, embedded, or read from the store."""
        node = self._nodes.get(ref)
        if node is not None:
            return node
        if _is_hash_ref(ref):
            node = self._decode(self._read(ref[1:]))
            if not self._tracked:
                self._nodes[ref] = node
            return node
        return self._decode(ref)

    def get(self, key: bytes) -> bytes:
        """Return the value stored under `key` in the current trie, b"" if absent."""
        if not isinstance(key, bytes) or len(key) != KEY_LENGTH:
            raise InvalidKeyError("a trie key is 32 bytes")
        nibbles = key.hex()
        depth = 0
        ref = self._root_ref
        nodes = self._nodes
        while ref != _BLANK:
            node = nodes.get(ref) or self._node(ref)
            tag = node[_TAG]
            if tag == BRANCH:
                ref = node[3 + _NIBBLE[nibbles[depth]]]
                depth += 1
            elif tag == LEAF:
                return node[_B] if nibbles[depth:] == node[_A] else b""
            else:
                path = node[_A]
                if not nibbles.startswith(path, depth):
                    return b""
                depth += len(path)
                ref = node[_B]
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
        ref = self._root_ref
        nodes = self._nodes
        while ref != _BLANK:
            node = nodes.get(ref) or self._node(ref)
            if len(ref) == 33:
                proof.append(node[_ENC])
            tag = node[_TAG]
            if tag == BRANCH:
                ref = node[3 + _NIBBLE[nibbles[depth]]]
                depth += 1
            elif tag == LEAF:
                break
            else:
                path = node[_A]
                if not nibbles.startswith(path, depth):
                    break
                depth += len(path)
                ref = node[_B]
        return proof

    def _prove_stored(self, key: bytes, root: bytes) -> list[bytes]:
        proof: list[bytes] = []
        nibbles = key.hex()
        depth = 0
        ref: bytes | None = HASH_REF_PREFIX + root
        while ref is not None:
            if _is_hash_ref(ref):
                encoded = self._read(ref[1:])
                proof.append(encoded)
            else:
                encoded = ref
            items = self._split(encoded)
            ref = None
            if len(items) == 17:
                raw = items[_NIBBLE[nibbles[depth]]]
                depth += 1
                if raw != _BLANK:
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
        if self._pass is not None:
            return self._commit_native(dirty)
        for key, value in dirty.items():
            if key.__class__ is not bytes or len(key) != KEY_LENGTH:
                raise InvalidKeyError(f"trie keys are 32 bytes, got {key!r}")
            if value.__class__ is not bytes:
                raise InvalidValueError(f"trie values are bytes, got {type(value).__name__}")
        version = self._version + 1
        # Pausing the collector keeps it from scanning the commit's short-lived objects mid-commit;
        # the trie holds no reference cycles.
        collecting = gc.isenabled()
        gc.disable()
        try:
            entries = sorted([(key.hex(), value) for key, value in dirty.items()])
            self._keys = [entry[0] for entry in entries]
            self._values = [entry[1] for entry in entries]
            self._new_hashes = []
            self._new_encodings = []
            self._created_refs = []
            self._created_nodes = []
            self._dropped = []
            self._version_in_progress = version
            new_slot: _Slot = self._root_ref
            if self._keys:
                new_slot = self._apply(new_slot, 0, 0, len(self._keys))
            new_ref = self._finalize(new_slot) if isinstance(new_slot, tuple) else new_slot
            new_ref, new_root = self._name_root(
                new_ref, version, self._new_hashes, self._new_encodings, self._created_refs, self._created_nodes
            )
            if self._new_hashes:
                self._store.put_many(zip(self._new_hashes, self._new_encodings, strict=True))
            if collecting:
                # A young-generation pass untracks the new node tuples (they hold only atoms), so the
                # node cache stays a dict the collector never has to traverse; without it every full
                # collection would visit each of the trie's nodes.
                self._keys = []
                self._values = []
                del entries
                gc.collect(0)
            dropped = [ref for ref in self._dropped if len(ref) == 33]  # embedded nodes live in their parent
            self._account(version, dropped, self._created_refs, self._created_nodes)
        finally:
            self._keys = []
            self._values = []
            self._new_hashes = []
            self._new_encodings = []
            self._created_refs = []
            self._created_nodes = []
            self._dropped = []
            if collecting:
                gc.enable()
        self._finish_commit(new_ref, new_root, version)
        return new_root

    def _commit_native(self, dirty: Mapping[bytes, bytes]) -> bytes:
        """`commit` through the native pass (`proofs._commit.commit_pass`): same guarantees, same results."""
        version = self._version + 1
        collecting = gc.isenabled()
        gc.disable()
        try:
            new_ref, hashes, encodings, refs, created, dropped, loads = self._pass.commit_pass(
                self._nodes, self._node, self._root_ref, dirty if dirty.__class__ is dict else dict(dirty), version
            )
            short_root = len(new_ref) < 32
            new_ref, new_root = self._name_root(new_ref, version, hashes, encodings, refs, created)
            if hashes:
                self._store.put_many(zip(hashes, encodings, strict=True))
            if collecting and (loads or short_root):
                # The native pass creates its node tuples untracked; nodes decoded in Python (read from
                # the store, or a short root) need the young-generation pass that untracks them.
                gc.collect(0)
            if not self._pruning:
                self._pass.update_cache(self._nodes, dropped, refs, created)
            elif self._tracked and not self._extra:
                # `_account`'s common case (every removal is a node's last occurrence), in C.
                self._pass.update_tracked_cache(self._nodes, self._extra, self._deaths, dropped, refs, created, version)
            else:
                self._account(version, dropped, refs, created)
        finally:
            if collecting:
                gc.enable()
        self._finish_commit(new_ref, new_root, version)
        return new_root

    def _name_root(
        self,
        new_ref: bytes,
        version: int,
        hashes: list[bytes],
        encodings: list[bytes],
        refs: list[bytes],
        created: list[_Node],
    ) -> tuple[bytes, bytes]:
        """Return (root reference, root hash) of a commit's new root reference.

        A root shorter than 32 bytes (embedded form) is still stored and named by its hash: it is
        appended to the commit's new nodes.
        """
        if new_ref == _BLANK:
            return _BLANK, BLANK_ROOT
        if _is_hash_ref(new_ref):
            return new_ref, new_ref[1:]
        encoded = new_ref
        new_root = _keccak(encoded)
        node = self._decode(encoded)
        hashes.append(new_root)
        encodings.append(encoded)
        refs.append(HASH_REF_PREFIX + new_root)
        created.append((*node[:_BORN], version, *node[_A:]))
        return HASH_REF_PREFIX + new_root, new_root

    def _finish_commit(self, new_ref: bytes, new_root: bytes, version: int) -> None:
        self._root_ref = new_ref
        self._root = new_root
        self._version = version
        self._root_versions.setdefault(new_root, []).append(version)

    def _account(self, version: int, dropped: list[bytes], refs: list[bytes], created_nodes: list[_Node]) -> None:
        """Bring the node cache and the lifetimes up to date with the commit `version` (already stored).

        `dropped` are the hashed references the commit removed, `refs`/`created_nodes` the hashed nodes
        it created. Removals are applied before additions: a node removed and re-created in one commit
        gets a lifetime that ends and one that starts at `version`, which covers the same versions.
        """
        nodes = self._nodes
        extra = self._extra
        created = zip(refs, created_nodes, strict=True)
        if not self._pruning:
            # A plain cache: a node popped while an equal one stays elsewhere is read back from the
            # store (which keeps every node) when needed.
            deque(map(nodes.pop, dropped, repeat(None)), maxlen=0)
            nodes.update(created)
            return
        if self._tracked and not extra:
            # No node occurs twice in the trie: every removal is a node's last occurrence.
            born = map(itemgetter(_BORN), map(nodes.pop, dropped))
            self._deaths.extend(zip(dropped, born, repeat(version)))
            if nodes.keys().isdisjoint(refs) and len(set(refs)) == len(refs):
                nodes.update(created)
                return
            for ref, node in created:
                self._add(ref, node)
            return
        for ref in dropped:
            self._remove(ref, version)
        for ref, node in created:
            self._add(ref, node)

    def _add(self, ref: bytes, node: _Node) -> None:
        if ref not in self._nodes:
            self._nodes[ref] = node
        elif self._tracked:
            self._extra[ref] = self._extra.get(ref, 0) + 1

    def _remove(self, ref: bytes, version: int) -> None:
        if self._tracked:
            count = self._extra.get(ref)
            if count:
                if count == 1:
                    del self._extra[ref]
                else:
                    self._extra[ref] = count - 1
                return
            self._deaths.append((ref, self._nodes.pop(ref)[_BORN], version))
        else:
            node = self._nodes.pop(ref, None)
            self._deaths.append((ref, _UNBORN if node is None else node[_BORN], version))

    def _apply(self, slot: _Slot, depth: int, lo: int, hi: int) -> _Slot:
        """Return the slot standing at `depth` after applying dirty entries `lo:hi` (all below it).

        Returns `slot` itself (the same object) when nothing under it changes.
        """
        if slot.__class__ is tuple:
            node: _Node = slot  # type: ignore[assignment]
            fresh = True
        elif slot == _BLANK:
            return self._build_fresh(depth, lo, hi)
        else:
            node = self._nodes.get(slot) or self._node(slot)  # type: ignore[arg-type,call-overload]
            fresh = False
        tag = node[_TAG]
        if tag == BRANCH:
            return self._apply_branch(slot, node, fresh, depth, lo, hi)
        if tag == LEAF:
            return self._apply_leaf(slot, node, fresh, depth, lo, hi)
        return self._apply_extension(slot, node, fresh, depth, lo, hi)

    def _apply_branch(self, slot: _Slot, node: _Node, fresh: bool, depth: int, lo: int, hi: int) -> _Slot:
        keys = self._keys
        values = self._values
        nodes = self._nodes
        # Children are node[3 + i] of a stored branch, node[3][i] of one being built.
        children, offset = (node[3], 0) if fresh else (node, 3)
        new_children: list[_Slot] | None = None
        changed: list[int] = []
        emptied = False
        i = lo
        while i < hi:
            key = keys[i]
            nibble = key[depth]
            j = i + 1
            while j < hi and keys[j][depth] == nibble:
                j += 1
            index = _NIBBLE[nibble]
            child = children[offset + index]
            leaf = nodes.get(child) if j - i == 1 else None  # type: ignore[call-overload]
            if leaf is not None and leaf[_TAG] == LEAF and key[depth + 1 :] == leaf[_A]:
                # The common case, inlined: one dirty key updating its own leaf.
                value = values[i]
                if value == leaf[_B]:
                    new_child = child
                else:
                    self._dropped.append(child)  # type: ignore[arg-type]
                    new_child = (LEAF, None, _UNBORN, leaf[_A], value) if value else _BLANK
            else:
                new_child = self._apply(child, depth + 1, i, j)
            if new_child is not child:
                if new_children is None:
                    new_children = list(children[offset:])
                new_children[index] = new_child
                changed.append(index)
                if new_child is _BLANK:
                    emptied = True
            i = j
        if new_children is None:
            if not fresh:
                return slot
            return self._normalize_branch(list(children[offset:]))
        if fresh or emptied:
            if not fresh:
                self._dropped.append(slot)  # type: ignore[arg-type]
            return self._normalize_branch(new_children)
        # An unchanged number of children (still two or more): re-encode only the changed slots.
        self._dropped.append(slot)  # type: ignore[arg-type]
        return (BRANCH, None, _UNBORN, new_children, changed)

    def _apply_leaf(self, slot: _Slot, node: _Node, fresh: bool, depth: int, lo: int, hi: int) -> _Slot:
        keys = self._keys
        values = self._values
        path = node[_A]
        full_key = keys[lo][:depth] + path
        if hi - lo == 1 and keys[lo] == full_key:
            value = values[lo]
            if value == node[_B]:
                return slot
            if not fresh:
                self._dropped.append(slot)  # type: ignore[arg-type]
            if not value:
                return _BLANK
            return (LEAF, None, _UNBORN, path, value)
        pairs = [(keys[i], values[i]) for i in range(lo, hi) if values[i]]
        touched = any(keys[i] == full_key for i in range(lo, hi))
        if not pairs and not touched:
            return slot  # only deletes of absent keys
        if not fresh:
            self._dropped.append(slot)  # type: ignore[arg-type]
        if not touched:
            pairs.insert(bisect_left(pairs, (full_key, b"")), (full_key, node[_B]))
        return self._build(depth, pairs, 0, len(pairs))

    def _apply_extension(self, slot: _Slot, node: _Node, fresh: bool, depth: int, lo: int, hi: int) -> _Slot:
        keys = self._keys
        path = node[_A]
        length = len(path)
        first = keys[lo]
        last = keys[hi - 1]
        child = node[_B]
        if first.startswith(path, depth) and last.startswith(path, depth):
            new_child = self._apply(child, depth + length, lo, hi)
            if new_child is child and not fresh:
                return slot
            if not fresh:
                self._dropped.append(slot)  # type: ignore[arg-type]
            if new_child is _BLANK:
                return _BLANK
            return self._prefix(path, new_child)
        # Some keys leave the extension's path: split it at the first diverging nibble, then apply.
        split = min(
            _common_prefix_length(first, first[:depth] + path, depth),
            _common_prefix_length(last, last[:depth] + path, depth),
        )
        if not fresh:
            self._dropped.append(slot)  # type: ignore[arg-type]
        lower: _Slot = child if split + 1 == length else (EXT, None, _UNBORN, path[split + 1 :], child)
        children: list[_Slot] = [_BLANK] * 16
        children[_NIBBLE[path[split]]] = lower
        top: _Node = (BRANCH, None, _UNBORN, children, None)
        if split:
            top = (EXT, None, _UNBORN, path[:split], top)
        return self._apply(top, depth, lo, hi)

    def _prefix(self, path: str, slot: _Slot) -> _Node:
        """Return the node equal to an extension with `path` over `slot`, merging paths as MPT requires."""
        if slot.__class__ is tuple:
            node: _Node = slot  # type: ignore[assignment]
            fresh = True
        else:
            node = self._node(slot)  # type: ignore[arg-type]
            fresh = False
        tag = node[_TAG]
        if tag == BRANCH:
            return (EXT, None, _UNBORN, path, slot)
        if not fresh:
            self._dropped.append(slot)  # type: ignore[arg-type]
        return (tag, None, _UNBORN, path + node[_A], node[_B])

    def _normalize_branch(self, children: list[_Slot]) -> _Slot:
        """Return the slot for a branch with these children: a branch, a collapsed leaf/extension, or empty."""
        occupied = 16 - children.count(_BLANK)
        if occupied >= 2:
            return (BRANCH, None, _UNBORN, children, None)
        if occupied == 0:
            return _BLANK
        index = next(i for i in range(16) if children[i] != _BLANK)
        return self._prefix(_HEX[index], children[index])

    def _build_fresh(self, depth: int, lo: int, hi: int) -> _Slot:
        keys = self._keys
        values = self._values
        if hi - lo == 1:
            return (LEAF, None, _UNBORN, keys[lo][depth:], values[lo]) if values[lo] else _BLANK
        pairs = [(keys[i], values[i]) for i in range(lo, hi) if values[i]]
        return self._build(depth, pairs, 0, len(pairs))

    def _build(self, depth: int, pairs: list[tuple[str, bytes]], lo: int, hi: int) -> _Slot:
        """Return a new subtree at `depth` holding exactly `pairs[lo:hi]` (sorted, non-empty values)."""
        if lo == hi:
            return _BLANK
        if hi - lo == 1:
            key, value = pairs[lo]
            return (LEAF, None, _UNBORN, key[depth:], value)
        first = pairs[lo][0]
        shared = _common_prefix_length(first, pairs[hi - 1][0], depth)
        children: list[_Slot] = [_BLANK] * 16
        at = depth + shared
        i = lo
        while i < hi:
            nibble = pairs[i][0][at]
            j = i + 1
            while j < hi and pairs[j][0][at] == nibble:
                j += 1
            children[_NIBBLE[nibble]] = self._build(at + 1, pairs, i, j)
            i = j
        branch: _Node = (BRANCH, None, _UNBORN, children, None)
        if shared:
            return (EXT, None, _UNBORN, first[depth:at], branch)
        return branch

    def _finalize(self, node: _Node) -> bytes:
        """Encode and hash `node` (built in this commit) and every new node under it; return its ref.

        Each hashed node is queued for the store's `put_many` and for the node cache.
        """
        version = self._version_in_progress
        tag = node[_TAG]
        if tag == LEAF:
            encoded = _encode_leaf(node[_A], node[_B])
            done: _Node = (LEAF, encoded, version, node[_A], node[_B])
        elif tag == BRANCH:
            children = node[3]
            pending = node[4]
            for index in range(16) if pending is None else pending:
                child = children[index]
                if child.__class__ is tuple:
                    children[index] = self._finalize(child)
            payload = b"".join(children) + _BLANK
            length = len(payload)
            if length > 255:  # the usual case: a branch with hashed children
                encoded = b"\xf9" + length.to_bytes(2, "big") + payload
            else:
                encoded = rlp_list(payload)
            done = (BRANCH, encoded, version, *children)
        else:
            child = node[_B]
            if child.__class__ is tuple:
                child = self._finalize(child)
            encoded = encode_extension(node[_A], child)
            done = (EXT, encoded, version, node[_A], child)
        if len(encoded) >= 32:
            node_hash = _keccak(encoded)
            ref = HASH_REF_PREFIX + node_hash
            self._new_hashes.append(node_hash)
            self._new_encodings.append(encoded)
            self._created_refs.append(ref)
            self._created_nodes.append(done)
            return ref
        return encoded

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

    @staticmethod
    def _check_ref(raw: bytes) -> bytes:
        if raw == _BLANK:
            return _BLANK
        if _is_hash_ref(raw) or (raw[0] >= 0xC0 and len(raw) < 32):
            return raw
        raise CorruptNodeError("child reference is neither empty, a hash nor a short embedded node")

    def _decode(self, encoded: bytes) -> _Node:
        """Decode a stored or embedded node into its cached form (birth unknown: _UNBORN)."""
        items = self._split(encoded)
        if len(items) == 17:
            if items[16] != _BLANK:
                raise CorruptNodeError("branch with a value: keys are not all 32 bytes")
            return (BRANCH, encoded, _UNBORN, *(self._check_ref(raw) for raw in items[:16]))
        path, is_leaf = self._path(items[0])
        if is_leaf:
            try:
                value = decode_string(items[1])
            except ProofError as exc:
                raise CorruptNodeError(str(exc)) from exc
            return (LEAF, encoded, _UNBORN, path, value)
        child = self._check_ref(items[1])
        if child == _BLANK or not path:
            raise CorruptNodeError("extension without a path or a child")
        return (EXT, encoded, _UNBORN, path, child)

    # ------------------------------------------------------------------------------------------ retention

    def retain(self, root: bytes) -> None:
        """Keep `root` provable until a matching `release`: `prune` never deletes a node it reaches.

        Retains are counted. Only roots this engine opened at or committed since the last `prune`
        (or retained before it) can be retained: retain a root before the next prune.
        """
        if root not in self._root_versions:
            raise UnknownRootError(f"root 0x{root.hex()} was never held by this engine")
        round_ = self._round
        if (round_ is not None and not round_.finishing and root not in self._retained
                and self._root_versions[root][0] <= round_.start_version):
            # The open round classified lifetimes without this root: classify its candidates again.
            round_.pending = round_.candidates + round_.pending[round_.position:]
            round_.candidates = []
            round_.position = 0
        # A round that is deleting kept, when it began to, only roots whose nodes it never
        # deletes (see `_forget_cut_roots`): retaining one of them needs no second look.
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
        nodes: dict[bytes, _Node] = {}
        extra: dict[bytes, int] = {}
        pending = [self._root_ref] if self._root_ref != _BLANK else []
        while pending:
            ref = pending.pop()
            node = self._node(ref)
            if ref in nodes:
                extra[ref] = extra.get(ref, 0) + 1  # an equal subtree elsewhere: count its nodes again
            else:
                nodes[ref] = node
            if node[_TAG] == BRANCH:
                pending.extend(child for child in node[3:] if _is_hash_ref(child))
            elif node[_TAG] == EXT and _is_hash_ref(node[_B]):
                pending.append(node[_B])
        # Embedded nodes hold only embedded nodes (a hash reference alone is 33 bytes), so the walk
        # above met every hashed node of the trie.
        self._nodes = nodes
        self._extra = extra
        self._tracked = True

    def prune(self, max_records: int | None = None) -> int:
        """Delete from the store every node that no retained root and not the current root reaches.

        Guarantees: every retained root and the current root stay fully provable; a node shared by a
        pruned root and a retained one is kept. Without `max_records`, when it returns the store
        holds exactly the nodes the retained roots and the current root reach. With it, the work is
        done in steps: a prune round classifies at most `max_records` lifetimes per call (commits,
        retains and releases may come between calls) and deletes when its last step runs; see
        `pruning` for whether a round is still open. Returns the number of nodes deleted.
        """
        store = self._store
        if not self._pruning:
            raise PruningUnsupportedError("the engine was opened without pruning=True")
        if not isinstance(store, PrunableStore):
            raise PruningUnsupportedError("the node store cannot delete nodes")
        self.track()
        deleted = 0
        while True:
            if self._round is None:
                self._round = self._begin_prune_round()
            done, removed = self._advance_prune_round(self._round, store, max_records)
            deleted += removed
            if not done:
                return deleted  # the round goes on at the next call
            self._round = None
            if max_records is not None or not (self._classifiable_deaths() or self._released_keepers()):
                return deleted

    @property
    def pruning(self) -> bool:
        """True while a stepwise prune round is open (`prune(max_records=...)` has more to do)."""
        return self._round is not None

    def _retained_versions(self) -> list[int]:
        return sorted(
            {version for root in self._retained for version in self._root_versions[root]} | {self._version}
        )

    def _held_from(self) -> int:
        """The oldest version of the unbroken run of retained versions that ends at the current
        one (the current version itself when the one before it is not retained). A lifetime that
        ends after it contains a version of the run: ``max(born, run start)``."""
        retained = set(self._retained_versions())
        version = self._version
        while version - 1 in retained:
            version -= 1
        return version

    def _classifiable_deaths(self) -> bool:
        """Whether a round would find lifetimes recorded since the last one to classify now."""
        return bool(self._deaths) and self._deaths[0][2] <= self._held_from()

    def _released_keepers(self) -> list[int]:
        retained = set(self._retained_versions())
        return [version for version in self._kept if version not in retained]

    def _begin_prune_round(self) -> _PruneRound:
        """Collect what the round must classify: the lifetimes recorded since the last round and
        those whose keeper (the retained version that kept them) is no longer retained. Lifetimes
        kept by a version still retained are not looked at again, so a round costs what changed
        since the last one, not every lifetime the retained roots hold. The released keepers'
        lifetimes still count in ``_kept_refs`` until the round's first steps uncount them."""
        pending = self._deaths
        # Lifetimes that end after the start of the unbroken run of retained versions that reaches
        # the current one are kept by that run for sure: they wait for a round after it shrinks, so
        # that each is classified once instead of filed under a keeper now and looked at again
        # when that keeper goes (a sequencer retains the root of every block not yet batched).
        split = bisect_right(pending, self._held_from(), key=_died)
        self._deaths = pending[split:]
        del pending[split:]
        unkeep: list[tuple[bytes, int, int]] = []
        for version in self._released_keepers():
            bucket = self._kept.pop(version)
            unkeep.extend(bucket)
            pending.extend(bucket)
        return _PruneRound(self._version, pending, unkeep)

    def _advance_prune_round(self, round_: _PruneRound, store: PrunableStore,
                             budget: int | None) -> tuple[bool, int]:
        """Do at most ``budget`` records' worth of the round (all of it with None): uncount the
        released keepers' lifetimes, classify, then delete. Returns whether the round is over and
        how many nodes this call deleted."""
        left = budget
        unkeep = round_.unkeep
        if round_.unkept < len(unkeep):
            stop = len(unkeep) if left is None else min(len(unkeep), round_.unkept + left)
            kept_refs = self._kept_refs
            for record in unkeep[round_.unkept:stop]:
                ref = record[0]
                count = kept_refs[ref] - 1
                if count:
                    kept_refs[ref] = count
                else:
                    del kept_refs[ref]
            if left is not None:
                left -= stop - round_.unkept
            round_.unkept = stop
            if stop < len(unkeep):
                return False, 0
            round_.unkeep = []
            round_.unkept = 0
        if not round_.finishing:
            if left == 0 and round_.position < len(round_.pending):
                return False, 0
            used = self._step_prune_round(round_, left)
            if left is not None:
                left -= used
            if round_.position < len(round_.pending):
                return False, 0
            round_.finishing = True
            round_.pending = []
            round_.position = 0
            self._forget_cut_roots(round_)
        if left == 0 and round_.finished < len(round_.candidates):
            return False, 0
        deleted = self._finish_prune_slice(round_, store, left)
        return round_.finished == len(round_.candidates), deleted

    def _step_prune_round(self, round_: _PruneRound, max_records: int | None) -> int:
        """Classify the round's next lifetimes (all, or `max_records`); returns how many.
        A kept lifetime is filed under the oldest retained version inside it."""
        retained_versions = self._retained_versions()
        kept = self._kept
        kept_refs = self._kept_refs
        pending = round_.pending
        start = round_.position
        stop = len(pending) if max_records is None else min(len(pending), start + max_records)
        candidates = round_.candidates
        for record in pending[start:stop]:
            ref, born, died = record
            position = bisect_left(retained_versions, born)
            if position < len(retained_versions) and retained_versions[position] < died:
                keeper = retained_versions[position]
                holder = kept.get(keeper)
                if holder is None:
                    kept[keeper] = [record]
                else:
                    holder.append(record)
                kept_refs[ref] += 1
            else:
                candidates.append(record)
        round_.position = stop
        return stop - start

    def _forget_cut_roots(self, round_: _PruneRound) -> None:
        """Before the round deletes anything: roots neither retained nor current may lose nodes,
        so they can no longer be retained. Roots committed since the round began lose none (the
        nodes they replaced are recorded since then), and stay."""
        self._root_versions = {
            root: versions
            for root, versions in self._root_versions.items()
            if root in self._retained or root == self._root or versions[-1] > round_.start_version
        }

    def _finish_prune_slice(self, round_: _PruneRound, store: PrunableStore, max_records: int | None) -> int:
        """Delete the next candidates (all, or `max_records`) that nothing keeps: no kept lifetime,
        not in the current trie, and no lifetime recorded since the round began (a node re-created
        and replaced meanwhile may belong to a retained root; the next round decides). Commits may
        come between slices: each slice looks at the lifetimes recorded up to now."""
        deaths = self._deaths
        if round_.recent_seen < len(deaths):
            round_.recent.update(record[0] for record in deaths[round_.recent_seen:])
            round_.recent_seen = len(deaths)
        candidates = round_.candidates
        start = round_.finished
        stop = len(candidates) if max_records is None else min(len(candidates), start + max_records)
        nodes = self._nodes
        kept_refs = self._kept_refs
        recent = round_.recent
        doomed = {ref for ref, _born, _died in candidates[start:stop]
                  if ref not in kept_refs and ref not in nodes and ref not in recent}
        round_.finished = stop
        if stop == len(candidates):
            round_.candidates = []
            round_.finished = 0
            round_.recent = set()
        else:
            recent.update(doomed)  # gone: a later slice must not count it again
        store.delete_many([ref[1:] for ref in doomed])
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
