"""Live data of the tz_* RPC: the recent-trades ring and the WebSocket subscriptions.

Both are fed by one sequencer block listener, ``Feed.on_block``, which only appends the block
to a queue and wakes the feed's task: block production never waits for a subscriber. The task
then publishes, per block:

- ``newHeads``: the header;
- ``trades`` of a market: the block's fills in that market;
- ``book`` of a market at a depth: the aggregated levels, when they differ from the last ones
  sent (a subscriber gets a snapshot first);
- ``account``: the account view (tz_getAccount's shape) when the block touched the account and
  the view differs from the last one sent (a snapshot first).

Every WebSocket connection (``Session``) has a bounded send queue; a notification that does not
fit closes the connection with code 1008 and reason "slow consumer". A dropped subscriber loses
its subscriptions; nothing it does can hold the feed or the sequencer back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web

from node.sequencer.chainstore import ChainStore, header_of_encoded_block, transaction_encodings
from node.tradezone.blocks import Block, Header, header_hash
from node.tradezone.hashing import keccak256
from node.tradezone.receipts import REMOVED_FORCED, REMOVED_RESOLVED, REMOVED_UNFUNDED, FillEvent, Receipt
from node.tradezone.transactions import OracleUpdate, ResolveMarket, SignedTx, tx_hash
from node.tzrpc.codec import header_to_json, hex_bytes
from node.tzrpc.views import touched_accounts

log = logging.getLogger(__name__)

SLOW_CONSUMER = "slow consumer"
CLOSE_SLOW_CONSUMER = int(WSCloseCode.POLICY_VIOLATION)  # 1008
DEFAULT_TRADES_PER_MARKET = 1000
DEFAULT_SEED_BLOCKS = 10_000
MAX_PENDING_BLOCKS = 1024
_FOREIGN_REMOVALS = (REMOVED_UNFUNDED, REMOVED_RESOLVED, REMOVED_FORCED)

_encoder = msgspec.json.Encoder()
_T = TypeVar("_T")


# --------------------------------------------------------------------------- recent trades


@dataclass(frozen=True, slots=True)
class Trade:
    """One fill, where it happened."""

    block_number: int
    timestamp_ms: int
    transaction_hash: bytes
    fill: FillEvent

    def to_json(self) -> dict[str, Any]:
        f = self.fill
        return {
            "blockNumber": self.block_number,
            "timestampMs": self.timestamp_ms,
            "transactionHash": hex_bytes(self.transaction_hash),
            "marketId": f.market_id,
            "price": f.price,
            "size": f.size,
            "takerSide": "buy" if f.book_side == 0 else "sell",
            "makerOrderId": f.maker_order_id,
            "takerOrderId": f.taker_order_id,
            "maker": hex_bytes(f.maker),
            "taker": hex_bytes(f.taker),
            "makerFee": str(f.maker_fee),
            "takerFee": str(f.taker_fee),
            "kind": ("trade", "mint", "merge")[f.kind] if 0 <= f.kind < 3 else f.kind,
        }


def block_trades(block: Block, receipts: list[Receipt]) -> list[Trade]:
    """Every fill of a block, in execution order."""
    return _trades(block.header, zip(block.transactions, receipts, strict=True), tx_hash)


def stored_block_trades(encoded: bytes, receipts: list[Receipt]) -> list[Trade]:
    """``block_trades`` of a block from its stored encoding: no transaction is decoded, and only
    those with fills are hashed (a transaction's hash is the keccak of its encoding)."""
    pairs = zip(transaction_encodings(encoded), receipts, strict=True)
    return _trades(header_of_encoded_block(encoded), pairs, keccak256)


def _trades(header: Header, pairs: Iterable[tuple[_T, Receipt]], hash_of: Callable[[_T], bytes]) -> list[Trade]:
    trades: list[Trade] = []
    for tx, receipt in pairs:
        if receipt.fills:
            hash_ = hash_of(tx)
            trades.extend(Trade(header.number, header.timestamp_ms, hash_, fill) for fill in receipt.fills)
    return trades


class TradeRing:
    """The last ``per_market`` fills of every market, in memory, newest last."""

    def __init__(self, per_market: int = DEFAULT_TRADES_PER_MARKET) -> None:
        self.per_market = per_market
        self._rings: dict[int, deque[Trade]] = {}

    def add(self, trades: Iterable[Trade]) -> None:
        for trade in trades:
            ring = self._rings.get(trade.fill.market_id)
            if ring is None:
                ring = self._rings[trade.fill.market_id] = deque(maxlen=self.per_market)
            ring.append(trade)

    def recent(self, market_id: int, limit: int) -> list[Trade]:
        """Up to ``limit`` most recent fills of a market, newest first."""
        ring = self._rings.get(market_id)
        if not ring:
            return []
        count = min(limit, len(ring))
        return [ring[-1 - i] for i in range(count)]

    def seed(self, store: ChainStore, head: int, max_blocks: int = DEFAULT_SEED_BLOCKS) -> int:
        """Fill the ring from the stored receipts of up to ``max_blocks`` blocks before ``head``
        (inclusive), oldest first, so the newest stay. Returns the number of blocks read."""
        first = max(1, head - max_blocks + 1)
        read = 0
        for number in range(first, head + 1):
            encoded = store.get_encoded_block(number)
            if encoded is None:
                break
            self.add(stored_block_trades(encoded, store.get_receipts(number) or []))
            read += 1
        return read


# --------------------------------------------------------------------------- sessions


class Session:
    """One WebSocket connection: a bounded queue of outgoing frames drained by a writer task."""

    def __init__(self, ws: web.WebSocketResponse, queue_size: int, close_timeout: float,
                 abort_after: float) -> None:
        self.ws = ws
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_size)
        self.close_timeout = close_timeout
        self.abort_after = abort_after
        self.closing = False
        self.close_reason: str | None = None
        self.subscriptions: set[str] = set()
        self.on_drop: Callable[[Session], None] | None = None
        self.on_gone: Callable[[Session], None] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._closer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="tz-ws-writer")

    def send(self, payload: bytes) -> bool:
        """Queue a frame; a full queue drops the connection as a slow consumer. False if the
        frame was not queued."""
        if self.closing:
            return False
        try:
            self.queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.drop(SLOW_CONSUMER, CLOSE_SLOW_CONSUMER)
            return False
        return True

    async def _write_loop(self) -> None:
        ws = self.ws
        while True:
            payload = await self.queue.get()
            try:
                await ws.send_frame(payload, WSMsgType.TEXT)
            except (ConnectionError, RuntimeError):
                self.drop("connection lost", int(WSCloseCode.GOING_AWAY))
                return

    def drop(self, reason: str, code: int) -> None:
        """Close the connection with ``code`` and ``reason`` (once); its subscriptions end now."""
        if self.closing:
            return
        self.closing = True
        self.close_reason = reason
        if self.on_drop is not None:
            self.on_drop(self)
        if self._writer is not None:
            self._writer.cancel()
        self._closer = asyncio.create_task(self._close(code, reason), name="tz-ws-close")

    async def _close(self, code: int, reason: str) -> None:
        # The close frame goes into the transport's buffer behind the frames already written
        # (those still in the queue are dropped), so a peer that reads again sees them, then the
        # code and the reason. A peer that never reads cannot hold the socket (and its buffer)
        # past ``abort_after``.
        transport = self.ws._req.transport if self.ws._req is not None else None
        try:
            with contextlib.suppress(TimeoutError, ConnectionError, RuntimeError):
                await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()), self.close_timeout)
            await asyncio.sleep(self.abort_after)
            if transport is not None and transport.get_write_buffer_size() > 0:
                transport.abort()
        finally:
            if self.on_gone is not None:
                self.on_gone(self)

    def cancel_close(self) -> None:
        """Stop waiting to abort the socket (the server is shutting down)."""
        if self._closer is not None:
            self._closer.cancel()

    async def finish(self) -> None:
        """Stop the writer (the connection has ended)."""
        if not self.closing and self.on_gone is not None:
            self.on_gone(self)
        self.closing = True
        if self.on_drop is not None:
            self.on_drop(self)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer


# --------------------------------------------------------------------------- subscriptions

TOPIC_HEADS = "newHeads"
TOPIC_TRADES = "trades"
TOPIC_BOOK = "book"
TOPIC_ACCOUNT = "account"
TOPICS = (TOPIC_HEADS, TOPIC_TRADES, TOPIC_BOOK, TOPIC_ACCOUNT)

Key = tuple[Any, ...]  # ("newHeads",) | ("trades", market) | ("book", market, depth) | ("account", address)


@dataclass(slots=True)
class Subscription:
    sub_id: str
    session: Session
    key: Key


@dataclass(slots=True)
class _Topic:
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    last: bytes | None = None  # fingerprint of the last snapshot published (book, account)


def notification(sub_id: str, result: bytes) -> bytes:
    """A ``tz_subscription`` notification around an already encoded result."""
    return b'{"jsonrpc":"2.0","method":"tz_subscription","params":{"subscription":"' + sub_id.encode() + \
        b'","result":' + result + b"}}"


class Feed:
    """Subscriptions and the recent-trades ring, published from one task per block."""

    def __init__(
        self,
        snapshot_book: Callable[[int, int], Any],
        snapshot_account: Callable[[bytes], Any],
        trades: TradeRing,
    ) -> None:
        self.snapshot_book = snapshot_book
        self.snapshot_account = snapshot_account
        self.trades = trades
        self.topics: dict[Key, _Topic] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._pending: deque[tuple[Block, list[Receipt]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.skipped_blocks = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tz-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def on_block(self, block: Block, receipts: list[Receipt]) -> None:
        """The sequencer listener: record the block's trades and queue it for publishing.
        Constant work per block apart from copying its fills; never waits."""
        self.trades.add(block_trades(block, receipts))
        if not self.subscriptions:
            return
        if len(self._pending) >= MAX_PENDING_BLOCKS:
            self._pending.popleft()
            self.skipped_blocks += 1
        self._pending.append((block, receipts))
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                block, receipts = self._pending.popleft()
                try:
                    self.publish(block, receipts)
                except Exception:
                    log.exception("publishing TradeZone block %d failed", block.header.number)
                await asyncio.sleep(0)

    # --- subscribing ----------------------------------------------------------------------------

    def subscribe(self, session: Session, key: Key) -> tuple[str, bytes | None]:
        """Add a subscription; returns its id and the snapshot notification to send after the
        subscribe answer (book and account topics), or None."""
        sub_id = "0x" + secrets.token_hex(8)
        subscription = Subscription(sub_id, session, key)
        topic = self.topics.get(key)
        if topic is None:
            topic = self.topics[key] = _Topic()
        topic.subscriptions[sub_id] = subscription
        self.subscriptions[sub_id] = subscription
        session.subscriptions.add(sub_id)
        snapshot = self._snapshot(key)
        if snapshot is None:
            return sub_id, None
        if topic.last is None:
            topic.last = snapshot[0]
        return sub_id, notification(sub_id, snapshot[1])

    def unsubscribe(self, session: Session, sub_id: str) -> bool:
        """End one of the session's subscriptions; False if it has no such subscription."""
        subscription = self.subscriptions.get(sub_id)
        if subscription is None or subscription.session is not session:
            return False
        del self.subscriptions[sub_id]
        session.subscriptions.discard(sub_id)
        topic = self.topics.get(subscription.key)
        if topic is not None:
            topic.subscriptions.pop(sub_id, None)
            if not topic.subscriptions:
                del self.topics[subscription.key]
        return True

    def drop_session(self, session: Session) -> None:
        for sub_id in list(session.subscriptions):
            self.unsubscribe(session, sub_id)

    def _snapshot(self, key: Key) -> tuple[bytes, bytes] | None:
        """(fingerprint, encoded view) of a book or account topic; the fingerprint leaves the
        block number out, so an unchanged book or account is not sent again."""
        if key[0] == TOPIC_BOOK:
            view = self.snapshot_book(key[1], key[2])
        elif key[0] == TOPIC_ACCOUNT:
            view = self.snapshot_account(key[1])
        else:
            return None
        number = view.pop("blockNumber", None)
        fingerprint = _encoder.encode(view)
        view["blockNumber"] = number
        return fingerprint, _encoder.encode(view)

    # --- publishing -----------------------------------------------------------------------------

    def _fan_out(self, topic: _Topic, result: bytes) -> None:
        for subscription in list(topic.subscriptions.values()):
            subscription.session.send(notification(subscription.sub_id, result))

    def publish(self, block: Block, receipts: list[Receipt]) -> None:
        """Send one block's notifications to every subscriber of every topic it concerns."""
        topics = self.topics
        heads = topics.get((TOPIC_HEADS,))
        if heads is not None:
            self._fan_out(heads, _encoder.encode(header_to_json(block.header)))
        fills = [fill for receipt in receipts for fill in receipt.fills]
        by_market: dict[int, list[dict[str, Any]]] = {}
        if fills:
            header = block.header
            for trade in block_trades(block, receipts):
                by_market.setdefault(trade.fill.market_id, []).append(trade.to_json())
            for market_id, items in by_market.items():
                topic = topics.get((TOPIC_TRADES, market_id))
                if topic is not None:
                    self._fan_out(topic, _encoder.encode({
                        "blockNumber": header.number, "blockHash": hex_bytes(header_hash(header)), "trades": items,
                    }))
        # Oracle prices move every position's PnL, a resolution pays every holder, and an order
        # removed for lack of funds or by a forced withdrawal belongs to an account the block's
        # transactions may not name: then every subscribed account is looked at.
        market_wide = any(
            isinstance(tx, SignedTx) and isinstance(tx.action, OracleUpdate | ResolveMarket)
            for tx in block.transactions
        ) or any(removed.why in _FOREIGN_REMOVALS for receipt in receipts for removed in receipt.removed)
        touched = None
        for key, topic in list(topics.items()):
            if key[0] == TOPIC_BOOK:
                snapshot = self._snapshot(key)
            elif key[0] == TOPIC_ACCOUNT:
                if touched is None:
                    touched = touched_accounts(block.transactions, fills)
                if not market_wide and key[1] not in touched:
                    continue
                snapshot = self._snapshot(key)
            else:
                continue
            if snapshot is not None and snapshot[0] != topic.last:
                topic.last = snapshot[0]
                self._fan_out(topic, snapshot[1])
