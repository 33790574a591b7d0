"""TradeZone blocks: the header, the block, their canonical encodings, the header hash, the
transactions root, and the header-follows-parent rules.

    header = RLP([number, parent_hash, timestamp_ms, l1_origin, l1_cursor,
                  transactions_root, receipts_root, state_root])
    block  = RLP([header, [encode_transaction(tx) for tx in transactions]])
    header hash = keccak256(header)

``transactions_root`` and ``receipts_root`` are roots of the binary Merkle tree of
``node.tradezone.merkle`` over the items' canonical encodings (a transaction's leaf starts from
its transaction hash); an empty list has the root ``EMPTY_MERKLE_ROOT = keccak256(b"")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
from eth_hash.auto import keccak

from node.tradezone.errors import (
    BlockDecodeError,
    BlockNumberMismatch,
    DecodeError,
    L1CursorMismatch,
    L1MessageOutOfOrder,
    L1OriginDecreasing,
    ParentHashMismatch,
    TimestampNotIncreasing,
    ValueOutOfRange,
)
from node.tradezone.merkle import merkle_root_of_hashes
from node.tradezone.transactions import (
    L1Message,
    SignedTx,
    Transaction,
    decode_transaction,
    encode_transaction,
    rlp_decode,
    rlp_encode_bytes,
    rlp_encode_int,
    rlp_encode_list,
    tx_hash,
)

HASH_LENGTH = 32
ZERO_HASH = bytes(HASH_LENGTH)
BLANK_ROOT = keccak(b"\x80")  # root of the empty state trie (not of an empty list: EMPTY_MERKLE_ROOT)
MAX_BLOCK_TRANSACTIONS = 50_000
MAX_BLOCK_BYTES = 16 * 1024 * 1024
_U64_LIMIT = 1 << 64

_INT_FIELDS = ("number", "timestamp_ms", "l1_origin", "l1_cursor")
_HASH_FIELDS = ("parent_hash", "transactions_root", "receipts_root", "state_root")


class Header(msgspec.Struct, frozen=True):
    """A TradeZone block header. ``l1_origin`` is the EVM block the block's L1 view is taken
    at; ``l1_cursor`` the index of the next L1 message after this block."""

    number: int
    parent_hash: bytes
    timestamp_ms: int
    l1_origin: int
    l1_cursor: int
    transactions_root: bytes
    receipts_root: bytes
    state_root: bytes


class Block(msgspec.Struct, frozen=True):
    """A header and the transactions it commits to, in the order they were applied."""

    header: Header
    transactions: tuple[Transaction, ...]


# --------------------------------------------------------------------------- encodings


def _header_items(header: Header) -> list[bytes]:
    for name in _INT_FIELDS:
        value = getattr(header, name)
        if type(value) is not int or not 0 <= value < _U64_LIMIT:
            raise ValueOutOfRange(name, f"{value!r} is not a uint64")
    for name in _HASH_FIELDS:
        value = getattr(header, name)
        if not isinstance(value, bytes) or len(value) != HASH_LENGTH:
            raise ValueOutOfRange(name, "expected 32 bytes")
    return [
        rlp_encode_int(header.number),
        rlp_encode_bytes(header.parent_hash),
        rlp_encode_int(header.timestamp_ms),
        rlp_encode_int(header.l1_origin),
        rlp_encode_int(header.l1_cursor),
        rlp_encode_bytes(header.transactions_root),
        rlp_encode_bytes(header.receipts_root),
        rlp_encode_bytes(header.state_root),
    ]


def encode_header(header: Header) -> bytes:
    """The canonical encoding of a header; ``ValueOutOfRange`` if a field is out of range."""
    return rlp_encode_list(_header_items(header))


def header_hash(header: Header) -> bytes:
    """The block hash: keccak256 of the header's canonical encoding."""
    return keccak(encode_header(header))


def _header_from_items(items: object) -> Header:
    if not isinstance(items, list) or len(items) != 8:
        raise BlockDecodeError("a header is a list of 8 fields")
    values: list[int | bytes] = []
    for position, item in enumerate(items):
        if not isinstance(item, bytes):
            raise BlockDecodeError(f"header field {position} is a list")
        if position in (0, 2, 3, 4):
            if item[:1] == b"\x00" or len(item) > 8:
                raise BlockDecodeError(f"header field {position} is not a canonical uint64")
            values.append(int.from_bytes(item, "big"))
        else:
            if len(item) != HASH_LENGTH:
                raise BlockDecodeError(f"header field {position} is not 32 bytes")
            values.append(item)
    return Header(*values)  # type: ignore[arg-type]


def decode_header(data: bytes) -> Header:
    """Decode a header's canonical encoding; ``BlockDecodeError`` for anything else. Guarantees
    ``encode_header`` of the result returns ``data``."""
    try:
        items = rlp_decode(bytes(data))
    except DecodeError as err:
        raise BlockDecodeError(f"header: {err}") from err
    return _header_from_items(items)


def encode_block(block: Block) -> bytes:
    """The canonical encoding of a block (header and each transaction's canonical encoding)."""
    if len(block.transactions) > MAX_BLOCK_TRANSACTIONS:
        raise ValueOutOfRange("transactions", f"more than {MAX_BLOCK_TRANSACTIONS} transactions")
    encoded = rlp_encode_list(
        [
            rlp_encode_list(_header_items(block.header)),
            rlp_encode_list([rlp_encode_bytes(encode_transaction(tx)) for tx in block.transactions]),
        ]
    )
    if len(encoded) > MAX_BLOCK_BYTES:
        raise ValueOutOfRange("block", f"{len(encoded)} bytes exceeds {MAX_BLOCK_BYTES}")
    return encoded


def decode_block(data: bytes) -> Block:
    """Decode a block's canonical encoding. Raises ``BlockDecodeError`` (the transaction's
    ``DecodeError`` as its cause when one transaction is the problem). Guarantees
    ``encode_block`` of the result returns ``data``."""
    if len(data) > MAX_BLOCK_BYTES:
        raise BlockDecodeError(f"{len(data)} bytes exceeds {MAX_BLOCK_BYTES}")
    try:
        items = rlp_decode(bytes(data))
    except DecodeError as err:
        raise BlockDecodeError(f"block: {err}") from err
    if not isinstance(items, list) or len(items) != 2 or not isinstance(items[1], list):
        raise BlockDecodeError("a block is [header, [transactions]]")
    header = _header_from_items(items[0])
    raw_txs = items[1]
    if len(raw_txs) > MAX_BLOCK_TRANSACTIONS:
        raise BlockDecodeError(f"more than {MAX_BLOCK_TRANSACTIONS} transactions")
    transactions: list[Transaction] = []
    for position, raw in enumerate(raw_txs):
        if not isinstance(raw, bytes):
            raise BlockDecodeError(f"transaction {position} is a list, not an encoded transaction")
        try:
            transactions.append(decode_transaction(raw))
        except DecodeError as err:
            raise BlockDecodeError(f"transaction {position}: {err}") from err
    return Block(header, tuple(transactions))


# --------------------------------------------------------------------------- roots


def transactions_root(transactions: Sequence[Transaction]) -> bytes:
    """The transactions root: the Merkle root over the transactions' canonical encodings, in
    block order (``EMPTY_MERKLE_ROOT`` for none). Each leaf starts from the transaction hash,
    which a user transaction caches (:func:`tx_hash`), so it is hashed once per object."""
    hashes = [
        tx._hash if tx.__class__ is SignedTx and tx._hash is not None else tx_hash(tx)  # tx_hash's cache, read inline
        for tx in transactions
    ]
    return merkle_root_of_hashes(hashes)


# --------------------------------------------------------------------------- header rules


def validate_header(header: Header, parent: Header, transactions: Sequence[Transaction]) -> None:
    """Check that ``header`` follows ``parent`` (a pure function of the two and the block's
    transactions). Raises the named ``InvalidHeader`` subclass, each carrying got/expected:

    - the number is the parent's plus one;
    - the parent hash is the parent header's hash;
    - the timestamp is strictly after the parent's;
    - the L1 origin does not go back;
    - the block's L1 messages are the queue's next messages, consecutive from the parent's
      cursor (``L1MessageOutOfOrder``), and the L1 cursor is the index after the last of them.
    """
    if header.number != parent.number + 1:
        raise BlockNumberMismatch(header.number, parent.number + 1)
    expected_parent = header_hash(parent)
    if header.parent_hash != expected_parent:
        raise ParentHashMismatch(header.parent_hash, expected_parent)
    if header.timestamp_ms <= parent.timestamp_ms:
        raise TimestampNotIncreasing(header.timestamp_ms, parent.timestamp_ms)
    if header.l1_origin < parent.l1_origin:
        raise L1OriginDecreasing(header.l1_origin, parent.l1_origin)
    cursor = parent.l1_cursor
    for tx in transactions:
        if isinstance(tx, L1Message):
            if tx.index != cursor:
                raise L1MessageOutOfOrder(cursor, tx.index)
            cursor += 1
    if header.l1_cursor != cursor:
        raise L1CursorMismatch(header.l1_cursor, cursor)
