"""The batcher: posts TradeZone blocks to the bridge and tracks the safe and finalized heads.

Each step first reconciles with the bridge (the EVM chain is the truth: whatever a crash left
half-done, the bridge says which batches are committed), then, if blocks past the safe head
exist, posts the next batch: the blocks' compressed canonical data as calldata, the previous and
new state roots, the L1 message cursor and rolling hash it consumed, and the withdrawals it makes
claimable.

Several batches may be in flight at once (``max_pending``, default 4): each continues from the
one before it, so a busy sequencer fills an L1 block with several batches instead of one (a
batch carries at most 240 KiB; at about 72 compressed bytes per single-order transaction, one
batch per 1 s L1 block would carry only about 3,400 orders a second). Every batch takes
``commit_gas_bound`` as its gas limit; the first batch in flight is also run as a call against
the latest state, so a batch the bridge would refuse is caught before it is sent. A batch transaction not mined
``RESUBMIT_AFTER_BLOCKS`` L1 blocks after it was sent goes out again with the same nonce and
higher fees (a rising base fee leaves it behind otherwise). If a batch in flight fails,
every batch behind it fails too (its previous root never gets committed): all of them are
forgotten and planning starts again from the safe head.

Errors: an unreachable EVM chain is temporary (retry with backoff; the sequencer keeps producing
unsafe blocks); a bridge whose committed roots differ from the node's blocks is critical.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import msgspec

from node.evm.bridge import BatchInfo, BridgeClient, CommitBatchCall, WithdrawalEntry
from node.evm.l1 import (
    ExecutionReverted,
    L1Error,
    L1Receipt,
    NonceTooLow,
    ReceiptTimeout,
    ReplacementUnderpriced,
    SentTransaction,
    TransactionDropped,
)
from node.faults import crashpoint
from node.sequencer.batch_codec import encode_batch
from node.sequencer.chainstore import HEAD_FINALIZED, HEAD_SAFE, BatchRecord
from node.sequencer.errors import CriticalError
from node.sequencer.sequencer import Sequencer

log = logging.getLogger(__name__)

MAX_DATA = 240 * 1024  # the bridge accepts 256 KiB of batch data
MAX_WITHDRAWALS = 256  # the bridge's per-batch bound
MAX_PENDING = 4  # batches in flight at once
RECEIPT_TIMEOUT = 60.0  # seconds the oldest batch in flight may take to be mined before a retry
RESUBMIT_AFTER_BLOCKS = 3  # L1 blocks a batch transaction may wait before it goes out with higher fees
FEE_BUMP = (9, 8)  # a replacement pays at least 12.5% more (the EVM chains ask for 10%)
RECEIPT_POLL = 0.05


@dataclass
class BatchPlan:
    blocks: list[int]  # the block numbers it carries
    call: CommitBatchCall
    trades: int


@dataclass
class _Sent:
    """A batch sent and not yet seen committed."""

    plan: BatchPlan
    record: BatchRecord  # its in-flight record, with the latest transaction's hash
    txs: list[SentTransaction]  # every version sent (one nonce: at most one is mined)
    sent_at: int  # the L1 head when the latest version was sent
    mined: L1Receipt | None = None  # the receipt of the version mined, once seen


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
        max_pending: int = MAX_PENDING,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.sequencer = sequencer
        self.bridge = bridge
        self.key = sequencer_key
        self.progress = progress
        self.max_data = max_data
        self.max_pending = max_pending
        self._sent: list[_Sent] = []
        store = sequencer.store
        self.safe = store.head(HEAD_SAFE) or 0
        self.finalized = store.head(HEAD_FINALIZED) or 0
        self._recorded = sum(1 for _ in store.batches())
        self.frozen = False
        self._finalization_delay: int | None = None
        self._task: asyncio.Task[None] | None = None
        self.crashed: BaseException | None = None

    @property
    def in_flight(self) -> int:
        """Batches sent and not yet seen committed."""
        return len(self._sent)

    # --- reconciliation ---------------------------------------------------------------------

    async def sync(self) -> int:
        """Read the committed batches from the bridge; move the safe and finalized heads.

        Returns how many batches it recorded (batches this batcher sent, or, after a restart,
        batches sent before it).
        """
        store = self.sequencer.store
        count = await self.bridge.batch_count()
        if count == 0:
            root = await self.bridge.last_committed_root()
            if root != self.sequencer.genesis_header.state_root:
                raise CriticalError(
                    f"bridge genesis root 0x{root.hex()} is not TradeZone's genesis root "
                    f"0x{self.sequencer.genesis_header.state_root.hex()}"
                )
            return 0
        # Record every batch the bridge has that this node has not recorded yet: those of this
        # batcher that landed, and after a crash those sent before it.
        recorded = 0
        for index in range(self._recorded, count):
            info = await self.bridge.batch(index)
            header = store.get_header(info.tz_block)
            if header is None or header.state_root != info.state_root:
                raise CriticalError(
                    f"bridge batch {index} commits root 0x{info.state_root.hex()} at TradeZone block "
                    f"{info.tz_block}, which this node does not have"
                )
            if store.get_batch(index) is None:
                await self._record(index, info)
                recorded += 1
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
        return recorded

    async def _record(self, index: int, info: BatchInfo) -> None:
        """Record the committed batch ``index``, with its transaction when it is known to be the
        one that committed it, and say so if this batcher sent it."""
        store = self.sequencer.store
        previous = store.get_batch(index - 1) if index > 0 else None
        first = previous.last_block + 1 if previous is not None else self.safe + 1
        sent = self._sent[0] if self._sent and self._sent[0].record.index == index else None
        in_flight = sent.record if sent is not None else store.batch_in_flight(index)
        landed = b""
        if in_flight is not None and in_flight.tx_hash and (
            (in_flight.last_block, in_flight.state_root) == (info.tz_block, info.state_root)
        ):
            hashes = [tx.hash for tx in sent.txs] if sent is not None else [in_flight.tx_hash]
            known = {sent.mined.transaction_hash: sent.mined} if sent is not None and sent.mined else {}
            for tx_hash in hashes:
                receipt = known.get(tx_hash)
                if receipt is None:
                    try:
                        receipt = await self.bridge.l1.get_transaction_receipt(tx_hash)
                    except TransactionDropped:
                        continue
                if receipt is not None and receipt.status == 1 and receipt.block_number == info.l1_block:
                    landed = tx_hash
                    break
        if landed and in_flight is not None:
            record = msgspec.structs.replace(in_flight, first_block=first, l1_block=info.l1_block, tx_hash=landed)
        else:
            record = BatchRecord(index, first, info.tz_block, info.state_root, info.message_cursor, b"", info.l1_block)
        store.record_batch(record, safe_head=info.tz_block)
        self.sequencer.retain_committed_root(info.state_root, info.tz_block)
        if sent is None:
            return
        if not landed:
            # Another transaction (one sent before a restart) committed this index: every batch
            # this batcher has in flight continues from a root that is not committed.
            self._abandon(f"batch {index} was committed by another transaction")
            return
        self._sent.pop(0)
        self._say(
            f"TZ batch {index:>5}  blocks {record.first_block}..{record.last_block}  trades {sent.plan.trades:>6}  "
            f"withdrawals {record.withdrawals:>3}  root 0x{record.state_root.hex()[:12]}  "
            f"{record.data_size:>6} B  L1 block {record.l1_block} tx 0x{record.tx_hash.hex()[:12]}"
        )

    # --- building -----------------------------------------------------------------------------

    async def plan(self, after: int | None = None) -> BatchPlan | None:
        """The next batch: blocks after block ``after`` (default: the safe head), as many as fit
        the bridge's bounds, continuing from that block's state root."""
        seq = self.sequencer
        start = self.safe if after is None else after
        unsafe = seq.head.number
        if unsafe <= start:
            return None
        numbers: list[int] = []
        encoded: list[bytes] = []
        withdrawals: list[WithdrawalEntry] = []
        trades = 0
        raw_budget = self.max_data * 3
        raw_size = 0
        for number in range(start + 1, unsafe + 1):
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
        prev_root = (seq.store.get_header(start) or seq.genesis_header).state_root
        cursor = last_header.l1_cursor
        rolling = await self.bridge.rolling_hash_at(cursor - 1) if cursor > 0 else b"\x00" * 32
        call = CommitBatchCall(prev_root, last_header.state_root, last_header.number, cursor, rolling,
                               tuple(withdrawals), data)
        return BatchPlan(numbers, call, trades)

    # --- posting ------------------------------------------------------------------------------

    async def step(self) -> bool:
        """Reconcile, then post the next batch, if there is anything new, and wait for it.
        True if a batch landed. (One batch at a time; ``advance`` keeps several in flight.)"""
        return await self.advance(max_pending=1)

    async def advance(self, max_pending: int | None = None) -> bool:
        """Reconcile; send batches until ``max_pending`` (default: the batcher's) are in flight;
        wait for the oldest to be mined. True if at least one batch landed."""
        limit = max_pending or self.max_pending
        landed = await self.sync()
        if self.frozen or await self.bridge.frozen():
            if not self.frozen:
                self._say("bridge is frozen: no batch can be committed any more")
            self.frozen = True
            return landed > 0
        while len(self._sent) < limit and await self._send_next():
            pass
        if not self._sent:
            return landed > 0
        try:
            receipt = await self._wait_oldest()
        except TransactionDropped as err:
            self._abandon(f"transaction dropped: {err}")
            return landed > 0
        if receipt.status != 1:
            self._abandon(f"transaction 0x{receipt.transaction_hash.hex()} reverted")
            return landed > 0
        self._sent[0].mined = receipt  # _record credits the batch without asking for it again
        crashpoint("batch-mined")
        landed += await self.sync()
        return landed > 0

    async def _send_next(self) -> bool:
        """Plan the batch after the last one in flight and send it. False if there is nothing
        to send or the bridge refuses it at estimation."""
        tip = self._sent[-1].record.last_block if self._sent else self.safe
        plan = await self.plan(after=tip)
        if plan is None:
            return False
        call = plan.call
        store = self.sequencer.store
        index = self._recorded + len(self._sent)
        record = BatchRecord(index, tip + 1, call.tz_block, call.new_root, call.new_cursor, b"",
                             data_size=len(call.data), withdrawals=len(call.withdrawals))
        store.set_batch_in_flight(record)
        crashpoint("batch-planned")
        l1_head = await self.bridge.l1.block_number()
        try:
            sent = await self.bridge.submit_commit_batch(self.key, call, check=not self._sent)
        except ExecutionReverted as err:
            store.drop_batches_in_flight([index])
            log.warning("bridge refused batch %d..%d: %s", tip + 1, call.tz_block, err)
            return False
        record = msgspec.structs.replace(record, tx_hash=sent.hash)
        store.set_batch_in_flight(record)
        crashpoint("batch-sent")
        self._sent.append(_Sent(plan, record, [sent], l1_head))
        return True

    async def _wait_oldest(self) -> L1Receipt:
        """The receipt of whichever version of the oldest batch's transaction is mined.

        While it waits, every batch in flight whose transaction has not been mined
        ``RESUBMIT_AFTER_BLOCKS`` L1 blocks after it was sent goes out again with higher fees
        (same nonce and gas, so at most one version is mined). Raises ReceiptTimeout after
        ``RECEIPT_TIMEOUT`` seconds, TransactionDropped when the chain dropped every version.
        """
        l1 = self.bridge.l1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECEIPT_TIMEOUT
        oldest = self._sent[0]
        while True:
            dropped: list[str] = []
            for sent_tx in reversed(oldest.txs):
                try:
                    receipt = await l1.get_transaction_receipt(sent_tx.hash)
                except TransactionDropped as err:
                    dropped.append(str(err))
                    continue
                if receipt is not None:
                    return receipt
            if len(dropped) == len(oldest.txs):
                raise TransactionDropped("; ".join(dropped))
            head = await l1.block_number()
            for sent in list(self._sent):
                if head >= sent.sent_at + RESUBMIT_AFTER_BLOCKS:
                    await self._resubmit(sent, head)
            if loop.time() >= deadline:
                raise ReceiptTimeout(f"batch {oldest.record.index} not mined within {RECEIPT_TIMEOUT} s")
            await asyncio.sleep(RECEIPT_POLL)

    async def _resubmit(self, sent: _Sent, head: int) -> None:
        """Send the batch's transaction again with fees at least FEE_BUMP above the last ones and
        at least what the chain now suggests."""
        last = sent.txs[-1]
        suggested_max, suggested_priority = await self.bridge.l1.fee_suggestion()
        up, down = FEE_BUMP
        fees = (max(suggested_max, last.max_fee_per_gas * up // down + 1),
                max(suggested_priority, last.max_priority_fee_per_gas * up // down + 1))
        try:
            again = await self.bridge.submit_commit_batch(self.key, sent.plan.call, replacing=last, fees=fees)
        except (NonceTooLow, ReplacementUnderpriced) as err:
            # A version was mined meanwhile (its receipt shows on the next poll), or the chain
            # holds a version it prefers: nothing to replace now.
            log.info("batch %d: no replacement sent (%s)", sent.record.index, err)
            sent.sent_at = head
            return
        sent.txs.append(again)
        sent.sent_at = head
        sent.record = msgspec.structs.replace(sent.record, tx_hash=again.hash)
        self.sequencer.store.set_batch_in_flight(sent.record)
        log.warning("batch %d not mined after %d L1 blocks: sent again with max fee %d, priority fee %d (0x%s)",
                    sent.record.index, RESUBMIT_AFTER_BLOCKS, fees[0], fees[1], again.hash.hex())

    def _abandon(self, reason: str) -> None:
        """The oldest batch in flight failed, so every one behind it fails too: forget them all."""
        first, last = self._sent[0].record, self._sent[-1].record
        log.warning("batches %d..%d (blocks %d..%d) did not land (%s); planning again from the safe head",
                    first.index, last.index, first.first_block, last.last_block, reason)
        self.sequencer.store.drop_batches_in_flight([sent.record.index for sent in self._sent])
        self._sent.clear()

    async def run(self, interval: float = 0.5) -> None:
        backoff = interval
        while True:
            try:
                landed = await self.advance()
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
