"""The chain store's lookups of one transaction and one receipt in a stored block."""

from __future__ import annotations

import asyncio

import pytest

from node.sequencer import chainstore as chainstore_module
from node.sequencer.sequencer import Sequencer
from node.tradezone.signing import Signer
from node.tradezone.transactions import CancelAll, PlaceOrder, encode_transaction, tx_hash

from .conftest import TRADERS

ALICE, BOB = Signer(TRADERS[0].private_key), Signer(TRADERS[1].private_key)


def _one_big_block(seq: Sequencer) -> int:
    """A block of 300 transactions (so its encoding and every transaction in it use RLP's long
    forms), of two kinds and two signers; its number."""
    raws = [encode_transaction(ALICE.sign(PlaceOrder(100, 0, 10 + n % 30, 1, 2, False, n), n)) for n in range(200)]
    raws += [encode_transaction(BOB.sign(CancelAll() if n % 2 else PlaceOrder(100, 0, 20, 1, 2, False, 0), n))
             for n in range(100)]
    assert all(isinstance(result, bytes) for result in asyncio.run(seq.submit(raws)))
    produced = seq.produce_block(seq.head.timestamp_ms + 100)
    assert produced is not None and len(produced[0].transactions) == 300
    return produced[0].header.number


def test_one_transaction_and_one_receipt_are_read_as_the_whole_block_has_them(sequencer: Sequencer) -> None:
    number = _one_big_block(sequencer)
    store = sequencer.store
    block, receipts = store.get_block(number), store.get_receipts(number)
    assert block is not None and receipts is not None
    for index, (tx, receipt) in enumerate(zip(block.transactions, receipts, strict=True)):
        assert store.get_transaction(number, index) == tx
        assert store.get_receipt(number, index) == receipt
    assert store.get_transaction(number, 300) is None and store.get_receipt(number, 300) is None
    assert store.get_transaction(number + 1, 0) is None and store.get_receipt(number + 1, 0) is None
    assert store.get_transaction(0, 0) is None  # genesis has no transactions


def test_lookups_by_hash_decode_only_what_they_return(sequencer: Sequencer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transaction lookup decodes that one transaction of its block, a receipt lookup none."""
    number = _one_big_block(sequencer)
    block, receipts = sequencer.store.get_block(number), sequencer.store.get_receipts(number)
    assert block is not None and receipts is not None
    decoded = 0
    decode = chainstore_module.decode_transaction

    def counted(data: bytes):  # type: ignore[no-untyped-def]
        nonlocal decoded
        decoded += 1
        return decode(data)

    monkeypatch.setattr(chainstore_module, "decode_transaction", counted)
    last = block.transactions[-1]
    assert sequencer.transaction_by_hash(tx_hash(last)) == (last, block.header, 299)
    assert decoded == 1
    assert sequencer.receipt_by_hash(tx_hash(last)) == (receipts[-1], block.header, 299)
    assert decoded == 1
    assert sequencer.transaction_by_hash(bytes(32)) is None and sequencer.receipt_by_hash(bytes(32)) is None


def test_a_block_without_full_transactions_is_served_from_its_encoding(sequencer: Sequencer,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """tz_getBlockByNumber / ByHash without full transactions: the same JSON as from the decoded
    block, with no transaction decoded (the hashes are the keccaks of the stored encodings)."""
    from node.tradezone import blocks as blocks_module
    from node.tzrpc.codec import block_to_json, hex_bytes
    from node.tzrpc.server import TzRpc

    number = _one_big_block(sequencer)
    block = sequencer.store.get_block(number)
    assert block is not None
    rpc = TzRpc(sequencer)
    full = rpc.tz_getBlockByNumber([number, True])
    assert full == block_to_json(block, True)

    def refuse(data: bytes) -> None:
        raise AssertionError("a transaction was decoded")

    monkeypatch.setattr(blocks_module, "decode_transaction", refuse)
    expected = block_to_json(block, False)
    assert rpc.tz_getBlockByNumber([number, False]) == expected
    assert rpc.tz_getBlockByHash([expected["hash"], False]) == expected
    assert expected["transactions"] == [tx["hash"] for tx in full["transactions"]]  # type: ignore[index]
    assert expected["transactions"][-1] == hex_bytes(tx_hash(block.transactions[-1]))
