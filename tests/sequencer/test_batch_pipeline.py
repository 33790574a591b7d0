"""Several batches in flight on the real bridge of the embedded EVM chain: they land together in
one L1 block, a batch behind a failed one is forgotten and planned again, a restart with
batches of the earlier run still pending ends with the bridge and the node agreeing, and the gas
bound of a batch sent without an estimate covers what the bridge really uses."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from node.config import BRIDGE_ADDRESS, dev_accounts
from node.evm.bridge import (
    BridgeClient,
    CommitBatchCall,
    WithdrawalEntry,
    commit_gas_bound,
    encode_commit_batch,
)
from node.evm.l1 import CallRequest, EmbeddedL1Client, submit_transaction
from node.sequencer.batcher import Batcher
from node.sequencer.chainstore import HEAD_SAFE
from node.sequencer.sequencer import Sequencer
from node.tradezone.signing import Signer
from node.tradezone.transactions import PlaceOrder, encode_transaction

from .conftest import L1, TRADERS, open_sequencer, produce_order_blocks

SEQUENCER_KEY = dev_accounts()[9].private_key
SEQUENCER = dev_accounts()[9].address
ALICE = Signer(TRADERS[0].private_key)
OUTCOME_MARKET = 100


async def until_pending(l1: L1, count: int) -> None:
    for _ in range(500):
        if l1.chain.pending_count >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{l1.chain.pending_count} transactions pending, expected {count}")


async def assert_bridge_matches(seq: Sequencer, bridge: BridgeClient) -> None:
    """Every committed batch commits the node's root at its block, and the batches tile the chain."""
    count = await bridge.batch_count()
    expected_first = 1
    for index in range(count):
        info = await bridge.batch(index)
        header = seq.store.get_header(info.tz_block)
        assert header is not None and header.state_root == info.state_root
        record = seq.store.get_batch(index)
        assert record is not None
        assert (record.first_block, record.last_block, record.state_root) == (expected_first, info.tz_block,
                                                                                 info.state_root)
        expected_first = record.last_block + 1


def test_batches_in_flight_land_together_in_one_l1_block(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)
    bridge = BridgeClient(EmbeddedL1Client(l1.chain), BRIDGE_ADDRESS)  # mined only by the test
    lines: list[str] = []
    batcher = Batcher(seq, bridge, SEQUENCER_KEY, max_data=400, max_pending=4, progress=lines.append)

    async def main() -> None:
        roots = await produce_order_blocks(seq, 6, 0)
        advancing = asyncio.create_task(batcher.advance())
        await until_pending(l1, 4)
        # Four batches are in flight, each continuing the one before; the node shows them.
        in_flight = seq.store.batches_in_flight()
        assert [r.index for r in in_flight] == [0, 1, 2, 3]
        assert all(r.tx_hash for r in in_flight)
        assert [r.first_block for r in in_flight] == [1] + [r.last_block + 1 for r in in_flight[:-1]]
        assert await bridge.batch_count() == 0
        l1.mine()
        assert await advancing
        assert await bridge.batch_count() == 4
        infos = [await bridge.batch(i) for i in range(4)]
        assert len({info.l1_block for info in infos}) == 1  # one L1 block carries all four
        assert batcher.safe == infos[-1].tz_block == seq.store.head(HEAD_SAFE)
        assert seq.store.batches_in_flight() == []
        assert [seq.store.get_batch(i).tx_hash for i in range(4)] == [r.tx_hash for r in in_flight]  # type: ignore[union-attr]
        assert len(lines) == 4 and all("TZ batch" in line for line in lines)
        # The rest follows in the next L1 block.
        advancing = asyncio.create_task(batcher.advance())
        await until_pending(l1, 1)
        l1.mine()
        assert await advancing
        while batcher.safe < seq.head.number:
            advancing = asyncio.create_task(batcher.advance())
            await until_pending(l1, 1)
            l1.mine()
            assert await advancing
        assert await bridge.last_committed_root() == roots[seq.head.number]
        await assert_bridge_matches(seq, bridge)

    asyncio.run(main())
    seq.store.kv.close()


def test_a_restart_with_batches_of_the_earlier_run_still_pending_ends_in_agreement(tmp_path: Path, l1: L1) -> None:
    """The earlier run sent three batches and died before they were mined; the new run sends its
    own first batch, which the earlier ones beat: it reverts, is forgotten, and the new run
    records the earlier batches and carries on from them."""
    seq = open_sequencer(tmp_path / "tz", l1)
    bridge = BridgeClient(EmbeddedL1Client(l1.chain), BRIDGE_ADDRESS)
    first = Batcher(seq, bridge, SEQUENCER_KEY, max_data=400, max_pending=3)

    async def main() -> None:
        roots = await produce_order_blocks(seq, 5, 0)
        earlier = asyncio.create_task(first.advance())
        await until_pending(l1, 3)
        earlier.cancel()  # the earlier run dies with three batches pending on the EVM chain
        with pytest.raises(asyncio.CancelledError):
            await earlier
        earlier_hashes = [r.tx_hash for r in seq.store.batches_in_flight()]
        assert len(earlier_hashes) == 3

        again = Batcher(seq, bridge, SEQUENCER_KEY, max_data=400, max_pending=3)
        advancing = asyncio.create_task(again.advance())
        await until_pending(l1, 6)  # its own three go behind the earlier ones
        l1.mine()
        assert not await advancing  # its first batch reverted: all three forgotten
        assert seq.store.batches_in_flight() == [] or all(
            r.index >= 3 for r in seq.store.batches_in_flight()
        )
        while again.safe < seq.head.number:
            advancing = asyncio.create_task(again.advance())
            await asyncio.sleep(0.05)
            l1.mine()
            await advancing
        assert await bridge.batch_count() >= 4
        assert await bridge.last_committed_root() == roots[seq.head.number]
        await assert_bridge_matches(seq, bridge)
        # The earlier run's batches are recorded; none carries a transaction that did not commit it.
        for index in range(await bridge.batch_count()):
            record = seq.store.get_batch(index)
            assert record is not None
            if record.tx_hash:
                receipt = await bridge.l1.get_transaction_receipt(record.tx_hash)
                assert receipt is not None and receipt.status == 1 and receipt.block_number == record.l1_block

    asyncio.run(main())
    seq.store.kv.close()


@pytest.mark.parametrize(
    ("size", "withdrawals", "kind"),
    [(0, 0, "random"), (300, 1, "random"), (20_000, 16, "random"), (120_000, 0, "zeros"),
     (240 * 1024, 0, "random"), (240 * 1024, 256, "random"), (64 * 1024, 256, "zeros")],
)
def test_the_gas_bound_covers_what_commit_batch_uses(l1: L1, size: int, withdrawals: int, kind: str) -> None:
    """The bound a batch sent behind others takes is at least the gas the bridge needs (the chain's
    own estimate) and not far above it (a bound too generous would keep batches out of blocks)."""
    bridge = BridgeClient(l1.client, BRIDGE_ADDRESS)

    async def main() -> None:
        data = os.urandom(size) if kind == "random" else bytes(size)
        entries = tuple(
            WithdrawalEntry(i + 1, (0x1000 + i).to_bytes(20, "big"), 1, 10**6 + i) for i in range(withdrawals)
        )
        call = CommitBatchCall(await bridge.last_committed_root(), os.urandom(32), 1, 0, bytes(32), entries, data)
        calldata = encode_commit_batch(call)
        needed = await l1.client.estimate_gas(CallRequest(to=BRIDGE_ADDRESS, data=calldata, sender=SEQUENCER))
        bound = commit_gas_bound(calldata, withdrawals)
        assert needed <= bound <= needed * 3 // 2 + 300_000, (needed, bound)

    asyncio.run(main())


class FrugalL1Client(EmbeddedL1Client):
    """Suggests paying exactly the next base fee: a transaction sent so is stuck as soon as the
    base fee rises, as on a busy EVM chain."""

    async def fee_suggestion(self) -> tuple[int, int]:
        return self.chain.next_base_fee(), 1


def test_a_batch_stuck_under_a_rising_base_fee_goes_out_again_with_higher_fees(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)
    bridge = BridgeClient(FrugalL1Client(l1.chain), BRIDGE_ADDRESS)
    batcher = Batcher(seq, bridge, SEQUENCER_KEY, max_pending=1)
    filler_key = dev_accounts()[2].private_key
    filler_nonce = 0

    async def fill_block() -> None:
        """Six calldata-heavy transactions that take all but 120,000 gas of the next L1 block (so
        the batch does not fit) and use enough of it to raise the base fee by about 12%."""
        nonlocal filler_nonce
        for _ in range(6):
            await submit_transaction(EmbeddedL1Client(l1.chain), filler_key, b"\xfe" * 20, os.urandom(240 * 1024),
                                     gas=9_980_000, nonce=filler_nonce)
            filler_nonce += 1

    async def main() -> None:
        roots = await produce_order_blocks(seq, 1, 0)
        await fill_block()
        advancing = asyncio.create_task(batcher.advance())
        await until_pending(l1, 7)
        (first,) = seq.store.batches_in_flight()
        base_fee = l1.chain.next_base_fee()
        for block in range(3):  # three full blocks: the batch does not fit, then its fee cap is too low
            l1.mine()
            assert l1.chain.next_base_fee() > base_fee
            base_fee = l1.chain.next_base_fee()
            assert l1.chain.get_receipt(first.tx_hash) is None
            if block < 2:
                await fill_block()
        for _ in range(300):  # the batcher notices and replaces its transaction
            if first.tx_hash in l1.chain.dropped:
                break
            await asyncio.sleep(0.01)
        assert "replaced" in l1.chain.dropped[first.tx_hash]
        (again,) = seq.store.batches_in_flight()
        assert again.tx_hash != first.tx_hash
        l1.mine()  # the replacement goes first in the next block
        assert await advancing
        record = seq.store.get_batch(0)
        assert record is not None and record.tx_hash == again.tx_hash
        assert await bridge.last_committed_root() == roots[1]

    asyncio.run(main())
    seq.store.kv.close()


def test_a_backlog_is_spread_over_blocks_that_each_fit_one_batch(tmp_path: Path, l1: L1) -> None:
    """A block cannot be split across batches, so the sequencer bounds each block's encoded
    transactions (``max_block_bytes``): a backlog larger than that goes into several blocks, in
    order, and the batcher carries every one of them."""
    seq = open_sequencer(tmp_path / "tz", l1, max_block_bytes=3_000)
    bridge = BridgeClient(l1.client, BRIDGE_ADDRESS)
    batcher = Batcher(seq, bridge, SEQUENCER_KEY, max_data=3_500)  # about one block per batch

    async def main() -> None:
        orders = [ALICE.sign(PlaceOrder(OUTCOME_MARKET, 0, 1 + n % 40, 1, 2, False, 0), n) for n in range(120)]
        raws = [encode_transaction(tx) for tx in orders]
        assert all(isinstance(result, bytes) for result in await seq.submit(raws))
        first = seq.head.number + 1
        while len(seq.mempool):
            assert seq.produce_block(seq.head.timestamp_ms + 100) is not None
        blocks = [seq.store.get_block(n) for n in range(first, seq.head.number + 1)]
        assert len(blocks) >= sum(map(len, raws)) // 3_000
        included = []
        for block in blocks:
            assert block is not None
            assert sum(len(encode_transaction(tx)) for tx in block.transactions) <= 3_000
            included.extend(encode_transaction(tx) for tx in block.transactions)
        assert included == raws  # all of them, in arrival order
        while batcher.safe < seq.head.number:
            assert await batcher.advance()
        assert await bridge.last_committed_root() == seq.head.state_root
        await assert_bridge_matches(seq, bridge)

    asyncio.run(main())
    seq.store.kv.close()
