"""The sequencer on a real embedded EVM chain and a real LevelDB: deposits through the inbox,
trading, withdrawals, admission errors, restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from node.sequencer.mempool import DuplicateTransaction, MempoolFull
from node.tradezone.errors import BadSignature, InsufficientBalance, NonceMismatch, UnknownMarket
from node.tradezone.signing import Signer
from node.tradezone.state import compute_state_root
from node.tradezone.transactions import PlaceOrder, PlaceOrders, SignedTx, Withdraw, encode_transaction

from .conftest import L1, TRADERS, open_sequencer

USDT = 1
BTC_PERP = 2
ALICE, BOB, CAROL = (Signer(a.private_key) for a in TRADERS)


async def deposit_and_include(l1: L1, seq, key: bytes, who: bytes, amount: int) -> None:  # type: ignore[no-untyped-def]
    await l1.deposit_usdt(key, who, amount)
    while await seq.inbox.poll():
        pass


def test_deposit_is_credited_once_in_queue_order_and_survives_restart(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)

    async def main() -> None:
        await deposit_and_include(l1, seq, TRADERS[0].private_key, ALICE.address, 5_000_000)
        await deposit_and_include(l1, seq, TRADERS[1].private_key, BOB.address, 7_000_000)
        produced = seq.produce_block(seq.head.timestamp_ms + 100)
        assert produced is not None
        block, receipts = produced
        assert [r.ok for r in receipts] == [True, True]
        assert block.header.l1_cursor == 2

    asyncio.run(main())
    assert seq.state.balances[(ALICE.address, USDT)] == (5_000_000, 0)
    assert seq.state.balances[(BOB.address, USDT)] == (7_000_000, 0)
    root, number = seq.head.state_root, seq.head.number
    seq.store.kv.close()

    again = open_sequencer(tmp_path / "tz", l1)
    assert (again.head.state_root, again.head.number) == (root, number)
    assert compute_state_root(again.state) == root

    async def rescan() -> None:
        while await again.inbox.poll():
            pass

    asyncio.run(rescan())
    assert again.inbox.take() == ([], 0)  # the restart point is after the consumed messages
    assert again.produce_block(again.head.timestamp_ms + 100) is None
    assert again.state.balances[(ALICE.address, USDT)] == (5_000_000, 0)
    again.store.kv.close()


def test_admission_names_what_is_wrong_and_changes_nothing(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1, mempool_per_account=2)
    root = compute_state_root(seq.state)
    good = ALICE.sign(PlaceOrder(BTC_PERP, 0, 1_000_000, 1, 2, False, 0), 0)
    tampered = SignedTx(good.action, good.account, good.nonce, good.signature[:64] + bytes((55 - good.signature[64],)))
    unknown = ALICE.sign(PlaceOrder(999, 0, 1_000_000, 1, 2, False, 0), 0)
    gap = ALICE.sign(PlaceOrder(BTC_PERP, 0, 1_000_000, 1, 2, False, 0), 5)
    broke = ALICE.sign(Withdraw(USDT, 1, ALICE.address), 0)

    async def main() -> list[object]:
        raws = [encode_transaction(tx) for tx in (tampered, unknown, gap, broke, good, good)]
        return await seq.submit([b"\x00garbage", *raws])

    results = asyncio.run(main())
    assert type(results[0]).__name__ in {"DecodeError", "NonCanonicalEncoding", "UnknownTransactionType"}
    # a tampered v recovers some other key: that key is not the account nor its agent
    assert type(results[1]).__name__ in {"UnauthorizedSigner", "BadSignature"}
    assert isinstance(results[2], UnknownMarket)
    assert isinstance(results[3], NonceMismatch) and results[3].expected == 0
    assert isinstance(results[4], InsufficientBalance)
    assert isinstance(results[5], bytes)
    assert isinstance(results[6], DuplicateTransaction)
    assert compute_state_root(seq.state) == root
    assert len(seq.mempool) == 1
    # a replay of the pending nonce is refused; the per-account bound refuses the third
    second = ALICE.sign(PlaceOrder(BTC_PERP, 0, 999_990, 1, 2, False, 0), 1)
    third = ALICE.sign(PlaceOrder(BTC_PERP, 0, 999_980, 1, 2, False, 0), 2)
    replay = ALICE.sign(PlaceOrder(BTC_PERP, 0, 999_970, 1, 2, False, 0), 0)
    out = asyncio.run(seq.submit([encode_transaction(t) for t in (replay, second, third)]))
    assert isinstance(out[0], NonceMismatch)
    assert isinstance(out[1], bytes)
    assert isinstance(out[2], MempoolFull)
    seq.store.kv.close()


def test_trade_between_two_accounts_fills_and_is_durable(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)

    async def main() -> None:
        await deposit_and_include(l1, seq, TRADERS[0].private_key, ALICE.address, 50_000_000)
        await deposit_and_include(l1, seq, TRADERS[1].private_key, BOB.address, 50_000_000)
        assert seq.produce_block(seq.head.timestamp_ms + 100) is not None
        maker = ALICE.sign(PlaceOrder(BTC_PERP, 1, 1_000_000, 3, 2, False, 7), 0)  # post-only sell
        taker = BOB.sign(PlaceOrder(BTC_PERP, 0, 1_000_000, 2, 1, False, 8), 0)  # IOC buy
        out = await seq.submit([encode_transaction(taker), encode_transaction(maker)])
        assert all(isinstance(h, bytes) for h in out)
        block, receipts = seq.produce_block(seq.head.timestamp_ms + 100)  # type: ignore[misc]
        # maker-first: the post-only sell rests before the IOC buy arrives, whatever the arrival order
        taker_receipt = receipts[0]
        assert taker_receipt.ok and len(taker_receipt.fills) == 1
        fill = taker_receipt.fills[0]
        assert (fill.maker, fill.taker, fill.size) == (ALICE.address, BOB.address, 2)
        found = seq.transaction_by_hash(out[0])  # type: ignore[arg-type]
        assert found is not None and found[1].number == block.header.number

    asyncio.run(main())
    root = seq.head.state_root
    seq.store.kv.close()
    again = open_sequencer(tmp_path / "tz", l1)
    assert again.head.state_root == root
    assert again.state.positions[(BOB.address, BTC_PERP)].size == 2
    again.store.kv.close()


def test_bad_signature_from_a_decoded_transaction_is_refused(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)
    good = ALICE.sign(PlaceOrder(BTC_PERP, 0, 1_000_000, 1, 2, False, 0), 0)
    high_s = SignedTx(good.action, good.account, good.nonce, good.signature[:32] + b"\xff" * 32 + b"\x1b")
    out = asyncio.run(seq.submit([encode_transaction(high_s)]))
    assert isinstance(out[0], BadSignature)
    seq.store.kv.close()


def test_restart_resumes_from_a_snapshot_and_replays_only_later_blocks(tmp_path: Path, l1: L1) -> None:
    from node.sequencer import sequencer as sequencer_module

    seq = open_sequencer(tmp_path / "tz", l1, snapshot_every=3)

    async def trade(rounds: range) -> None:
        for nonce in rounds:
            order = ALICE.sign(PlaceOrder(100, 0, 10 + nonce, 1, 2, False, 0), nonce)
            assert isinstance((await seq.submit([encode_transaction(order)]))[0], bytes)
            seq.produce_block(seq.head.timestamp_ms + 100)
            await seq.wait_snapshot()  # written in the background: wait for each to land

    asyncio.run(trade(range(7)))  # blocks 1..7: snapshots at 3 and 6
    number, _blob = seq.store.get_snapshot()  # type: ignore[misc]
    assert number == 6
    root, head = seq.head.state_root, seq.head.number
    seq.store.kv.close()

    replayed: list[int] = []
    original = sequencer_module.state_transition

    def counting(state, parent, block, domain):  # type: ignore[no-untyped-def]
        replayed.append(block.header.number)
        return original(state, parent, block, domain)

    sequencer_module.state_transition = counting  # type: ignore[assignment]
    try:
        again = open_sequencer(tmp_path / "tz", l1, snapshot_every=3)
    finally:
        sequencer_module.state_transition = original
    assert replayed == [7]  # only the block after the snapshot
    assert (again.head.number, again.head.state_root) == (head, root)
    assert compute_state_root(again.state) == root
    seq = again
    asyncio.run(trade(range(7, 9)))  # and it goes on producing from there
    assert seq.head.number == 9
    seq.store.kv.close()


def test_busy_blocks_are_snapshotted_by_the_actions_since_the_last_snapshot(tmp_path: Path, l1: L1) -> None:
    """However few blocks, once ``snapshot_actions`` actions (each order of a PlaceOrders counts)
    were applied since the last snapshot, the next block is snapshotted, so a restart replays a
    bounded amount of work."""
    seq = open_sequencer(tmp_path / "tz", l1, snapshot_every=1000, snapshot_actions=10)

    async def trade() -> list[int]:
        taken: list[int] = []
        for nonce in range(5):
            orders = tuple(PlaceOrder(100, 0, 10 + nonce, 1, 2, False, n) for n in range(4))
            assert isinstance((await seq.submit([encode_transaction(ALICE.sign(PlaceOrders(orders), nonce))]))[0],
                              bytes)
            seq.produce_block(seq.head.timestamp_ms + 100)
            await seq.wait_snapshot()
            found = seq.store.get_snapshot()
            taken.append(found[0] if found is not None else 0)
        return taken

    # 4 actions a block: 12 >= 10 after block 3, then 12 again after block 6 (not reached)
    assert asyncio.run(trade()) == [0, 0, 3, 3, 3]
    root = seq.head.state_root
    seq.store.kv.close()
    again = open_sequencer(tmp_path / "tz", l1, snapshot_every=1000, snapshot_actions=10)
    assert again.head.state_root == root
    again.store.kv.close()


def test_a_snapshot_that_does_not_match_its_header_is_ignored(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1, snapshot_every=2)

    async def trade() -> None:
        for nonce in range(3):
            order = ALICE.sign(PlaceOrder(100, 0, 10 + nonce, 1, 2, False, 0), nonce)
            await seq.submit([encode_transaction(order)])
            seq.produce_block(seq.head.timestamp_ms + 100)

    asyncio.run(trade())
    root = seq.head.state_root
    number, blob = seq.store.get_snapshot()  # type: ignore[misc]
    seq.store.put_snapshot(number, blob[:-40] + bytes(40))  # damaged on disk
    seq.store.kv.close()
    again = open_sequencer(tmp_path / "tz", l1)
    assert again.head.state_root == root  # replayed from genesis instead
    again.store.kv.close()


def test_periodic_snapshots_are_written_by_a_forked_child_while_blocks_go_on(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1, snapshot_every=2)

    async def trade() -> None:
        for nonce in range(5):
            order = ALICE.sign(PlaceOrder(100, 0, 10 + nonce, 1, 2, False, 0), nonce)
            assert isinstance((await seq.submit([encode_transaction(order)]))[0], bytes)
            seq.produce_block(seq.head.timestamp_ms + 100)
            await asyncio.sleep(0)
        await seq.wait_snapshot()

    asyncio.run(trade())
    number, blob = seq.store.get_snapshot()  # type: ignore[misc]
    assert number in (2, 4)  # block 4's snapshot is skipped only if block 2's was still being written
    assert seq.snapshots_written >= 1
    root = seq.head.state_root
    seq.store.kv.close()
    again = open_sequencer(tmp_path / "tz", l1)
    assert again.head.state_root == root
    assert compute_state_root(again.state) == root
    again.store.kv.close()


def test_a_snapshot_child_that_fails_keeps_the_previous_snapshot(
    tmp_path: Path, l1: L1, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.sequencer import sequencer as sequencer_module

    seq = open_sequencer(tmp_path / "tz", l1, snapshot_every=1)

    async def block(nonce: int) -> None:
        order = ALICE.sign(PlaceOrder(100, 0, 10 + nonce, 1, 2, False, 0), nonce)
        await seq.submit([encode_transaction(order)])
        seq.produce_block(seq.head.timestamp_ms + 100)
        await seq.wait_snapshot()

    asyncio.run(block(0))
    assert seq.store.get_snapshot()[0] == 1  # type: ignore[index]

    def failing(*_args: object, **_kwargs: object) -> bytes:
        raise RuntimeError("cannot pickle")

    with monkeypatch.context() as patch:
        patch.setattr(sequencer_module.pickle, "dumps", failing)  # pickling fails in the child
        asyncio.run(block(1))
    assert seq.head.number == 2
    assert seq.store.get_snapshot()[0] == 1  # type: ignore[index]  # the previous snapshot stays
    asyncio.run(block(2))
    assert seq.store.get_snapshot()[0] == 3  # type: ignore[index]  # and the next one lands
    seq.store.kv.close()


def test_a_stuck_snapshot_child_is_killed_and_the_next_snapshot_lands(
    tmp_path: Path, l1: L1, monkeypatch: pytest.MonkeyPatch
) -> None:
    from node.sequencer import sequencer as sequencer_module

    seq = open_sequencer(tmp_path / "tz", l1, snapshot_every=1, snapshot_timeout_s=0.5)  # type: ignore[arg-type]

    async def block(nonce: int) -> None:
        order = ALICE.sign(PlaceOrder(100, 0, 10 + nonce, 1, 2, False, 0), nonce)
        await seq.submit([encode_transaction(order)])
        seq.produce_block(seq.head.timestamp_ms + 100)
        await seq.wait_snapshot()

    def stuck(*_args: object, **_kwargs: object) -> bytes:
        import time

        time.sleep(3600)
        return b""

    asyncio.run(block(0))
    assert seq.store.get_snapshot()[0] == 1  # type: ignore[index]
    with monkeypatch.context() as patch:
        patch.setattr(sequencer_module.pickle, "dumps", stuck)  # the child never answers
        asyncio.run(block(1))
    assert seq.store.get_snapshot()[0] == 1  # type: ignore[index]  # killed: the previous one stays
    asyncio.run(block(2))
    assert seq.store.get_snapshot()[0] == 3  # type: ignore[index]
    seq.store.kv.close()


def test_with_the_collector_policy_a_block_gets_one_young_pass_after_it(tmp_path: Path, l1: L1) -> None:
    """apply_block runs a young-generation pass after a block unless the collector is already off;
    the block loop's policy pauses it for the block and walks the survivors once afterwards, so
    no collection at all runs while a block is produced and the collector is on between blocks."""
    import gc

    from node.config import BRIDGE_ADDRESS
    from node.db import LevelDBStore
    from node.sequencer.chainstore import ChainStore
    from node.sequencer.sequencer import Sequencer, SequencerConfig
    from node.tradezone.genesis import load_devnet

    seq = Sequencer(ChainStore(LevelDBStore(tmp_path / "tz")), load_devnet, l1.client, BRIDGE_ADDRESS,
                    SequencerConfig(workers=0, block_ms=20, manage_gc=True))
    inside = False
    during: list[int] = []
    produced: list[int] = []
    paused_after: list[bool] = []

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and inside:
            during.append(info["generation"])

    produce = seq.produce_block

    def produce_block(now_ms: int):  # type: ignore[no-untyped-def]
        nonlocal inside
        inside = True
        try:
            result = produce(now_ms)
        finally:
            inside = False
        if result is not None:
            produced.append(result[0].header.number)
            paused_after.append(not gc.isenabled())  # paused until the policy's after_block
        return result

    seq.produce_block = produce_block  # type: ignore[method-assign]

    async def main() -> None:
        await seq.start()
        try:
            for nonce in range(3):
                order = ALICE.sign(PlaceOrder(100, 0, 10 + nonce, 1, 2, False, 0), nonce)
                assert isinstance((await seq.submit([encode_transaction(order)]))[0], bytes)
                before = len(produced)
                for _ in range(500):
                    if len(produced) > before:
                        break
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.005)
                assert gc.isenabled()
        finally:
            await seq.stop()

    gc.callbacks.append(watch)
    try:
        asyncio.run(main())
    finally:
        gc.callbacks.remove(watch)
        seq.store.kv.close()
    assert len(produced) >= 3 and all(paused_after)
    assert during == []
    assert gc.isenabled()
