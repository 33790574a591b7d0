"""Stand-alone verification of EIP-1186 Merkle-Patricia proofs.

Depends on nothing of the node: only the standard library and a keccak256 (safe-pysha3 when present,
otherwise eth-hash). `verify_proof(root, key, proof)` returns the value the proof establishes for `key`
under `root` (b"" proves absence) or raises a named `ProofError` subclass.

Accepted proof shape: the RLP encodings of the nodes met on the walk from the root towards the key,
root first, one entry per node referenced by hash (EIP-1186, as geth and `CommitEngine.prove` produce
it). A node embedded in its parent (encoding shorter than 32 bytes) needs no entry; a redundant entry
byte-identical to the embedded node is also accepted (py-trie's `get_proof` lists embedded nodes).
"""

from __future__ import annotations

from collections.abc import Sequence

from proofs.encoding import (  # public here too: the light client hashes balance keys with it
    decode_hex_prefix,
    keccak256,
)

EMPTY_TRIE_ROOT: bytes = keccak256(b"\x80")


class ProofError(ValueError):
    """A proof does not establish any value for the key under the root."""


class MalformedProofError(ProofError):
    """An entry is not canonical RLP, not a trie node shape, or the inputs have the wrong type."""


class RootMismatchError(ProofError):
    """The first proof node does not hash to the claimed root."""

    def __init__(self, got: bytes, expected: bytes) -> None:
        super().__init__(f"proof root mismatch: got 0x{got.hex()}, expected 0x{expected.hex()}")
        self.got = got
        self.expected = expected


class TruncatedProofError(ProofError):
    """The walk needs a node the proof does not contain."""


class ExtraNodesError(ProofError):
    """The proof carries nodes after the walk has reached its answer."""


class TamperedNodeError(ProofError):
    """A proof node does not hash to the reference its parent holds."""

    def __init__(self, depth: int, got: bytes, expected: bytes) -> None:
        super().__init__(
            f"proof node {depth} hashes to 0x{got.hex()}, its parent references 0x{expected.hex()}"
        )
        self.depth = depth
        self.got = got
        self.expected = expected


class PathMismatchError(ProofError):
    """The proof follows a different path than the key's (a proof for another key)."""


class InlineNodeError(ProofError):
    """Embedding rules broken: a hashed node shorter than 32 bytes, an embedded node of 32 bytes or
    more, or a short entry where the path holds a different embedded node."""


# ---------------------------------------------------------------------------- canonical RLP reading


def _read_header(data: bytes, pos: int) -> tuple[bool, int, int]:
    """Return (is_list, payload_start, payload_end) of the item at `pos`; enforce canonical form."""
    end_of_data = len(data)
    if pos >= end_of_data:
        raise MalformedProofError("RLP item runs past the end of its container")
    b0 = data[pos]
    if b0 < 0x80:
        return False, pos, pos + 1
    if b0 < 0xB8:
        length = b0 - 0x80
        start = pos + 1
        if length == 1 and start < end_of_data and data[start] < 0x80:
            raise MalformedProofError("single byte below 0x80 encoded with a length prefix")
        is_list = False
    elif b0 < 0xC0:
        start, length = _read_long_length(data, pos, b0 - 0xB7)
        is_list = False
    elif b0 < 0xF8:
        length = b0 - 0xC0
        start = pos + 1
        is_list = True
    else:
        start, length = _read_long_length(data, pos, b0 - 0xF7)
        is_list = True
    end = start + length
    if end > end_of_data:
        raise MalformedProofError("RLP payload runs past the end of its container")
    return is_list, start, end


def read_rlp_header(data: bytes, pos: int) -> tuple[bool, int, int]:
    """Return (is_list, payload_start, payload_end) of the canonical RLP item at `pos` in `data`.

    Raises MalformedProofError for non-canonical or truncated encodings.
    """
    return _read_header(data, pos)


def _read_long_length(data: bytes, pos: int, length_of_length: int) -> tuple[int, int]:
    start = pos + 1 + length_of_length
    if start > len(data):
        raise MalformedProofError("RLP length runs past the end of its container")
    length_bytes = data[pos + 1 : start]
    if length_bytes[0] == 0:
        raise MalformedProofError("RLP length with a leading zero")
    length = int.from_bytes(length_bytes, "big")
    if length < 56:
        raise MalformedProofError("RLP long form used for a short payload")
    return start, length


def split_node(encoded: bytes) -> list[bytes]:
    """Return the raw RLP encodings of the items of the node `encoded` (a canonical RLP list)."""
    is_list, start, end = _read_header(encoded, 0)
    if not is_list or end != len(encoded):
        raise MalformedProofError("a trie node must be exactly one RLP list")
    items = []
    pos = start
    while pos < end:
        _, item_start, item_end = _read_header(encoded, pos)
        if item_end > end:
            raise MalformedProofError("RLP item runs past the end of its list")
        items.append(encoded[pos:item_end])
        pos = item_end
    return items


def decode_string(raw: bytes) -> bytes:
    """Return the payload of the raw RLP string item `raw`; raise MalformedProofError for a list."""
    is_list, start, end = _read_header(raw, 0)
    if is_list or end != len(raw):
        raise MalformedProofError("expected an RLP string")
    return raw[start:end]


def decode_path(raw: bytes) -> tuple[str, bool]:
    """Return `(nibbles as hex string, is_leaf)` of the raw hex-prefix path item `raw`."""
    try:
        return decode_hex_prefix(decode_string(raw))
    except ValueError as err:
        if isinstance(err, ProofError):
            raise
        raise MalformedProofError(str(err)) from err


# ---------------------------------------------------------------------------- verification

_NIBBLE = {c: i for i, c in enumerate("0123456789abcdef")}


def _child_ref(raw: bytes) -> bytes | None:
    """Classify a raw child reference: None if empty, else the reference itself (hash or node)."""
    if raw == b"\x80":
        return None
    if len(raw) == 33 and raw[0] == 0xA0:
        return raw
    if raw[0] >= 0xC0:
        if len(raw) >= 32:
            raise InlineNodeError("embedded node of 32 bytes or more (must be referenced by hash)")
        return raw
    raise MalformedProofError("child reference is neither empty, a 32-byte hash nor an embedded node")


def _hash_refs(items: list[bytes]) -> set[bytes]:
    return {raw[1:] for raw in items if len(raw) == 33 and raw[0] == 0xA0}


def verify_proof(root: bytes, key: bytes, proof: Sequence[bytes]) -> bytes:
    """Return the value `proof` establishes for `key` under the trie root `root`; b"" means absent.

    Guarantees: the returned value is the one the trie with root `root` holds for `key`, given that
    keccak256 is collision resistant; any proof that does not establish a value raises a ProofError
    subclass (and never returns). `key` is the trie key itself (already hashed for a secure trie).
    """
    if not isinstance(root, bytes | bytearray) or len(root) != 32:
        raise MalformedProofError("root must be 32 bytes")
    if not isinstance(key, bytes | bytearray):
        raise MalformedProofError("key must be bytes")
    for entry in proof:
        if not isinstance(entry, bytes | bytearray) or not entry:
            raise MalformedProofError("every proof entry must be non-empty bytes")
    root = bytes(root)
    nibbles = bytes(key).hex()
    count = len(proof)
    if count == 0 or (count == 1 and proof[0] == b"\x80"):
        if root == EMPTY_TRIE_ROOT:
            return b""
        if count == 0:
            raise TruncatedProofError("empty proof for a non-empty trie")
    index = 0
    depth = 0
    expected: bytes = b"\xa0" + root  # reference to the next node: 33-byte hash ref or embedded node
    parent_items: list[bytes] = []
    while True:
        if len(expected) == 33 and expected[0] == 0xA0:
            if index >= count:
                raise TruncatedProofError(f"proof ends before node {index} of the path")
            encoded = bytes(proof[index])
            digest = keccak256(encoded)
            if digest != expected[1:]:
                if index == 0:
                    raise RootMismatchError(digest, root)
                if digest in _hash_refs(parent_items):
                    raise PathMismatchError(f"proof node {index} lies on another key's path")
                raise TamperedNodeError(index, digest, expected[1:])
            if index > 0 and len(encoded) < 32:
                raise InlineNodeError(f"proof node {index} is shorter than 32 bytes but referenced by hash")
            index += 1
        else:
            encoded = expected
            if index < count:
                entry = bytes(proof[index])
                if entry == encoded:
                    index += 1  # a redundant copy of the embedded node
                elif len(entry) < 32:
                    raise InlineNodeError(f"proof entry {index} differs from the embedded node on the path")
        items = split_node(encoded)
        value: bytes | None = None
        if len(items) == 17:
            if depth == len(nibbles):
                value = decode_string(items[16])
            else:
                ref = _child_ref(items[_NIBBLE[nibbles[depth]]])
                depth += 1
                if ref is None:
                    value = b""
                else:
                    expected = ref
        elif len(items) == 2:
            path, is_leaf = decode_path(items[0])
            if is_leaf:
                value = decode_string(items[1]) if nibbles[depth:] == path else b""
            else:
                if not path:
                    raise MalformedProofError("extension node with an empty path")
                if nibbles.startswith(path, depth):
                    ref = _child_ref(items[1])
                    if ref is None:
                        raise MalformedProofError("extension node without a child")
                    depth += len(path)
                    expected = ref
                else:
                    value = b""
        else:
            raise MalformedProofError(f"a trie node has 2 or 17 items, not {len(items)}")
        if value is not None:
            if index != count:
                if keccak256(bytes(proof[index])) in _hash_refs(items):
                    raise PathMismatchError("the proof continues along another key's path")
                raise ExtraNodesError(f"{count - index} proof node(s) after the answer")
            return value
        parent_items = items
