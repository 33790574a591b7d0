"""The binary Merkle tree behind a block's transactions root and receipts root.

Protocol (docs/tradezone.md, "Transactions and receipts roots"):

    leaf_i = keccak256(0x00 ‖ keccak256(item_i))
    node   = keccak256(0x01 ‖ left ‖ right)

Levels are built pairwise from the leaves, left to right; an odd node at the end of a level is
carried up to the next level unchanged. The root is the single node of the last level (the leaf
itself for one item); the root of no items is ``EMPTY_MERKLE_ROOT = keccak256(b"")``. The 0x00 /
0x01 prefixes keep leaves and inner nodes apart, so no inner node can pass for a leaf.

The root does not commit to the item count: a proof is checked against the count of the block
it comes from (the block body lists its transactions).

Hashing an item is the first step of its leaf, and for a transaction that hash is the
transaction hash (keccak256 of the canonical encoding): :func:`merkle_root_of_hashes` takes the
item hashes directly, so callers that already hold them hash each item once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from node.tradezone.errors import InvalidMerkleProof
from node.tradezone.hashing import BACKEND, keccak256

HASH_LENGTH = 32
EMPTY_MERKLE_ROOT: bytes = keccak256(b"")
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"


def _load_native() -> Callable[[list[bytes], bool], bytes] | None:
    """The whole tree in C (``proofs._commit.merkle_root``: eight Keccaks at a time where the CPU
    has AVX-512F, without the GIL), with the same switch as ``hashing``; None without it."""
    if BACKEND != "native":
        return None
    try:
        from proofs._commit import merkle_root as native
    except ImportError:  # a build of the extension from before it had the tree
        return None
    return native


_native_root = _load_native()


def merkle_leaf(item_hash: bytes) -> bytes:
    """The leaf of an item whose keccak256 is ``item_hash``: ``keccak256(0x00 ‖ item_hash)``."""
    return keccak256(LEAF_PREFIX + item_hash)


def merkle_node(left: bytes, right: bytes) -> bytes:
    """An inner node: ``keccak256(0x01 ‖ left ‖ right)``."""
    return keccak256(NODE_PREFIX + left + right)


def _root_of_leaves(level: list[bytes]) -> bytes:
    hash_ = keccak256
    prefix = NODE_PREFIX
    while len(level) > 1:
        pairs = iter(level)
        upper = [hash_(prefix + left + right) for left, right in zip(pairs, pairs, strict=False)]
        if len(level) & 1:
            upper.append(level[-1])
        level = upper
    return level[0]


def merkle_root_of_hashes(item_hashes: Sequence[bytes]) -> bytes:
    """The Merkle root of the items whose keccak256 hashes are ``item_hashes``, in order.

    Guarantees: equals :func:`merkle_root` of the items themselves; ``EMPTY_MERKLE_ROOT`` for
    no items. Costs one keccak per item for its leaf and one per inner node (fewer than one per
    item)."""
    if not item_hashes:
        return EMPTY_MERKLE_ROOT
    if _native_root is not None and item_hashes.__class__ is list:
        return _native_root(item_hashes, True)  # type: ignore[arg-type]
    hash_ = keccak256
    prefix = LEAF_PREFIX
    return _root_of_leaves([hash_(prefix + item_hash) for item_hash in item_hashes])


def merkle_root(items: Sequence[bytes]) -> bytes:
    """The Merkle root of ``items`` (byte strings, in order); ``EMPTY_MERKLE_ROOT`` if empty."""
    if not items:
        return EMPTY_MERKLE_ROOT
    if _native_root is not None and items.__class__ is list:
        return _native_root(items, False)  # type: ignore[arg-type]
    hash_ = keccak256
    prefix = LEAF_PREFIX
    return _root_of_leaves([hash_(prefix + hash_(item)) for item in items])


def merkle_proof(items: Sequence[bytes], index: int) -> list[bytes]:
    """The inclusion proof of ``items[index]``: the sibling of its node at every level where it
    has one, from the leaf level up (a level where the node is carried up adds nothing).

    Raises ``IndexError`` unless ``0 <= index < len(items)``. Guarantees
    ``verify_merkle_proof(merkle_root(items), items[index], index, len(items), proof)`` passes.
    """
    if not 0 <= index < len(items):
        raise IndexError(f"index {index} is outside 0..{len(items) - 1}")
    level = [merkle_leaf(keccak256(item)) for item in items]
    proof: list[bytes] = []
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        pairs = iter(level)
        upper = [merkle_node(left, right) for left, right in zip(pairs, pairs, strict=False)]
        if len(level) & 1:
            upper.append(level[-1])
        level = upper
        position >>= 1
    return proof


def verify_merkle_proof(root: bytes, item: bytes, index: int, count: int, proof: Sequence[bytes]) -> None:
    """Check that ``item`` is item ``index`` of the ``count`` items under ``root``.

    Returns nothing on success. Raises ``InvalidMerkleProof`` (with the reason) when the index
    is outside ``0..count-1``, a sibling is not 32 bytes, the proof has more or fewer siblings
    than the tree of ``count`` items has on that path, or the recomputed root differs.
    """
    if type(count) is not int or type(index) is not int or not 0 <= index < count:
        raise InvalidMerkleProof(f"index {index!r} is not below the item count {count!r}")
    node = merkle_leaf(keccak256(item))
    position = index
    width = count
    used = 0
    while width > 1:
        if position ^ 1 < width:
            if used == len(proof):
                raise InvalidMerkleProof(f"proof too short: {len(proof)} siblings")
            sibling = proof[used]
            if not isinstance(sibling, bytes) or len(sibling) != HASH_LENGTH:
                raise InvalidMerkleProof(f"sibling {used} is not 32 bytes")
            used += 1
            node = merkle_node(sibling, node) if position & 1 else merkle_node(node, sibling)
        position >>= 1
        width = (width + 1) >> 1
    if used != len(proof):
        raise InvalidMerkleProof(f"proof too long: {len(proof)} siblings, the path has {used}")
    if node != root:
        raise InvalidMerkleProof(f"recomputed root 0x{node.hex()} is not 0x{root.hex()}")
