"""Durable storage of the TradeZone chain: blocks, receipts, transaction index, heads, batches.

Everything a block brings is written in one atomic LevelDB write batch (``put_block``), so a
``kill -9`` leaves either the whole block or nothing of it. Key layout (all integers big-endian):

| key | value |
|---|---|
| ``b"b" + number (8)`` | canonical block encoding (``blocks.encode_block``) |
| ``b"r" + number (8)`` | msgpack list of the block's receipts |
| ``b"s" + number (8)`` | msgpack ``BlockSummary``: what the batcher needs without decoding the block |
| ``b"h" + block hash (32)`` | number (8) |
| ``b"t" + tx hash (32)`` | number (8) + index in block (4) |
| ``b"H" + name`` | head number (8): ``unsafe``, ``safe``, ``finalized`` |
| ``b"c" + batch index (8)`` | msgpack ``BatchRecord`` of a batch committed on the EVM chain |
| ``b"f" + batch index (8)`` | msgpack ``BatchRecord`` of a batch in flight (sent, not yet seen committed) |
| ``b"S"`` | block number (8) + the pickled state after that block (a restart replays from it) |
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import msgspec

from node.db import KVStore
from node.tradezone.blocks import Block, Header, decode_block, decode_header, encode_block, header_hash
from node.tradezone.receipts import Receipt, decode_receipt
from node.tradezone.transactions import Transaction, decode_transaction, tx_hash

HEAD_UNSAFE = b"unsafe"
HEAD_SAFE = b"safe"
HEAD_FINALIZED = b"finalized"
HEADS = (HEAD_UNSAFE, HEAD_SAFE, HEAD_FINALIZED)

_IN_FLIGHT = b"f"
_LEGACY_IN_FLIGHT = b"C"  # the single in-flight record of earlier versions, dropped on the next batch
_SNAPSHOT = b"S"
_receipts_encoder = msgspec.msgpack.Encoder()
_receipts_decoder = msgspec.msgpack.Decoder(list[Receipt])
_raw_receipts_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])  # each receipt left undecoded


class BatchRecord(msgspec.Struct, frozen=True):
    """A batch of TradeZone blocks ``first_block..last_block`` posted to the bridge."""

    index: int
    first_block: int
    last_block: int
    state_root: bytes
    l1_cursor: int
    tx_hash: bytes
    l1_block: int = 0
    data_size: int = 0
    withdrawals: int = 0


_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(BatchRecord)


class BlockSummary(msgspec.Struct, frozen=True, array_like=True):
    """What a block's receipts say that a batch needs: its fills and the withdrawals it made."""

    fills: int
    withdrawal_ids: list[int]

    @classmethod
    def of(cls, receipts: Sequence[Receipt]) -> BlockSummary:
        return cls(sum(len(receipt.fills) for receipt in receipts),
                   [receipt.withdrawal_id for receipt in receipts if receipt.withdrawal_id is not None])


_summary_encoder = msgspec.msgpack.Encoder()
_summary_decoder = msgspec.msgpack.Decoder(BlockSummary)


def _payload(raw: bytes, pos: int) -> tuple[int, int]:
    """(payload start, end) of the RLP item, string or list, that begins at ``raw[pos]``. For the
    store's own canonical encodings: nothing is checked beyond the prefix."""
    first = raw[pos]
    if first < 0x80:
        return pos, pos + 1
    if first < 0xB8:
        return pos + 1, pos + 1 + first - 0x80
    if first < 0xC0:
        start = pos + 1 + first - 0xB7
    elif first <= 0xF7:
        return pos + 1, pos + 1 + first - 0xC0
    else:
        start = pos + 1 + first - 0xF7
    return start, start + int.from_bytes(raw[pos + 1:start], "big")


def header_of_encoded_block(raw: bytes) -> Header:
    """The header of a canonical block encoding, decoding nothing of its transactions."""
    start, _end = _payload(raw, 0)
    _start, end = _payload(raw, start)
    return decode_header(raw[start:end])


def transaction_encodings(raw: bytes) -> Iterator[bytes]:
    """The canonical encodings of a canonical block encoding's transactions, in order, each
    sliced out without decoding it or any other."""
    start, _end = _payload(raw, 0)
    _start, header_end = _payload(raw, start)
    position, end = _payload(raw, header_end)
    while position < end:
        item_start, position = _payload(raw, position)
        yield raw[item_start:position]


def transaction_of_encoded_block(raw: bytes, index: int) -> bytes | None:
    """The canonical encoding of transaction ``index`` of a canonical block encoding (None past
    the last), stepping over the transactions before it without decoding them."""
    return next(islice(transaction_encodings(raw), index, None), None)


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


class ChainStore:
    """The TradeZone chain in a key-value store. Not thread-safe: one owner (the sequencer)."""

    def __init__(self, kv: KVStore) -> None:
        self.kv = kv

    # --- blocks -----------------------------------------------------------------------------

    def put_block(self, block: Block, receipts: Sequence[Receipt], *, unsafe_head: bool = True,
                  tx_hashes: Sequence[bytes] | None = None) -> bytes:
        """Write a block, its receipts and indexes, and (by default) move the unsafe head to it,
        all in one atomic write. Returns the block hash. ``tx_hashes``, if the caller has them
        already, are the transactions' hashes in block order."""
        number = block.header.number
        block_hash = header_hash(block.header)
        key = _u64(number)
        puts: dict[bytes, bytes] = {
            b"b" + key: encode_block(block),
            b"r" + key: _receipts_encoder.encode(list(receipts)),
            b"s" + key: _summary_encoder.encode(BlockSummary.of(receipts)),
            b"h" + block_hash: key,
        }
        hashes = tx_hashes if tx_hashes is not None else [tx_hash(tx) for tx in block.transactions]
        for index, hash_ in enumerate(hashes):
            puts[b"t" + hash_] = key + index.to_bytes(4, "big")
        if unsafe_head:
            puts[b"H" + HEAD_UNSAFE] = key
        self.kv.write_batch(puts)
        return block_hash

    def get_block(self, number: int) -> Block | None:
        raw = self.kv.get(b"b" + _u64(number))
        return decode_block(raw) if raw is not None else None

    def get_encoded_block(self, number: int) -> bytes | None:
        """The block's canonical encoding as stored (what a batch carries)."""
        return self.kv.get(b"b" + _u64(number))

    def get_header(self, number: int) -> Header | None:
        raw = self.kv.get(b"b" + _u64(number))
        return header_of_encoded_block(raw) if raw is not None else None

    def get_summary(self, number: int) -> BlockSummary | None:
        """The block's fills and withdrawals (from its receipts, for blocks stored without one)."""
        raw = self.kv.get(b"s" + _u64(number))
        if raw is not None:
            return _summary_decoder.decode(raw)
        receipts = self.get_receipts(number)
        return BlockSummary.of(receipts) if receipts is not None else None

    def get_receipts(self, number: int) -> list[Receipt] | None:
        raw = self.kv.get(b"r" + _u64(number))
        return _receipts_decoder.decode(raw) if raw is not None else None

    def get_transaction(self, number: int, index: int) -> Transaction | None:
        """Transaction ``index`` of block ``number``, decoding no other transaction of the block."""
        raw = self.kv.get(b"b" + _u64(number))
        encoded = transaction_of_encoded_block(raw, index) if raw is not None else None
        return decode_transaction(encoded) if encoded is not None else None

    def get_receipt(self, number: int, index: int) -> Receipt | None:
        """The receipt of transaction ``index`` of block ``number``, decoding no other receipt."""
        raw = self.kv.get(b"r" + _u64(number))
        if raw is None:
            return None
        receipts = _raw_receipts_decoder.decode(raw)
        return decode_receipt(receipts[index]) if index < len(receipts) else None

    def block_number_of(self, block_hash: bytes) -> int | None:
        raw = self.kv.get(b"h" + block_hash)
        return int.from_bytes(raw, "big") if raw is not None else None

    def locate_transaction(self, hash_: bytes) -> tuple[int, int] | None:
        """(block number, index in block) of a transaction, or None if no stored block has it."""
        raw = self.kv.get(b"t" + hash_)
        if raw is None:
            return None
        return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big")

    def iter_blocks(self, start: int, stop: int) -> Iterator[Block]:
        """Blocks ``start..stop`` inclusive, in order; stops at the first missing one."""
        for number in range(start, stop + 1):
            block = self.get_block(number)
            if block is None:
                return
            yield block

    # --- heads --------------------------------------------------------------------------------

    def head(self, name: bytes) -> int | None:
        raw = self.kv.get(b"H" + name)
        return int.from_bytes(raw, "big") if raw is not None else None

    def set_heads(self, **numbers: int) -> None:
        """Move named heads (``safe=..., finalized=...``) in one atomic write."""
        self.kv.write_batch({b"H" + name.encode(): _u64(value) for name, value in numbers.items()})

    # --- batches ------------------------------------------------------------------------------

    def record_batch(self, record: BatchRecord, *, safe_head: int | None = None) -> None:
        """Store a committed batch, drop its in-flight record, move the safe head: one write."""
        puts = {b"c" + _u64(record.index): _batch_encoder.encode(record)}
        if safe_head is not None:
            puts[b"H" + HEAD_SAFE] = _u64(safe_head)
        self.kv.write_batch(puts, deletes=[_IN_FLIGHT + _u64(record.index), _LEGACY_IN_FLIGHT])

    def get_batch(self, index: int) -> BatchRecord | None:
        raw = self.kv.get(b"c" + _u64(index))
        return _batch_decoder.decode(raw) if raw is not None else None

    def batches(self) -> Iterator[BatchRecord]:
        for _key, raw in self.kv.iterate_prefix(b"c"):
            yield _batch_decoder.decode(raw)

    def set_batch_in_flight(self, record: BatchRecord) -> None:
        """Remember a batch about to be sent or sent (``tx_hash`` empty until it is sent)."""
        self.kv.put(_IN_FLIGHT + _u64(record.index), _batch_encoder.encode(record))

    def drop_batches_in_flight(self, indexes: Iterable[int]) -> None:
        """Forget in-flight records of batches that will not land (refused, or never sent)."""
        self.kv.write_batch({}, deletes=[_IN_FLIGHT + _u64(index) for index in indexes])

    def put_snapshot(self, number: int, blob: bytes) -> None:
        self.kv.put(_SNAPSHOT, _u64(number) + blob)

    def get_snapshot(self) -> tuple[int, bytes] | None:
        raw = self.kv.get(_SNAPSHOT)
        return (int.from_bytes(raw[:8], "big"), raw[8:]) if raw is not None else None

    def batch_in_flight(self, index: int) -> BatchRecord | None:
        """The in-flight record of batch ``index``, if one is kept."""
        raw = self.kv.get(_IN_FLIGHT + _u64(index))
        return _batch_decoder.decode(raw) if raw is not None else None

    def batches_in_flight(self) -> list[BatchRecord]:
        """Every in-flight record, by batch index."""
        return [_batch_decoder.decode(raw) for _key, raw in self.kv.iterate_prefix(_IN_FLIGHT)]

