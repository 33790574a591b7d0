"""The sequencer: admits signed actions, produces TradeZone blocks, hands them to the batcher.

Pipeline (each a small stage, as in op-node):

    tz_sendTransaction ─▶ recovery pool ─▶ admission ─▶ mempool ─┐
    bridge queue ─▶ InboxReader ─────────────────────────────────┼─▶ produce_block ─▶ ChainStore
                                                                  │        │
                                                                  │        └─▶ listeners (RPC, WS)
                                                                  └─▶ Batcher ─▶ bridge.commitBatch

Heads: ``unsafe`` (produced and durable), ``safe`` (its batch is committed on the bridge),
``finalized`` (its batch is past the bridge's finalization delay).

Durability: a block is written (block, receipts, indexes, unsafe head) in one atomic write
before anyone hears of it; on start the node replays its stored blocks from genesis with the
full ``state_transition`` (every root checked), so it resumes at the last durable block with the
same state root whatever moment a ``kill -9`` struck.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import select
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from node import __version__
from node.evm.l1 import L1Client, L1Error
from node.faults import crashpoint
from node.sequencer.admission import check_admission
from node.sequencer.chainstore import HEAD_FINALIZED, HEAD_SAFE, HEAD_UNSAFE, ChainStore
from node.sequencer.errors import CriticalError
from node.sequencer.inbox import InboxReader
from node.sequencer.mempool import Mempool, action_count
from node.sequencer.recovery import DECODE_AND_RECOVER, RECOVER, RecoveryPool
from node.tradezone.accounts import next_nonce
from node.tradezone.blocks import Block, Header, header_hash
from node.tradezone.eip712 import DEVNET_DOMAIN, Domain, attach_signers, decode_and_recover_many, recover_many
from node.tradezone.errors import BadSignature, InvalidTransaction
from node.tradezone.receipts import Receipt
from node.tradezone.state import State
from node.tradezone.state_transition import seal_block, state_transition
from node.tradezone.transactions import SignedTx, Transaction, decode_transaction, tx_hash
from proofs.engine import NotRetainedError, PruningUnsupportedError, UnknownRootError

log = logging.getLogger(__name__)
_Item = TypeVar("_Item")

# A snapshot is only read back by the code version and State layout that wrote it.
SNAPSHOT_FORMAT = (
    f"exos-snapshot/{__version__}/{','.join(sorted(State.__dataclass_fields__))}\n".encode()
)
# Below this many transactions, recovering in the event loop beats a round trip to the pool.
POOL_THRESHOLD = 64


@dataclass
class SequencerConfig:
    """How the sequencer runs. ``block_ms`` is the block interval; ``max_block_txs`` and
    ``max_block_actions`` cap a block's user transactions and the actions they carry, and
    ``max_block_bytes`` the encoded size of all its transactions (L1 messages included);
    ``workers`` is the size of the signature-recovery pool (0: recover in the event loop)."""

    block_ms: int = 100
    max_block_txs: int = 20_000
    # Bounds a block's work (orders of a PlaceOrders count one each), so that a backlog is
    # drained in blocks that each take about one interval instead of one block of seconds.
    max_block_actions: int = 10_000
    # A block must fit one batch: the batcher carries at most 240 KiB of compressed data and a
    # block cannot be split across batches. Signatures do not compress, so the bound is on the
    # raw encodings, with room for the block header and the RLP item headers.
    max_block_bytes: int = 200 * 1024
    mempool_total: int = 200_000
    mempool_per_account: int = 20_000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    l1_confirmations: int = 0
    l1_poll_s: float = 0.25
    retained_batch_roots: int = 16
    snapshot_every: int = 1000
    # Also snapshot once this many actions (``action_count``; an L1 message counts one) were applied
    # since the last snapshot, so a restart replays a bounded amount of work however busy the blocks
    # were: about 50 s at the ~21,000 actions/s bench_state_transition measures, where 1,000 blocks
    # of 10,000 actions would take about 8 minutes. A snapshot is not free either (a state of
    # 100,000 accounts after 100,000 actions pickles in about 2 s of CPU to 188 MB), hence not less.
    snapshot_actions: int = 1_000_000
    # Lifetimes one prune slice handles (0: whole prunes at once). The pruner task runs slices
    # back to back, yielding to the event loop between them, so a slice is the longest stretch
    # for which pruning holds up requests and blocks (about 1 µs per lifetime).
    prune_step: int = 4_000
    # Inside a running event loop, write periodic snapshots from a forked child (the state is
    # pickled there, copy-on-write), so the block loop does not stop for seconds each time.
    background_snapshots: bool = True
    snapshot_timeout_s: float = 600.0  # a snapshot child silent this long is killed
    # Keep the cyclic collector's full passes off the block loop (see ``CollectorPolicy``). Off by
    # default because it changes the whole process's collector (the node's entry points set it).
    manage_gc: bool = False


BlockListener = Callable[[Block, list[Receipt]], Awaitable[None] | None]


class CollectorPolicy:
    """Keeps Python's cyclic garbage collector from stalling the block loop.

    A full collection walks every tracked object: with a large TradeZone state (hundreds of
    thousands of resting orders) that is hundreds of milliseconds during which no request is
    read and no block is produced. So, after each block, the young generations are collected
    (a few thousand objects) and every survivor is moved to the permanent generation
    (``gc.freeze``), which automatic collections never walk; the long-lived set the collector
    scans stays as small as one block's survivors. Cyclic garbage among frozen objects would
    never be reclaimed, so every ``full_every`` blocks the whole heap is unfrozen, collected and
    frozen again: one full pause at a known moment (with the state snapshot) instead of pauses
    at random ones.

    The collector is paused from the start of each block (``pause``) to ``after_block``, so a
    block's survivors are walked once, by ``after_block``: ``apply_block`` skips its own young pass
    when it finds the collector already off, and no automatic pass starts in between.
    """

    def __init__(self, full_every: int) -> None:
        self.full_every = max(1, full_every)
        self.last_full_ms = 0.0

    def start(self) -> None:
        gc.collect()
        gc.freeze()

    def pause(self) -> None:
        gc.disable()

    def resume(self) -> None:
        gc.enable()

    def after_block(self, number: int) -> None:
        gc.enable()
        if number % self.full_every == 0:
            started = time.perf_counter()
            gc.unfreeze()
            gc.collect()
            self.last_full_ms = (time.perf_counter() - started) * 1000
            log.info("full garbage collection at TradeZone block %d took %.0f ms", number, self.last_full_ms)
        else:
            gc.collect(1)
        gc.freeze()

    def stop(self) -> None:
        gc.unfreeze()


class InclusionWaiter:
    """Futures of callers waiting for their transaction's receipt (``waitForInclusion``)."""

    def __init__(self) -> None:
        self._waiting: dict[bytes, list[asyncio.Future[tuple[int, int]]]] = {}

    def wait(self, hash_: bytes) -> asyncio.Future[tuple[int, int]]:
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(hash_, []).append(future)
        return future

    def resolve(self, hashes: Sequence[bytes], number: int) -> None:
        if not self._waiting:
            return
        for index, hash_ in enumerate(hashes):
            for future in self._waiting.pop(hash_, ()):
                if not future.done():
                    future.set_result((number, index))


class Sequencer:
    """Owns the TradeZone state, the mempool, the chain store and the block loop."""

    def __init__(
        self,
        store: ChainStore,
        genesis: Callable[[], tuple[State, Header]],
        l1: L1Client,
        bridge: bytes,
        config: SequencerConfig | None = None,
        domain: Domain = DEVNET_DOMAIN,
    ) -> None:
        self.store = store
        self.l1 = l1
        self.bridge = bridge
        self.config = config or SequencerConfig()
        self.domain = domain
        self._genesis = genesis
        self.state: State
        self.head: Header
        self.genesis_header: Header
        self.mempool = Mempool(self.config.mempool_total, self.config.mempool_per_account)
        self.inbox = InboxReader(l1, bridge, confirmations=self.config.l1_confirmations)
        self.waiters = InclusionWaiter()
        self.listeners: list[BlockListener] = []
        self.l1_reachable = True
        self._pool: RecoveryPool | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.crashed: BaseException | None = None
        self._retained: list[bytes] = []
        self._prune_due = False  # a batch released roots: the pruner starts a prune round
        self._prune_wake: asyncio.Event | None = None  # the pruner's, while it runs
        self._unsafe_roots: deque[tuple[int, bytes]] = deque()  # (block, root) above the safe head
        self._opened = False
        self._snapshot_task: asyncio.Future[None] | None = None
        self._actions_since_snapshot = 0
        self.snapshots_written = 0
        self.collector = CollectorPolicy(self.config.snapshot_every) if self.config.manage_gc else None

    # --- opening ------------------------------------------------------------------------------

    def open(self) -> None:
        """Rebuild the state and point the inbox after the head's L1 origin.

        The state starts from the newest stored snapshot whose root equals its block's header
        (or from genesis), then every later stored block is replayed with the full
        ``state_transition`` (every root checked) and its receipts compared with the stored ones.
        """
        state, genesis_header = self._genesis()
        self.genesis_header = genesis_header
        stored_genesis = self.store.get_header(0)
        if stored_genesis is None:
            self.store.put_block(Block(genesis_header, ()), [])
        elif stored_genesis != genesis_header:
            raise CriticalError("the data directory holds a different TradeZone genesis")
        head = genesis_header
        unsafe = self.store.head(HEAD_UNSAFE) or 0
        snapshot = self._load_snapshot(unsafe)
        if snapshot is not None:
            state, head = snapshot
        for block in self.store.iter_blocks(head.number + 1, unsafe):
            receipts = state_transition(state, head, block, self.domain)
            if receipts != self.store.get_receipts(block.header.number):
                raise CriticalError(f"stored receipts of block {block.header.number} differ from its replay")
            head = block.header
        if head.number != unsafe:
            raise CriticalError(f"unsafe head {unsafe} but blocks stop at {head.number}")
        self.state = state
        self.head = head
        self.inbox.reset(head.l1_origin, state.system.l1_next_index, state.system.l1_rolling_hash)
        self._reset_retention()
        self._opened = True

    def _load_snapshot(self, unsafe: int) -> tuple[State, Header] | None:
        """The stored snapshot's state and header, if it is usable: at or below the unsafe head,
        and its trie root equal to the state root of the stored header it claims."""
        found = self.store.get_snapshot()
        if found is None:
            return None
        number, blob = found
        header = self.store.get_header(number)
        if number > unsafe or header is None or not blob.startswith(SNAPSHOT_FORMAT):
            return None  # another code version's snapshot: replay from genesis instead
        try:
            state = pickle.loads(blob[len(SNAPSHOT_FORMAT):])
        except Exception:  # a damaged snapshot costs a longer replay, nothing else
            log.warning("TradeZone snapshot of block %d is unreadable; replaying from genesis", number)
            return None
        if not isinstance(state, State) or state.trie.root != header.state_root:
            log.warning("TradeZone snapshot of block %d does not match its header; replaying from genesis", number)
            return None
        return state, header

    def write_snapshot(self) -> None:
        """Store the state at the head (one put: the previous snapshot stays until it lands), so a
        restart replays only the blocks after it."""
        self.store.put_snapshot(self.head.number,
                                SNAPSHOT_FORMAT + pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL))
        self.snapshots_written += 1

    def start_snapshot(self) -> bool:
        """Snapshot the state at the head without stopping the block loop, where possible; False
        if it was not started because the previous one is still being written.

        Inside a running event loop (and with ``background_snapshots``) a forked child pickles
        its copy-on-write image of the state into a pipe and exits; a thread reads the pipe,
        checks the child's exit status and stores the snapshot. Until it lands the previous
        snapshot stays, so a crash at any moment leaves a usable one. One snapshot at a time: a
        due one is skipped while the last is still being written. Elsewhere: ``write_snapshot``.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not self.config.background_snapshots or not hasattr(os, "fork"):
            self.write_snapshot()
            return True
        if self._snapshot_task is not None and not self._snapshot_task.done():
            return False
        number = self.head.number
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: pickle, write, exit without running any of the parent's cleanup
            code = 1
            try:
                os.close(read_fd)
                view = memoryview(SNAPSHOT_FORMAT + pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL))
                while view:
                    view = view[os.write(write_fd, view):]
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        self._snapshot_task = loop.run_in_executor(None, self._collect_snapshot, pid, read_fd, number)
        return True

    def _collect_snapshot(self, pid: int, read_fd: int, number: int) -> None:
        """(In a thread.) Read a snapshot child's output, reap it, store the snapshot if whole.
        A child that sends nothing for ``snapshot_timeout_s`` is killed (a stuck child must not
        stop every later snapshot)."""
        chunks: list[bytes] = []
        stuck = False
        try:
            while True:
                ready, _, _ = select.select([read_fd], [], [], self.config.snapshot_timeout_s)
                if not ready:
                    stuck = True
                    os.kill(pid, signal.SIGKILL)
                    break
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(read_fd)
            _pid, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if stuck or code != 0:
            log.warning("snapshot of block %d failed (%s); the previous one stays", number,
                        "the child was stuck and was killed" if stuck else f"child exit code {code}")
            return
        self.store.put_snapshot(number, b"".join(chunks))
        self.snapshots_written += 1

    async def wait_snapshot(self) -> None:
        """Wait until a snapshot being written in the background has landed (or failed)."""
        task = self._snapshot_task
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        self._snapshot_task = None

    def _reset_retention(self) -> None:
        """Hold exactly what must stay provable after opening: the last ``retained_batch_roots``
        committed roots and the root of every block above the safe head (any of them may end the
        next batch). Whatever the loaded snapshot held is released first, so counts never drift
        across restarts; then one prune frees the rest."""
        trie = self.state.trie
        for root in trie.retained_roots():  # type: ignore[attr-defined]
            with contextlib.suppress(NotRetainedError):
                while True:  # retains are counted: release every one
                    trie.release(root)  # type: ignore[attr-defined]
        records = sorted(self.store.batches(), key=lambda record: record.index)
        self._retained = []
        for record in records[-self.config.retained_batch_roots:]:
            try:
                trie.retain(record.state_root)  # type: ignore[attr-defined]
            except UnknownRootError:
                log.warning("committed root 0x%s of batch %d is no longer provable here",
                            record.state_root.hex(), record.index)
                continue
            self._retained.append(record.state_root)
        self._unsafe_roots = deque()
        safe = records[-1].last_block if records else 0
        for number in range(safe + 1, self.head.number + 1):
            header = self.store.get_header(number)
            if header is not None:
                self._hold_unsafe_root(number, header.state_root)
        self._prune()

    def _hold_unsafe_root(self, number: int, root: bytes) -> None:
        """Keep the root of block ``number`` (above the safe head) until a batch covers it: if a
        batch ends at this block, its root must still be provable when the batch commits."""
        try:
            self.state.trie.retain(root)  # type: ignore[attr-defined]
        except UnknownRootError:
            return  # a root this engine no longer holds (its nodes may be gone): nothing to keep
        self._unsafe_roots.append((number, root))

    def _prune(self, max_records: int | None = None) -> None:
        try:
            self.state.trie.prune(max_records)  # type: ignore[attr-defined]
        except PruningUnsupportedError:
            pass  # an engine that keeps every node (tests, short-lived replays): nothing to free

    def prune_step(self) -> bool:
        """Start a prune round if a batch released roots since the last one, or go on with the open
        round, by ``prune_step`` lifetimes. True while there is more to do."""
        if self._prune_due or getattr(self.state.trie, "pruning", False):
            self._prune_due = False
            self._prune(self.config.prune_step or None)
        return self._prune_due or bool(getattr(self.state.trie, "pruning", False))

    async def _prune_loop(self) -> None:
        """Free what committed batches released, a slice at a time, resting after each slice for
        as long as the slice took: requests and the block loop wait at most one slice for it,
        however many nodes a batch frees and however many batches land at once, and a backlog of
        pruning takes at most half of the event loop (yielding with no rest, it took a slice at
        every turn of the loop, ahead of answers and requests that had been ready for longer)."""
        loop = asyncio.get_running_loop()
        wake = self._prune_wake = asyncio.Event()
        wake.set()  # a round left open by the previous run goes on
        while True:
            await wake.wait()
            wake.clear()
            try:
                while True:
                    started = loop.time()
                    if not self.prune_step():
                        break
                    await asyncio.sleep(loop.time() - started)
            except Exception:  # a fault in freeing must not stop the node; the next batch retries
                log.exception("pruning the state trie failed")

    def retain_committed_root(self, root: bytes, number: int) -> None:
        """Keep ``root`` (the root the bridge committed for TradeZone block ``number``) provable,
        release the oldest committed root beyond ``retained_batch_roots`` and the held roots of
        the blocks the batch covered, and prune every trie node no retained or current root
        reaches, so that memory stays bounded however long the node runs. Escapes prove against
        the last committed root, which is always among the retained ones."""
        trie = self.state.trie
        if root not in self._retained:
            try:
                trie.retain(root)  # type: ignore[attr-defined]
                self._retained.append(root)
            except UnknownRootError:
                log.error("committed root 0x%s is not held by this node's trie", root.hex())
        while len(self._retained) > self.config.retained_batch_roots:
            trie.release(self._retained.pop(0))  # type: ignore[attr-defined]
        held = self._unsafe_roots
        while held and held[0][0] <= number:
            trie.release(held.popleft()[1])  # type: ignore[attr-defined]
        self._prune_due = True  # the pruner frees it, in slices
        if self._prune_wake is not None:
            self._prune_wake.set()

    # --- admission ----------------------------------------------------------------------------

    async def submit(self, raws: Sequence[bytes]) -> list[bytes | InvalidTransaction]:
        """Decode, recover and admit raw signed transactions; for each, its hash or the named
        error that refused it. The state is never changed here."""
        if len(raws) >= POOL_THRESHOLD and self._pool is not None:
            decoded = await self._pool.map(DECODE_AND_RECOVER, raws)
        else:
            decoded = decode_and_recover_many(raws, self.domain)
        # The recovery workers hash each transaction once; the hash travels with it (tx_hash caches).
        return [item if isinstance(item, InvalidTransaction) else self._admit(item) for item in decoded]

    async def submit_transactions(self, txs: Sequence[SignedTx]) -> list[bytes | InvalidTransaction]:
        """Admit already-decoded transactions (the SDK and tests), recovering their signers."""
        if len(txs) >= POOL_THRESHOLD and self._pool is not None:
            attach_signers(txs, await self._pool.map(RECOVER, txs), self.domain)
        else:
            attach_signers(txs, recover_many(txs, self.domain), self.domain)
        results: list[bytes | InvalidTransaction] = []
        for tx in txs:
            if tx.cached_signer(self.domain.separator) is None:
                results.append(BadSignature("no key recovers from the signature"))
            else:
                results.append(self._admit(tx))
        return results

    def _admit(self, tx: SignedTx) -> bytes | InvalidTransaction:
        signer = tx.cached_signer(self.domain.separator)
        if signer is None:
            return BadSignature("no key recovers from the signature")
        hash_ = tx_hash(tx)
        try:
            self.mempool.check_room(hash_, tx.account)
            pending_next = self.mempool.next_nonce(signer, next_nonce(self.state, signer))
            check_admission(self.state, tx, signer, pending_next)
            self.mempool.add(hash_, tx, signer, room_checked=True)
        except InvalidTransaction as err:
            return err
        return hash_

    # --- blocks -------------------------------------------------------------------------------

    def produce_block(self, now_ms: int) -> tuple[Block, list[Receipt]] | None:
        """Seal the next block from the due L1 messages and the pending transactions, store it
        durably, then tell the listeners. None if there is nothing to include.

        With a collector policy (``manage_gc``) the collector stays paused after a block is
        produced until the caller runs ``collector.after_block`` (the block loop does)."""
        messages, used = self.inbox.take(self.config.max_block_bytes)
        taken = self.mempool.take(self.config.max_block_txs, self.config.max_block_actions,
                                  self.config.max_block_bytes - used, at_least_one=not messages)
        if not messages and not taken:
            return None
        parent = self.head
        transactions: list[Transaction] = [*messages, *(tx for _hash, tx in taken)]
        timestamp = max(now_ms, parent.timestamp_ms + 1)
        l1_origin = max(self.inbox.scanned_to, parent.l1_origin)
        if self.collector is not None:
            self.collector.pause()  # until after_block (the block loop's), which walks the survivors once
        try:
            block, receipts = seal_block(self.state, parent, transactions, timestamp, l1_origin, self.domain)
            crashpoint("block-sealed")
            hashes = [tx_hash(message) for message in messages] + [hash_ for hash_, _tx in taken]
            self.store.put_block(block, receipts, tx_hashes=hashes)
            crashpoint("block-stored")
        except BaseException:
            if self.collector is not None:
                self.collector.resume()
            raise
        self.head = block.header
        self._hold_unsafe_root(block.header.number, block.header.state_root)
        self._actions_since_snapshot += len(messages) + sum(action_count(tx) for _hash, tx in taken)
        periodic = block.header.number % self.config.snapshot_every == 0
        if periodic or self._actions_since_snapshot >= self.config.snapshot_actions:
            if self.start_snapshot():
                self._actions_since_snapshot = 0
            elif periodic:  # (a snapshot due by actions is tried again at the next block, quietly)
                log.warning("snapshot of block %d skipped: the previous one is still being written",
                            block.header.number)
        self.waiters.resolve(hashes, block.header.number)
        return block, receipts

    async def _notify(self, block: Block, receipts: list[Receipt]) -> None:
        for listener in list(self.listeners):
            try:
                result = listener(block, receipts)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("block listener failed on TradeZone block %d", block.header.number)

    # --- service ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the state, start the recovery pool, the inbox poller and the block loop."""
        self.open()
        if self.config.workers > 0:
            self._pool = RecoveryPool(self.config.workers, self.domain)
            self._pool.start()
        if self.collector is not None:
            self.collector.start()
        self._tasks = [
            asyncio.create_task(self._inbox_loop(), name="tz-inbox"),
            asyncio.create_task(self._block_loop(), name="tz-blocks"),
            asyncio.create_task(self._prune_loop(), name="tz-prune"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._prune_wake = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        await self.wait_snapshot()
        if self._opened:
            self.write_snapshot()
        if self.collector is not None:
            self.collector.stop()

    async def _inbox_loop(self) -> None:
        backoff = self.config.l1_poll_s
        while True:
            try:
                while await self.inbox.poll():
                    pass
                self.l1_reachable = True
                backoff = self.config.l1_poll_s
            except L1Error as err:
                if self.l1_reachable:
                    log.warning("EVM chain unreachable (%s); producing unsafe blocks and retrying", err)
                self.l1_reachable = False
                backoff = min(backoff * 2, 5.0)
            except CriticalError as err:
                self.crashed = err
                log.critical("inbox stopped: %s", err)
                return
            await asyncio.sleep(backoff)

    async def _block_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.block_ms / 1000
        deadline = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            produced = self.produce_block(int(time.time() * 1000))
            if produced is not None:
                try:
                    await self._notify(*produced)
                finally:
                    if self.collector is not None:
                        self.collector.after_block(produced[0].header.number)
            deadline += interval
            if deadline < loop.time():
                deadline = loop.time()

    # --- reads --------------------------------------------------------------------------------

    def heads(self) -> dict[str, int]:
        return {
            "unsafe": self.head.number,
            "safe": self.store.head(HEAD_SAFE) or 0,
            "finalized": self.store.head(HEAD_FINALIZED) or 0,
        }

    def block_hash(self, header: Header) -> bytes:
        return header_hash(header)

    def transaction_by_hash(self, hash_: bytes) -> tuple[Transaction, Header, int] | None:
        """A stored transaction with its block's header and its index in the block, decoding no
        other transaction of the block (a lookup costs the same in a block of 10,000)."""
        return self._stored_by_hash(hash_, self.store.get_transaction)

    def receipt_by_hash(self, hash_: bytes) -> tuple[Receipt, Header, int] | None:
        """A stored transaction's receipt with its block's header and its index in the block,
        decoding no transaction and no other receipt of the block."""
        return self._stored_by_hash(hash_, self.store.get_receipt)

    def _stored_by_hash(self, hash_: bytes, read: Callable[[int, int], _Item | None]) -> tuple[_Item, Header, int] | None:
        located = self.store.locate_transaction(hash_)
        if located is None:
            return None
        number, index = located
        header = self.store.get_header(number)
        item = read(number, index) if header is not None else None
        return None if header is None or item is None else (item, header, index)


def pruning_genesis(path: str | None = None) -> Callable[[], tuple[State, Header]]:
    """A genesis factory for a long-running sequencer: the state's trie records node lifetimes so
    that ``retain_committed_root`` can prune what no retained root reaches."""
    from node.tradezone.genesis import (
        DEVNET_GENESIS_PATH,
        build_genesis_state,
        genesis_header,
        load_genesis_spec,
    )
    from proofs.engine import CommitEngine
    from proofs.store import MemoryStore

    def build() -> tuple[State, Header]:
        spec = load_genesis_spec(path or DEVNET_GENESIS_PATH)
        state = build_genesis_state(spec, trie=CommitEngine(MemoryStore(), pruning=True))
        return state, genesis_header(state, spec)

    return build


def decode_user_transaction(raw: bytes) -> SignedTx:
    """Decode raw bytes that must be a user transaction (L1 messages never come from users)."""
    tx = decode_transaction(raw)
    if not isinstance(tx, SignedTx):
        raise InvalidTransaction("L1 messages are system transactions, not user transactions")
    return tx
