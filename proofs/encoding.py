"""Hand-written RLP and hex-prefix encoding for the three trie node shapes, and keccak256.

Paths are kept as lowercase hex strings, one character per nibble (`key.hex()`), because slicing and
comparing `str` is the cheapest nibble arithmetic Python offers. Every function here produces exactly
the bytes Ethereum's RLP and hex-prefix (compact) encodings define.
"""

from __future__ import annotations

from collections.abc import Callable

BLANK_NODE_REF = b"\x80"  # RLP of the empty string: an empty branch slot or branch value
HASH_REF_PREFIX = b"\xa0"  # RLP string header of a 32-byte node hash


def _load_keccak() -> Callable[[bytes], bytes]:
    try:
        import sha3  # safe-pysha3: the fastest keccak available to Python here

        keccak_256 = sha3.keccak_256

        def keccak_pysha3(data: bytes) -> bytes:
            return keccak_256(data).digest()

        return keccak_pysha3
    except ImportError:  # pragma: no cover - exercised only without safe-pysha3
        from eth_hash.auto import keccak as keccak_auto

        return keccak_auto


keccak256: Callable[[bytes], bytes] = _load_keccak()

BLANK_ROOT: bytes = keccak256(BLANK_NODE_REF)  # root of the empty trie


def encode_length_prefix(length: int, short_base: int) -> bytes:
    """Return the RLP header for a payload of `length` bytes (`short_base` is 0x80 strings, 0xc0 lists)."""
    if length < 56:
        return bytes((short_base + length,))
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((short_base + 55 + len(length_bytes),)) + length_bytes


def rlp_string(data: bytes) -> bytes:
    """Return the RLP encoding of the byte string `data`."""
    n = len(data)
    if n == 1 and data[0] < 0x80:
        return data
    if n < 56:
        return bytes((0x80 + n,)) + data
    return encode_length_prefix(n, 0x80) + data


def rlp_list(payload: bytes) -> bytes:
    """Return the RLP encoding of a list whose concatenated item encodings are `payload`."""
    n = len(payload)
    if n < 56:
        return bytes((0xC0 + n,)) + payload
    return encode_length_prefix(n, 0xC0) + payload


def hex_prefix(path: str, is_leaf: bool) -> bytes:
    """Return the compact (hex-prefix) encoding of the nibble path `path` with the leaf flag."""
    if len(path) & 1:
        return bytes.fromhex(("3" if is_leaf else "1") + path)
    return bytes.fromhex(("20" if is_leaf else "00") + path)


def decode_hex_prefix(encoded: bytes) -> tuple[str, bool]:
    """Invert `hex_prefix`: return `(path, is_leaf)`; raise ValueError for an invalid flag nibble."""
    if not encoded:
        raise ValueError("empty hex-prefix path")
    flag = encoded[0] >> 4
    if flag > 3:
        raise ValueError(f"invalid hex-prefix flag {flag}")
    digits = encoded.hex()
    if flag & 1:
        return digits[1:], bool(flag & 2)
    if digits[1] != "0":
        raise ValueError("non-zero padding nibble in an even hex-prefix path")
    return digits[2:], bool(flag & 2)


def encode_leaf(path: str, value: bytes) -> bytes:
    """Return the RLP of the leaf node `[hex_prefix(path, leaf), value]`."""
    return rlp_list(rlp_string(hex_prefix(path, True)) + rlp_string(value))


def encode_extension(path: str, child_ref: bytes) -> bytes:
    """Return the RLP of the extension `[hex_prefix(path), child]` (`child_ref` already RLP: hash or inline)."""
    return rlp_list(rlp_string(hex_prefix(path, False)) + child_ref)
