"""The TradeZone JSON-RPC server (tz_*, port 8546) and its WebSocket endpoint (/ws).

``TzRpc`` is a method table over one ``Sequencer`` (and optionally its ``Batcher``), served by
the shared JSON-RPC 2.0 layer (``node.jsonrpc``) over HTTP POST on ``/`` and over WebSocket on
``/ws`` (same app, same port). Handlers are thin: decode the params, call one core function
(the sequencer's admission, a view of ``node.tzrpc.views``, the chain store), encode.

Errors (docs/rpc.md lists every code): malformed params -32602; a transaction over the client's
rate limit -32005 with ``data = {"retryAfterMs"}``; a transaction the sequencer refuses -32010
with ``data = {"reason", "detail"}``; a receipt not ready within the wait
-32011; a block whose state can no longer be proven -32012; subscriptions outside a WebSocket
-32013. Nothing a client sends changes the state unless the sequencer admits it.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from node.jsonrpc import (
    INVALID_PARAMS,
    LIMIT_EXCEEDED,
    InvalidParams,
    Params,
    RpcError,
    RpcServer,
    client_address,
    decode_address,
    decode_bytes,
    decode_hash,
    positional,
    start_site,
)
from node.sequencer.batcher import Batcher
from node.sequencer.chainstore import HEAD_FINALIZED, HEAD_SAFE, transaction_encodings
from node.sequencer.sequencer import Sequencer
from node.tradezone.blocks import Header, header_hash
from node.tradezone.eip712 import from_typed_data
from node.tradezone.errors import InvalidTransaction
from node.tradezone.hashing import keccak256
from node.tradezone.receipts import Receipt, receipt_to_json
from node.tradezone.transactions import MAX_TX_BYTES, SignedTx, transaction_to_json
from node.tzrpc.codec import (
    BlockRef,
    batch_to_json,
    block_hashes_to_json,
    block_to_json,
    decode_block_ref,
    decode_bool,
    decode_int,
    hex_bytes,
)
from node.tzrpc.feed import (
    TOPIC_ACCOUNT,
    TOPIC_BOOK,
    TOPIC_HEADS,
    TOPIC_TRADES,
    Feed,
    Session,
    TradeRing,
)
from node.tzrpc.ratelimit import TxRateLimiter
from node.tzrpc.views import (
    MAX_DEPTH,
    ProvingTrie,
    QueryError,
    account_view,
    assets_view,
    balance_proofs,
    markets_view,
    open_orders_view,
    order_book_view,
)
from proofs.engine import MissingNodeError, UnknownRootError

# TradeZone error codes (implementation-defined server errors, -32000 to -32099).
TX_REJECTED = -32010
INCLUSION_TIMEOUT = -32011
STATE_UNAVAILABLE = -32012
NEEDS_WEBSOCKET = -32013


@dataclass
class TzRpcConfig:
    """Bounds of the server. ``max_send_batch`` caps tz_sendTransactions; ``default_wait_ms`` /
    ``max_wait_ms`` the waitForInclusion timeout; ``ws_queue`` each WebSocket's send queue (in
    frames); ``ws_in_flight`` the requests one WebSocket may have running at once; a dropped WebSocket's
    socket is aborted ``ws_abort_after`` seconds after its close frame if the peer never read it."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_batch: int = 1000
    max_send_batch: int = 20_000
    default_wait_ms: int = 10_000
    max_wait_ms: int = 60_000
    trades_per_market: int = 1000
    max_trades_limit: int = 1000
    ws_queue: int = 4096
    ws_in_flight: int = 64
    ws_close_timeout: float = 5.0
    ws_abort_after: float = 30.0
    ws_max_subscriptions: int = 256
    ws_heartbeat: float = 30.0
    l1_timeout: float = 1.0
    tx_rate_per_client: float = 0.0  # transactions a second per client IP; 0: no limit
    tx_burst_per_client: int = 0  # the bucket size; 0: two seconds' worth


@dataclass
class _WsContext:
    """The WebSocket a request arrived on, and the notifications to send after its answer."""

    session: Session
    after_answer: list[bytes] = field(default_factory=list)


_ws_context: contextvars.ContextVar[_WsContext | None] = contextvars.ContextVar("tz_ws_context", default=None)


def rejection(exc: InvalidTransaction) -> RpcError:
    """The -32010 error of a refused transaction: ``data = {"reason", "detail"}``."""
    return RpcError(TX_REJECTED, f"transaction rejected: {exc}", {"reason": exc.reason, "detail": str(exc)})


def map_tz_error(exc: Exception) -> RpcError | None:
    """The JSON-RPC error of a core exception (codes in the module docstring)."""
    if isinstance(exc, InvalidTransaction):
        return rejection(exc)
    if isinstance(exc, QueryError):
        return RpcError(INVALID_PARAMS, f"invalid params: {exc}")
    if isinstance(exc, UnknownRootError | MissingNodeError):
        return RpcError(STATE_UNAVAILABLE, f"state not available: {exc}")
    return None


class TzRpc:
    """The tz_* method table over a sequencer; ``server`` is its ``RpcServer``."""

    def __init__(self, sequencer: Sequencer, batcher: Batcher | None = None,
                 config: TzRpcConfig | None = None) -> None:
        self.sequencer = sequencer
        self.batcher = batcher
        self.config = config or TzRpcConfig()
        self.server = RpcServer(max_body_bytes=self.config.max_body_bytes, max_batch=self.config.max_batch,
                                name="tz")
        self.server.add_error_mapper(map_tz_error)
        rate = self.config.tx_rate_per_client
        self.limiter = (TxRateLimiter(rate, self.config.tx_burst_per_client or max(1, math.ceil(2 * rate)))
                        if rate > 0 else None)
        self.trades = TradeRing(self.config.trades_per_market)
        self.feed = Feed(self._book_snapshot, self._account_snapshot, self.trades)
        self._runner: web.AppRunner | None = None
        self._sessions: set[Session] = set()
        self._running = False
        self.port: int | None = None
        for name in dir(self):
            if name.startswith("tz_"):
                self.server.register(name, getattr(self, name))

    # --- lifecycle ------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp app: JSON-RPC POST on ``/``, WebSocket on ``/ws``. Starting the app seeds
        the trades ring from the stored receipts and hooks the feed to the sequencer; cleaning it
        up unhooks it. The sequencer must be opened (``open()`` or ``start()``) first."""
        app = self.server.make_app("/")
        app.router.add_get("/ws", self.ws_handler)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, _app: web.Application) -> None:
        self.attach()

    async def _on_cleanup(self, _app: web.Application) -> None:
        await self.detach()

    def attach(self) -> None:
        """Seed the trades ring, listen to the sequencer's blocks and start the feed task."""
        if self._running:
            return
        self.trades.seed(self.sequencer.store, self.sequencer.head.number)
        self.sequencer.listeners.append(self.feed.on_block)
        self.feed.start()
        self._running = True

    async def detach(self) -> None:
        if not self._running:
            return
        self._running = False
        if self.feed.on_block in self.sequencer.listeners:
            self.sequencer.listeners.remove(self.feed.on_block)
        await self.feed.stop()

    async def start(self, host: str, port: int) -> int:
        """Serve on host:port (0 picks a free port); returns the bound port. If the port cannot be
        bound the OSError propagates and nothing stays hooked to the sequencer."""
        try:
            self._runner, self.port = await start_site(self.make_app(), host, port)
        except BaseException:
            await self.detach()
            raise
        return self.port

    async def stop(self) -> None:
        """Close every connection, stop the feed, unhook from the sequencer."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.detach()
        for session in list(self._sessions):
            session.cancel_close()
        self._sessions.clear()

    # --- helpers --------------------------------------------------------------------------------

    def _header_at(self, ref: BlockRef) -> Header | None:
        store = self.sequencer.store
        if isinstance(ref, bytes):
            number = store.block_number_of(ref)
            return None if number is None else store.get_header(number)
        if isinstance(ref, str):
            number = self._tag_number(ref)
        else:
            number = ref
        if number == self.sequencer.head.number:
            return self.sequencer.head
        return store.get_header(number)

    def _tag_number(self, tag: str) -> int:
        if tag in ("latest", "pending"):
            return self.sequencer.head.number
        if tag == "earliest":
            return 0
        return self.sequencer.store.head(HEAD_SAFE if tag == "safe" else HEAD_FINALIZED) or 0

    def _block_json(self, ref: BlockRef, full: bool) -> dict[str, Any] | None:
        """A stored block as JSON. Without ``full``, no transaction is decoded: the hashes are
        the keccaks of the stored encodings."""
        header = self._header_at(ref)
        if header is None:
            return None
        store = self.sequencer.store
        if full:
            block = store.get_block(header.number)
            return None if block is None else block_to_json(block, True)
        encoded = store.get_encoded_block(header.number)
        return None if encoded is None else block_hashes_to_json(header, map(keccak256, transaction_encodings(encoded)))

    def _receipt_json(self, hash_: bytes) -> dict[str, Any] | None:
        found = self.sequencer.receipt_by_hash(hash_)
        if found is None:
            return None
        receipt, header, index = found
        return self._located_receipt(hash_, receipt, header, index)

    @staticmethod
    def _located_receipt(hash_: bytes, receipt: Receipt, header: Header, index: int) -> dict[str, Any]:
        view: dict[str, Any] = {
            "transactionHash": hex_bytes(hash_),
            "blockNumber": header.number,
            "blockHash": hex_bytes(header_hash(header)),
            "transactionIndex": index,
        }
        view.update(receipt_to_json(receipt))
        return view

    def _book_snapshot(self, market_id: int, depth: int) -> dict[str, Any]:
        return order_book_view(self.sequencer.state, market_id, depth, self.sequencer.head.number)

    def _account_snapshot(self, account: bytes) -> dict[str, Any]:
        seq = self.sequencer
        nonce = seq.state.nonces.get(account, 0)
        return account_view(seq.state, account, seq.mempool.next_nonce(account, nonce), seq.head.number)

    def _decode_signed(self, value: Any) -> SignedTx | bytes:
        """A raw canonical transaction (0x-hex) -> bytes, or a typed-data document with its
        signature -> SignedTx (its fields range-checked; the signature is checked at admission)."""
        if isinstance(value, str):
            return decode_bytes(value, "raw transaction", max_length=MAX_TX_BYTES)
        if isinstance(value, dict) and set(value) == {"typedData", "signature"}:
            signature = decode_bytes(value["signature"], "signature", 65)
            return from_typed_data(value["typedData"], signature, self.sequencer.domain)
        raise InvalidParams('a transaction is 0x-hex raw bytes or {"typedData": ..., "signature": "0x..."}')

    def _wait_ms(self, options: Any) -> int | None:
        if options is None:
            return None
        if not isinstance(options, dict) or not set(options) <= {"waitForInclusion", "timeoutMs"}:
            raise InvalidParams('options are {"waitForInclusion": bool, "timeoutMs": int}')
        if not decode_bool(options.get("waitForInclusion"), "waitForInclusion"):
            return None
        timeout = options.get("timeoutMs")
        wait_ms = self.config.default_wait_ms if timeout is None else decode_int(timeout, "timeoutMs")
        if not 1 <= wait_ms <= self.config.max_wait_ms:
            raise InvalidParams(f"timeoutMs must be 1 to {self.config.max_wait_ms}")
        return wait_ms

    async def _wait_receipt(self, hash_: bytes, wait_ms: int) -> dict[str, Any]:
        seq = self.sequencer
        if seq.store.locate_transaction(hash_) is None:
            future = seq.waiters.wait(hash_)
            try:
                await asyncio.wait_for(asyncio.shield(future), wait_ms / 1000)
            except TimeoutError as exc:
                raise RpcError(INCLUSION_TIMEOUT, f"transaction not included within {wait_ms} ms; it is pending",
                               {"hash": hex_bytes(hash_)}) from exc
        receipt = self._receipt_json(hash_)
        if receipt is None:
            raise RpcError(INCLUSION_TIMEOUT, "transaction included but its receipt is not readable yet",
                           {"hash": hex_bytes(hash_)})
        return receipt

    # --- chain ----------------------------------------------------------------------------------

    def tz_chainId(self, params: Params) -> int:
        positional(params, 0, 0)
        return self.sequencer.domain.chain_id

    def tz_blockNumber(self, params: Params) -> int:
        positional(params, 0, 0)
        return self.sequencer.head.number

    def tz_getBlockByNumber(self, params: Params) -> dict[str, Any] | None:
        ref, full = positional(params, 1, 2)
        block_ref = decode_block_ref(ref)
        if isinstance(block_ref, bytes):
            raise InvalidParams("a block number or tag, not a hash (use tz_getBlockByHash)")
        return self._block_json(block_ref, decode_bool(full, "full transactions"))

    def tz_getBlockByHash(self, params: Params) -> dict[str, Any] | None:
        hash_, full = positional(params, 1, 2)
        return self._block_json(decode_hash(hash_, "block hash"), decode_bool(full, "full transactions"))

    def tz_getTransactionByHash(self, params: Params) -> dict[str, Any] | None:
        (hash_,) = positional(params, 1, 1)
        wanted = decode_hash(hash_, "transaction hash")
        found = self.sequencer.transaction_by_hash(wanted)
        if found is None:
            pending = self.sequencer.mempool.get(wanted)
            if pending is None:
                return None
            view = transaction_to_json(pending)
            view.update({"blockNumber": None, "blockHash": None, "transactionIndex": None})
            return view
        tx, header, index = found
        view = transaction_to_json(tx)
        view.update({"blockNumber": header.number, "blockHash": hex_bytes(header_hash(header)),
                     "transactionIndex": index})
        return view

    def tz_getTransactionReceipt(self, params: Params) -> dict[str, Any] | None:
        (hash_,) = positional(params, 1, 1)
        return self._receipt_json(decode_hash(hash_, "transaction hash"))

    async def tz_syncStatus(self, params: Params) -> dict[str, Any]:
        positional(params, 0, 0)
        seq = self.sequencer
        heads: dict[str, Any] = {}
        for name, number in seq.heads().items():
            header = self._header_at(number)
            heads[name] = None if header is None else {
                "number": header.number, "hash": hex_bytes(header_hash(header)),
                "timestampMs": header.timestamp_ms, "stateRoot": hex_bytes(header.state_root),
            }
        l1_head: int | None
        try:
            l1_head = await asyncio.wait_for(seq.l1.block_number(), self.config.l1_timeout)
        except Exception:  # any failure of the L1 client means: not reachable right now
            l1_head = None
        return {
            **heads,
            "l1Head": l1_head,
            "l1Reachable": l1_head is not None and seq.l1_reachable,
            "l1Origin": seq.head.l1_origin,
            "l1Cursor": seq.head.l1_cursor,
            "mempoolSize": len(seq.mempool),
            "batcherFrozen": self.batcher.frozen if self.batcher is not None else None,
            "batchesInFlight": self.batcher.in_flight if self.batcher is not None else None,
        }

    def tz_getBatch(self, params: Params) -> dict[str, Any] | None:
        (index,) = positional(params, 1, 1)
        number = decode_int(index, "batch index")
        store = self.sequencer.store
        record = store.get_batch(number)
        if record is not None:
            finalized = store.head(HEAD_FINALIZED) or 0
            return batch_to_json(record, "finalized" if record.last_block <= finalized else "committed")
        in_flight = store.batch_in_flight(number)
        if in_flight is not None:
            return batch_to_json(in_flight, "inFlight")
        return None

    # --- transactions -----------------------------------------------------------------------------

    async def tz_sendTransaction(self, params: Params) -> Any:
        tx_param, options = positional(params, 1, 2)
        wait_ms = self._wait_ms(options)
        decoded = self._decode_signed(tx_param)
        _allowed, refusal = self._rate_budget(1)
        if refusal is not None:
            raise refusal
        seq = self.sequencer
        if isinstance(decoded, bytes):
            (result,) = await seq.submit([decoded])
        else:
            (result,) = await seq.submit_transactions([decoded])
        if isinstance(result, InvalidTransaction):
            raise result
        if wait_ms is None:
            return hex_bytes(result)
        return await self._wait_receipt(result, wait_ms)

    async def tz_sendTransactions(self, params: Params) -> list[Any]:
        (raws,) = positional(params, 1, 1)
        if not isinstance(raws, list) or not raws:
            raise InvalidParams("expected a non-empty list of raw transactions")
        if len(raws) > self.config.max_send_batch:
            raise InvalidParams(f"at most {self.config.max_send_batch} transactions per request")
        decoded: list[bytes | None] = []
        errors: dict[int, dict[str, Any]] = {}
        allowed, refusal = self._rate_budget(len(raws))
        refused = refusal.to_json() if refusal is not None else {}
        for position, raw in enumerate(raws):
            if position >= allowed:
                decoded.append(None)
                errors[position] = refused
                continue
            try:
                decoded.append(decode_bytes(raw, f"transaction {position}", max_length=MAX_TX_BYTES))
            except InvalidParams as err:
                decoded.append(None)
                errors[position] = err.to_json()
        accepted = [raw for raw in decoded if raw is not None]
        results = iter(await self.sequencer.submit(accepted) if accepted else [])
        out: list[Any] = []
        for position, raw in enumerate(decoded):
            if raw is None:
                out.append(errors[position])
                continue
            result = next(results)
            if isinstance(result, InvalidTransaction):
                out.append(rejection(result).to_json())
            else:
                out.append(hex_bytes(result))
        return out

    def _rate_budget(self, wanted: int) -> tuple[int, RpcError | None]:
        """How many of ``wanted`` transactions the requesting client may send now, and the error
        for the rest (None when all may go)."""
        limiter = self.limiter
        if limiter is None:
            return wanted, None
        client = client_address.get()
        allowed = limiter.take(client, wanted)
        if allowed == wanted:
            return allowed, None
        return allowed, RpcError(LIMIT_EXCEEDED,
                                 f"rate limit exceeded: at most {limiter.rate:g} transactions a second per client",
                                 {"retryAfterMs": limiter.retry_after_ms(client)})

    # --- accounts and markets ---------------------------------------------------------------------

    def tz_getAccount(self, params: Params) -> dict[str, Any]:
        (address,) = positional(params, 1, 1)
        return self._account_snapshot(decode_address(address))

    def tz_getNonce(self, params: Params) -> dict[str, int]:
        (address,) = positional(params, 1, 1)
        signer = decode_address(address, "signer")
        seq = self.sequencer
        nonce = seq.state.nonces.get(signer, 0)
        return {"nonce": nonce, "pendingNonce": seq.mempool.next_nonce(signer, nonce)}

    def tz_getOpenOrders(self, params: Params) -> list[dict[str, Any]]:
        address, market = positional(params, 1, 2)
        market_id = None if market is None else decode_int(market, "market id", 32)
        return open_orders_view(self.sequencer.state, decode_address(address), market_id)

    def tz_getOrderBook(self, params: Params) -> dict[str, Any]:
        market, depth = positional(params, 1, 2)
        levels = 20 if depth is None else decode_int(depth, "depth", 32)
        if not 1 <= levels <= MAX_DEPTH:
            raise InvalidParams(f"depth must be 1 to {MAX_DEPTH}")
        return self._book_snapshot(decode_int(market, "market id", 32), levels)

    def tz_getMarkets(self, params: Params) -> list[dict[str, Any]]:
        positional(params, 0, 0)
        return markets_view(self.sequencer.state)

    def tz_getAssets(self, params: Params) -> list[dict[str, Any]]:
        positional(params, 0, 0)
        return assets_view(self.sequencer.state)

    def _market_id(self, value: Any) -> int:
        market_id = decode_int(value, "market id", 32)
        if market_id not in self.sequencer.state.markets:
            raise QueryError(f"unknown market {market_id}")
        return market_id

    def tz_getTrades(self, params: Params) -> list[dict[str, Any]]:
        market, limit = positional(params, 1, 2)
        market_id = self._market_id(market)
        count = 100 if limit is None else decode_int(limit, "limit", 32)
        if not 1 <= count <= self.config.max_trades_limit:
            raise InvalidParams(f"limit must be 1 to {self.config.max_trades_limit}")
        return [trade.to_json() for trade in self.trades.recent(market_id, count)]

    # --- proofs -----------------------------------------------------------------------------------

    def tz_getProof(self, params: Params) -> dict[str, Any]:
        address, asset_ids, ref = positional(params, 2, 3)
        account = decode_address(address)
        if not isinstance(asset_ids, list) or not asset_ids:
            raise InvalidParams("asset ids must be a non-empty list")
        assets = [decode_int(a, "asset id", 32) for a in asset_ids]
        header = self._header_at(decode_block_ref(ref))
        if header is None:
            raise RpcError(STATE_UNAVAILABLE, "state not available: no such block")
        trie = self.sequencer.state.trie
        if not isinstance(trie, ProvingTrie):
            raise RpcError(STATE_UNAVAILABLE, "state not available: the state trie cannot prove")
        return balance_proofs(trie, header, account, assets, self._anchor(header))

    def _anchor(self, header: Header) -> dict[str, Any] | None:
        """The committed batch whose last block is ``header`` (its root is on the bridge), found
        by binary search over the batches (their last blocks increase with their index)."""
        store = self.sequencer.store
        if header.number == 0 or header.number > (store.head(HEAD_SAFE) or 0):
            return None
        count = 1
        while store.get_batch(count - 1) is not None:
            count *= 2
        low, high = 0, count - 1  # the answer's index is below high (get_batch(count - 1) is None)
        while low < high:
            middle = (low + high) // 2
            record = store.get_batch(middle)
            if record is None or record.last_block >= header.number:
                high = middle
            else:
                low = middle + 1
        record = store.get_batch(low)
        if record is None or record.last_block != header.number:
            return None
        finalized = store.head(HEAD_FINALIZED) or 0
        return batch_to_json(record, "finalized" if record.last_block <= finalized else "committed")

    # --- subscriptions (WebSocket only) -----------------------------------------------------------

    def tz_subscribe(self, params: Params) -> str:
        context = _ws_context.get()
        if context is None:
            raise RpcError(NEEDS_WEBSOCKET, "subscriptions need a WebSocket connection (/ws)")
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise InvalidParams('expected ["newHeads"], ["trades", market], ["book", market, depth] or '
                                '["account", address]')
        if context.session.closing:
            raise RpcError(NEEDS_WEBSOCKET, "this WebSocket is closing")
        if len(context.session.subscriptions) >= self.config.ws_max_subscriptions:
            raise InvalidParams(f"at most {self.config.ws_max_subscriptions} subscriptions per connection")
        topic = params[0]
        if topic == TOPIC_HEADS:
            positional(params, 1, 1)
            key: tuple[Any, ...] = (TOPIC_HEADS,)
        elif topic == TOPIC_TRADES:
            _, market = positional(params, 2, 2)
            key = (TOPIC_TRADES, self._market_id(market))
        elif topic == TOPIC_BOOK:
            _, market, depth = positional(params, 2, 3)
            levels = 20 if depth is None else decode_int(depth, "depth", 32)
            if not 1 <= levels <= MAX_DEPTH:
                raise InvalidParams(f"depth must be 1 to {MAX_DEPTH}")
            key = (TOPIC_BOOK, self._market_id(market), levels)
        elif topic == TOPIC_ACCOUNT:
            _, address = positional(params, 2, 2)
            key = (TOPIC_ACCOUNT, decode_address(address))
        else:
            raise InvalidParams(f"unknown subscription topic {topic!r}")
        sub_id, snapshot = self.feed.subscribe(context.session, key)
        if snapshot is not None:
            context.after_answer.append(snapshot)
        return sub_id

    def tz_unsubscribe(self, params: Params) -> bool:
        context = _ws_context.get()
        if context is None:
            raise RpcError(NEEDS_WEBSOCKET, "subscriptions need a WebSocket connection (/ws)")
        (sub_id,) = positional(params, 1, 1)
        if not isinstance(sub_id, str):
            raise InvalidParams("a subscription id is a string")
        return self.feed.unsubscribe(context.session, sub_id)

    # --- WebSocket --------------------------------------------------------------------------------

    async def ws_handler(self, request: web.Request) -> web.StreamResponse:
        """JSON-RPC over WebSocket: each text (or binary) message is a request or a batch; answers
        and notifications share the connection's bounded send queue."""
        config = self.config
        ws = web.WebSocketResponse(max_msg_size=config.max_body_bytes, heartbeat=config.ws_heartbeat)
        await ws.prepare(request)
        client_address.set(request.remote or "")  # the requests below run in copies of this context
        session = Session(ws, config.ws_queue, config.ws_close_timeout, config.ws_abort_after)
        session.on_drop = self.feed.drop_session
        session.on_gone = self._sessions.discard
        session.start()
        self._sessions.add(session)
        slots = asyncio.Semaphore(config.ws_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    body = message.data.encode() if message.type == WSMsgType.TEXT else message.data
                    await slots.acquire()
                    task = asyncio.create_task(self._ws_request(session, body, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            for task in list(tasks):
                task.cancel()
            await session.finish()
        return ws

    async def _ws_request(self, session: Session, body: bytes, slots: asyncio.Semaphore) -> None:
        try:
            context = _WsContext(session)
            _ws_context.set(context)
            answer = await self.server.handle_body(body)
            if answer.body is not None:
                session.send(answer.body)
            for payload in context.after_answer:
                session.send(payload)
        finally:
            slots.release()

