"""The recent-trades ring: bounded per market, newest first, seeded from stored receipts."""

from __future__ import annotations

from pathlib import Path

from node.db import LevelDBStore
from node.sequencer.chainstore import ChainStore
from node.tradezone.blocks import BLANK_ROOT, ZERO_HASH, Block, Header
from node.tradezone.receipts import STATUS_OK, FillEvent, Receipt
from node.tradezone.signing import Signer
from node.tradezone.transactions import PlaceOrder, tx_hash
from node.tzrpc.feed import TradeRing, block_trades

from .conftest import ACCOUNTS

MAKER, TAKER = Signer(ACCOUNTS[5].private_key), Signer(ACCOUNTS[6].private_key)


def block_with_fills(number: int, market_id: int, count: int) -> tuple[Block, list[Receipt]]:
    tx = TAKER.sign(PlaceOrder(market_id, 0, 100, count), number)
    fills = [FillEvent(market_id, 1, 2, MAKER.address, TAKER.address, 100 + i, 1, 0, 5, 0, 0) for i in range(count)]
    header = Header(number, ZERO_HASH, 1000 + number, 0, 0, BLANK_ROOT, BLANK_ROOT, BLANK_ROOT)
    return Block(header, (tx,)), [Receipt(STATUS_OK, fills=tuple(fills))]


def test_ring_keeps_the_newest_fills_per_market_newest_first() -> None:
    ring = TradeRing(per_market=5)
    for number in range(1, 4):
        ring.add(block_trades(*block_with_fills(number, 7, 3)))
    ring.add(block_trades(*block_with_fills(4, 8, 2)))
    recent = ring.recent(7, 100)
    assert len(recent) == 5
    assert [(t.block_number, t.fill.price) for t in recent] == [(3, 102), (3, 101), (3, 100), (2, 102), (2, 101)]
    assert [t.fill.market_id for t in ring.recent(8, 1)] == [8]
    assert ring.recent(9, 10) == []
    block, _ = block_with_fills(3, 7, 3)
    assert recent[0].transaction_hash == tx_hash(block.transactions[0])
    assert recent[0].to_json()["takerFee"] == "5" and recent[0].to_json()["takerSide"] == "buy"


def test_seed_reads_only_the_last_blocks_from_the_store(tmp_path: Path) -> None:
    store = ChainStore(LevelDBStore(tmp_path / "db"))
    try:
        for number in range(1, 11):
            store.put_block(*block_with_fills(number, 7, 1))
        ring = TradeRing()
        assert ring.seed(store, 10, max_blocks=4) == 4
        assert [t.block_number for t in ring.recent(7, 100)] == [10, 9, 8, 7]
    finally:
        store.kv.close()


def test_seeding_hashes_stored_encodings_and_decodes_no_transaction(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The ring is seeded from the stored blocks' encodings: the trades are those of the decoded
    blocks, transaction hashes included, though no transaction is decoded."""
    from node.tradezone import blocks as blocks_module
    from node.tzrpc.feed import stored_block_trades

    store = ChainStore(LevelDBStore(tmp_path / "db"))
    try:
        expected = []
        for number in range(1, 4):
            block, receipts = block_with_fills(number, 7, 2)
            quiet = TAKER.sign(PlaceOrder(7, 1, 300, 1), 100 + number)
            other, other_receipts = block_with_fills(number, 7, 1)
            block = Block(block.header, (block.transactions[0], quiet, other.transactions[0]))
            receipts = [receipts[0], Receipt(STATUS_OK), other_receipts[0]]
            store.put_block(block, receipts)
            encoded = store.get_encoded_block(number)
            assert encoded is not None
            assert stored_block_trades(encoded, receipts) == block_trades(block, receipts)
            expected.extend(block_trades(block, receipts))

        def refuse(data: bytes) -> None:
            raise AssertionError("seeding decoded a transaction")

        monkeypatch.setattr(blocks_module, "decode_transaction", refuse)
        ring = TradeRing()
        assert ring.seed(store, 3) == 3
        assert ring.recent(7, 100) == expected[::-1]
    finally:
        store.kv.close()
