"""The batcher: posts TradeZone blocks to the bridge and tracks the safe and finalized heads.

Each step first reconciles with the bridge (the EVM chain is the truth: whatever a crash left
half-done, the bridge says which batches are committed), then, if blocks past the safe head
exist, posts the next batch: the blocks' compressed canonical data as calldata, the previous and
new state roots, the L1 message cursor and rolling hash it consumed, and the withdrawals it makes
claimable. At most one batch is in flight; the next one goes out when it is mined, so with the
devnet's 1 s L1 blocks a batch lands in every L1 block while there is anything new.

Errors: an unreachable EVM chain is temporary (retry with backoff; the sequencer keeps producing
unsafe blocks); a bridge whose committed roots differ from the node's blocks is critical.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from node.evm.bridge import BridgeClient, CommitBatchCall, WithdrawalEntry
from node.evm.l1 import ExecutionReverted, L1Error
from node.sequencer.batch_codec import encode_batch
from node.sequencer.chainstore import BatchRecord
from node.sequencer.errors import CriticalError
from node.sequencer.sequencer import Sequencer
from node.tradezone.blocks import Block, encode_block

log = logging.getLogger(__name__)

MAX_DATA = 240 * 1024  # the bridge accepts 256 KiB of batch data
MAX_WITHDRAWALS = 256  # the bridge's per-batch bound


@dataclass
class BatchPlan:
    blocks: list[Block]
    call: CommitBatchCall
    trades: int


class Batcher:
    """Posts batches for ``sequencer`` to the bridge with the sequencer key."""

    def __init__(
        self,
        sequencer: Sequencer,
        bridge: BridgeClient,
        sequencer_key: bytes,
        *,
        progress: Callable[[str], None] | None = None,
        max_data: int = MAX_DATA,
    ) -> None:
        self.sequencer = sequencer
        self.bridge = bridge
        self.key = sequencer_key
        self.progress = progress
        self.max_data = max_data
        self.safe = 0
        self.finalized = 0
        self.frozen = False
        self._finalization_delay: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.crashed: BaseException | None = None

    # --- reconciliation ---------------------------------------------------------------------

    async def sync(self) -> None:
        """Read the committed batches from the bridge; move the safe and finalized heads."""
        store = self.sequencer.store
        count = await self.bridge.batch_count()
        if count == 0:
            root = await self.bridge.last_committed_root()
            if root != self.sequencer.genesis_header.state_root:
                raise CriticalError(
                    f"bridge genesis root 0x{root.hex()} is not TradeZone's genesis root "
                    f"0x{self.sequencer.genesis_header.state_root.hex()}"
                )
            return
        latest = await self.bridge.batch(count - 1)
        if latest.tz_block != self.safe:
            header = store.get_header(latest.tz_block)
            if header is None or header.state_root != latest.state_root:
                raise CriticalError(
                    f"bridge batch {latest.index} commits root 0x{latest.state_root.hex()} at TradeZone block "
                    f"{latest.tz_block}, which this node does not have"
                )
            if store.get_batch(latest.index) is None:
                in_flight = store.batch_in_flight()
                first = self.safe + 1
                record = BatchRecord(latest.index, first, latest.tz_block, latest.state_root,
                                     latest.message_cursor,
                                     in_flight.tx_hash if in_flight is not None else b"", latest.l1_block)
                store.record_batch(record, safe_head=latest.tz_block)
            self.safe = latest.tz_block
            store.set_heads(safe=self.safe)
        if self._finalization_delay is None:
            self._finalization_delay = await self.bridge.finalization_delay()
        l1_head = await self.sequencer.l1.block_number()
        index = count - 1
        while index >= 0:
            info = latest if index == count - 1 else await self.bridge.batch(index)
            if info.tz_block <= self.finalized:
                break
            if info.l1_block + self._finalization_delay <= l1_head:
                self.finalized = info.tz_block
                store.set_heads(finalized=self.finalized)
                break
            index -= 1

    # --- building -----------------------------------------------------------------------------

    async def plan(self) -> BatchPlan | None:
        """The next batch: blocks after the safe head, as many as fit the bridge's bounds."""
        seq = self.sequencer
        unsafe = seq.head.number
        if unsafe <= self.safe:
            return None
        blocks: list[Block] = []
        withdrawals: list[WithdrawalEntry] = []
        trades = 0
        raw_budget = self.max_data * 3
        raw_size = 0
        for block in seq.store.iter_blocks(self.safe + 1, unsafe):
            receipts = seq.store.get_receipts(block.header.number) or []
            entries = []
            for receipt in receipts:
                if receipt.withdrawal_id is not None:
                    record = seq.state.withdrawals[receipt.withdrawal_id]
                    entries.append(WithdrawalEntry(record.withdrawal_id, record.recipient, record.asset_id, record.amount))
            size = len(encode_block(block))
            if blocks and (len(withdrawals) + len(entries) > MAX_WITHDRAWALS or raw_size + size > raw_budget):
                break
            blocks.append(block)
            withdrawals.extend(entries)
            trades += sum(len(r.fills) for r in receipts)
            raw_size += size
        data = encode_batch(blocks)
        while len(data) > self.max_data and len(blocks) > 1:
            blocks = blocks[: len(blocks) // 2]
            last = blocks[-1].header.number
            withdrawals = [w for w in withdrawals if seq.state.withdrawals[w.withdrawal_id].tz_block <= last]
            data = encode_batch(blocks)
        if len(data) > self.max_data:
            raise CriticalError(f"TradeZone block {blocks[0].header.number} alone exceeds the batch data bound")
        last_header = blocks[-1].header
        prev_root = (seq.store.get_header(self.safe) or seq.genesis_header).state_root
        cursor = last_header.l1_cursor
        rolling = await self.bridge.rolling_hash_at(cursor - 1) if cursor > 0 else b"\x00" * 32
        call = CommitBatchCall(prev_root, last_header.state_root, last_header.number, cursor, rolling,
                               tuple(withdrawals), data)
        return BatchPlan(blocks, call, trades)

    # --- posting ------------------------------------------------------------------------------

    async def step(self) -> bool:
        """Reconcile, then post one batch if there is anything new. True if a batch landed."""
        await self.sync()
        if self.frozen or await self.bridge.frozen():
            if not self.frozen:
                self._say("bridge is frozen: no batch can be committed any more")
            self.frozen = True
            return False
        plan = await self.plan()
        if plan is None:
            return False
        call = plan.call
        store = self.sequencer.store
        count = await self.bridge.batch_count()
        store.set_batch_in_flight(BatchRecord(count, self.safe + 1, call.tz_block, call.new_root, call.new_cursor, b""))
        try:
            receipt = await self.bridge.commit_batch(self.key, call)
        except ExecutionReverted as err:
            store.set_batch_in_flight(None)
            log.warning("bridge refused batch %d..%d: %s", self.safe + 1, call.tz_block, err)
            return False
        record = BatchRecord(count, self.safe + 1, call.tz_block, call.new_root, call.new_cursor,
                             receipt.transaction_hash, receipt.block_number, len(call.data), len(call.withdrawals))
        store.record_batch(record, safe_head=call.tz_block)
        self.safe = call.tz_block
        self._say(
            f"TZ batch {count:>5}  blocks {record.first_block}..{record.last_block}  trades {plan.trades:>6}  "
            f"withdrawals {len(call.withdrawals):>3}  root 0x{call.new_root.hex()[:12]}  "
            f"{len(call.data):>6} B  L1 block {receipt.block_number} tx 0x{receipt.transaction_hash.hex()[:12]}"
        )
        return True

    async def run(self, interval: float = 0.5) -> None:
        backoff = interval
        while True:
            try:
                landed = await self.step()
                backoff = interval
                if landed:
                    continue
            except L1Error as err:
                log.warning("batcher: EVM chain error (%s); retrying in %.1f s", err, backoff)
                backoff = min(backoff * 2, 10.0)
            except CriticalError as err:
                self.crashed = err
                log.critical("batcher stopped: %s", err)
                return
            await asyncio.sleep(backoff)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="tz-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)
        else:
            log.info(line)
