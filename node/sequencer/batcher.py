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

import msgspec

from node.evm.bridge import BridgeClient, CommitBatchCall, WithdrawalEntry
from node.evm.l1 import ExecutionReverted, L1Error
from node.faults import crashpoint
from node.sequencer.batch_codec import encode_batch
from node.sequencer.chainstore import HEAD_FINALIZED, HEAD_SAFE, BatchRecord
from node.sequencer.errors import CriticalError
from node.sequencer.sequencer import Sequencer

log = logging.getLogger(__name__)

MAX_DATA = 240 * 1024  # the bridge accepts 256 KiB of batch data
MAX_WITHDRAWALS = 256  # the bridge's per-batch bound


@dataclass
class BatchPlan:
    blocks: list[int]  # the block numbers it carries
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
        store = sequencer.store
        self.safe = store.head(HEAD_SAFE) or 0
        self.finalized = store.head(HEAD_FINALIZED) or 0
        self._recorded = sum(1 for _ in store.batches())
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
        # Record every batch the bridge has that this node has not recorded yet (after a crash
        # between a batch being mined and being recorded, exactly one such batch exists).
        for index in range(self._recorded, count):
            info = await self.bridge.batch(index)
            header = store.get_header(info.tz_block)
            if header is None or header.state_root != info.state_root:
                raise CriticalError(
                    f"bridge batch {index} commits root 0x{info.state_root.hex()} at TradeZone block "
                    f"{info.tz_block}, which this node does not have"
                )
            if store.get_batch(index) is None:
                previous = store.get_batch(index - 1) if index > 0 else None
                first = previous.last_block + 1 if previous is not None else self.safe + 1
                in_flight = store.batch_in_flight()
                tx_hash = in_flight.tx_hash if in_flight is not None and in_flight.index == index else b""
                store.record_batch(BatchRecord(index, first, info.tz_block, info.state_root, info.message_cursor,
                                               tx_hash, info.l1_block), safe_head=info.tz_block)
                self.sequencer.retain_committed_root(info.state_root, info.tz_block)
            self.safe = info.tz_block
            store.set_heads(safe=self.safe)
        self._recorded = count
        latest = await self.bridge.batch(count - 1)
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
        numbers: list[int] = []
        encoded: list[bytes] = []
        withdrawals: list[WithdrawalEntry] = []
        trades = 0
        raw_budget = self.max_data * 3
        raw_size = 0
        for number in range(self.safe + 1, unsafe + 1):
            raw = seq.store.get_encoded_block(number)
            summary = seq.store.get_summary(number)
            if raw is None or summary is None:
                break
            entries = []
            for withdrawal_id in summary.withdrawal_ids:
                record = seq.state.withdrawals[withdrawal_id]
                entries.append(WithdrawalEntry(record.withdrawal_id, record.recipient, record.asset_id, record.amount))
            if numbers and (len(withdrawals) + len(entries) > MAX_WITHDRAWALS or raw_size + len(raw) > raw_budget):
                break
            numbers.append(number)
            encoded.append(raw)
            withdrawals.extend(entries)
            trades += summary.fills
            raw_size += len(raw)
        if not numbers:
            return None
        # Compressing a second of blocks takes tens of milliseconds: off the event loop.
        data = await asyncio.to_thread(encode_batch, encoded)
        while len(data) > self.max_data and len(numbers) > 1:
            numbers = numbers[: len(numbers) // 2]
            encoded = encoded[: len(numbers)]
            last = numbers[-1]
            withdrawals = [w for w in withdrawals if seq.state.withdrawals[w.withdrawal_id].tz_block <= last]
            data = await asyncio.to_thread(encode_batch, encoded)
        if len(data) > self.max_data:
            raise CriticalError(f"TradeZone block {numbers[0]} alone exceeds the batch data bound")
        last_header = seq.store.get_header(numbers[-1])
        if last_header is None:
            raise CriticalError(f"TradeZone block {numbers[-1]} vanished from the store")
        prev_root = (seq.store.get_header(self.safe) or seq.genesis_header).state_root
        cursor = last_header.l1_cursor
        rolling = await self.bridge.rolling_hash_at(cursor - 1) if cursor > 0 else b"\x00" * 32
        call = CommitBatchCall(prev_root, last_header.state_root, last_header.number, cursor, rolling,
                               tuple(withdrawals), data)
        return BatchPlan(numbers, call, trades)

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
        in_flight = BatchRecord(count, self.safe + 1, call.tz_block, call.new_root, call.new_cursor, b"")
        store.set_batch_in_flight(in_flight)
        crashpoint("batch-planned")

        def sent(tx_hash: bytes) -> None:
            store.set_batch_in_flight(msgspec.structs.replace(in_flight, tx_hash=tx_hash))
            crashpoint("batch-sent")

        try:
            receipt = await self.bridge.commit_batch(self.key, call, on_sent=sent)
        except ExecutionReverted as err:
            store.set_batch_in_flight(None)
            log.warning("bridge refused batch %d..%d: %s", self.safe + 1, call.tz_block, err)
            return False
        crashpoint("batch-mined")
        record = BatchRecord(count, self.safe + 1, call.tz_block, call.new_root, call.new_cursor,
                             receipt.transaction_hash, receipt.block_number, len(call.data), len(call.withdrawals))
        store.record_batch(record, safe_head=call.tz_block)
        self.sequencer.retain_committed_root(call.new_root, call.tz_block)
        self._recorded = count + 1
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
