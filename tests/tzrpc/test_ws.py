"""JSON-RPC over WebSocket on a real node: subscriptions to heads, trades, books and accounts;
sending over the socket; a subscriber that stops reading is dropped with code 1008 and reason
"slow consumer" while blocks go on."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.sdk import AsyncTradeZoneClient, TradeZoneClient
from node.tradezone.signing import Signer
from node.tradezone.transactions import BUY, TIF_POST_ONLY, PlaceOrder, PlaceOrders, encode_transaction
from node.tradezone.venues import NO_SIDE_FLAG
from node.tzrpc import TzRpcConfig

from .conftest import ACCOUNTS, OUTCOME, Node

ALICE, BOB = Signer(ACCOUNTS[5].private_key), Signer(ACCOUNTS[6].private_key)


class Conversation:
    """A WebSocket client that keeps every answer and notification it reads."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.answers: dict[int, Any] = {}
        self.notes: list[dict[str, Any]] = []
        self._id = 0

    async def request(self, method: str, *params: Any) -> int:
        self._id += 1
        await self.ws.send_str(json.dumps({"jsonrpc": "2.0", "id": self._id, "method": method, "params": list(params)}))
        return self._id

    async def call(self, method: str, *params: Any) -> Any:
        request_id = await self.request(method, *params)
        await self.until(lambda: request_id in self.answers)
        return self.answers[request_id]

    async def until(self, done: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("WebSocket condition not met in time")
            try:
                message = await self.ws.receive(timeout=remaining)
            except TimeoutError as exc:
                raise AssertionError("WebSocket condition not met in time") from exc
            if message.type != aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"connection ended: {message.type} {message.data} {message.extra}")
            data = json.loads(message.data)
            for item in data if isinstance(data, list) else [data]:
                if "id" in item:
                    self.answers[item["id"]] = item
                else:
                    self.notes.append(item)

    async def read_for(self, seconds: float) -> None:
        """Read whatever arrives for ``seconds``, keeping the newest notifications only."""
        with contextlib.suppress(AssertionError):
            await self.until(lambda: False, timeout=seconds)
        del self.notes[:-50]

    def of(self, sub_id: str) -> list[Any]:
        return [n["params"]["result"] for n in self.notes if n["params"]["subscription"] == sub_id]


def test_subscriptions_receive_heads_trades_book_and_account_updates(node: Node) -> None:
    alice, bob = TradeZoneClient(node.url, ALICE), TradeZoneClient(node.url, BOB)

    async def main() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(node.ws_url) as ws:
            chat = Conversation(ws)
            heads = (await chat.call("tz_subscribe", "newHeads"))["result"]
            trades = (await chat.call("tz_subscribe", "trades", OUTCOME))["result"]
            book = (await chat.call("tz_subscribe", "book", OUTCOME, 5))["result"]
            account = (await chat.call("tz_subscribe", "account", "0x" + BOB.address.hex()))["result"]
            assert len({heads, trades, book, account}) == 4
            # book and account subscriptions start with a snapshot
            await chat.until(lambda: bool(chat.of(book)) and bool(chat.of(account)))
            assert chat.of(book)[0]["bids"] == [] and chat.of(book)[0]["marketId"] == OUTCOME
            assert chat.of(account)[0]["address"] == "0x" + BOB.address.hex()

            rest = await asyncio.to_thread(alice.place_order, OUTCOME, BUY, 60, 5, wait=True)
            await chat.until(lambda: any(b["bids"] == [[60, 5]] for b in chat.of(book)))
            await chat.until(lambda: any(h["number"] == rest["blockNumber"] for h in chat.of(heads)))
            head = next(h for h in chat.of(heads) if h["number"] == rest["blockNumber"])
            assert head["hash"] == rest["blockHash"]

            take = await asyncio.to_thread(bob.place_order, OUTCOME | NO_SIDE_FLAG, BUY, 40, 3, wait=True)
            assert len(take["fills"]) == 1
            await chat.until(lambda: bool(chat.of(trades)))
            (event,) = chat.of(trades)
            assert event["blockNumber"] == take["blockNumber"]
            assert [(t["price"], t["size"], t["transactionHash"]) for t in event["trades"]] == [
                (60, 3, take["transactionHash"])]
            await chat.until(lambda: chat.of(book)[-1]["bids"] == [[60, 2]])
            await chat.until(lambda: any(
                any(b["assetId"] == 1004 - 2 for b in view["balances"]) for view in chat.of(account)))
            assert chat.of(account)[-1]["blockNumber"] >= take["blockNumber"]

            # unsubscribing stops the flow; unknown ids answer false
            assert (await chat.call("tz_unsubscribe", heads))["result"] is True
            assert (await chat.call("tz_unsubscribe", heads))["result"] is False
            seen = len(chat.of(heads))
            # send over the socket, waiting for inclusion; then a batch on the socket
            nonce = (await asyncio.to_thread(alice.get_nonce))["pendingNonce"]
            cancel = ALICE.sign(PlaceOrder(OUTCOME, BUY, 1, 1, TIF_POST_ONLY), nonce)
            answer = await chat.call("tz_sendTransaction", "0x" + encode_transaction(cancel).hex(),
                                     {"waitForInclusion": True})
            assert answer["result"]["status"] == 1
            await ws.send_str(json.dumps([{"jsonrpc": "2.0", "id": 900, "method": "tz_blockNumber"},
                                          {"jsonrpc": "2.0", "id": 901, "method": "tz_chainId"}]))
            await chat.until(lambda: 900 in chat.answers and 901 in chat.answers)
            assert chat.answers[901]["result"] == 1961
            assert len(chat.of(heads)) == seen
            bad = await chat.call("tz_subscribe", "book", 4242)
            assert bad["error"]["code"] == -32602
            assert (await chat.call("tz_subscribe", "candles"))["error"]["code"] == -32602

    asyncio.run(main())
    TradeZoneClient(node.url, ALICE).cancel_all(wait=True)  # alice's own counter is stale: a fresh client


def test_async_client_sends_and_streams_a_subscription(node: Node) -> None:
    async def main() -> None:
        async with AsyncTradeZoneClient(node.url, BOB) as client:
            stream = client.subscribe("newHeads")
            first = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.2)
            receipt = await client.place_order(OUTCOME, BUY, 2, 1, tif=TIF_POST_ONLY, wait=True)
            assert receipt["status"] == 1
            head = await asyncio.wait_for(first, 15)
            assert head["number"] >= 1 and head["hash"].startswith("0x")
            await stream.aclose()
            more = await client.send(PlaceOrders((PlaceOrder(OUTCOME, BUY, 3, 1, TIF_POST_ONLY),)), wait=True)
            assert more["status"] == 1
            orders = await client.get_open_orders(market=OUTCOME)
            assert sorted(o["price"] for o in orders) == [2, 3]
            assert (await client.get_account())["address"] == "0x" + BOB.address.hex()
            assert (await client.cancel_all(wait=True))["status"] == 1
            assert await client.get_open_orders() == []
            assert await client.chain_id() == 1961

    asyncio.run(main())


# --------------------------------------------------------------------------- slow consumer

QUEUE = 256
BOOK_SUBS = 200


@pytest.fixture(scope="module")
def slow_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    config = TzRpcConfig(ws_queue=QUEUE, ws_close_timeout=1.0, ws_abort_after=120.0)
    running = Node(Path(tmp_path_factory.mktemp("tzslow")), rpc_config=config).start()
    yield running
    running.stop()


def test_a_subscriber_that_stops_reading_is_dropped_while_blocks_go_on(slow_node: Node) -> None:
    node = slow_node
    maker = TradeZoneClient(node.url, ALICE)
    # a book of 99 levels, so every book notification is about a kilobyte
    levels = [PlaceOrder(OUTCOME, BUY, price, 1, TIF_POST_ONLY) for price in range(1, 100)]
    maker.place_orders(levels[:50], wait=True)
    maker.place_orders(levels[50:], wait=True)
    stop = threading.Event()

    def drive() -> None:  # keep blocks coming, each one changing the book
        driver = TradeZoneClient(node.url, BOB)
        while not stop.is_set():
            driver.place_order(OUTCOME, BUY, 50, 1, tif=TIF_POST_ONLY, wait=True)
            driver.cancel_all(OUTCOME, wait=True)

    def subscriptions() -> int:
        return int(node.call(lambda: len(node.service.rpc.feed.subscriptions)))

    async def main() -> None:
        async with aiohttp.ClientSession() as http:
            fast_ws = await http.ws_connect(node.ws_url)
            fast = Conversation(fast_ws)
            heads = (await fast.call("tz_subscribe", "newHeads"))["result"]
            slow = await http.ws_connect(node.ws_url)
            batch = [{"jsonrpc": "2.0", "id": i, "method": "tz_subscribe", "params": ["book", OUTCOME, 1000]}
                     for i in range(BOOK_SUBS)]
            await slow.send_str(json.dumps(batch))  # ... and never reads again
            deadline = time.monotonic() + 30
            while subscriptions() < 1 + BOOK_SUBS:
                assert time.monotonic() < deadline, "the subscriptions were not taken"
                await asyncio.sleep(0.05)
            thread = threading.Thread(target=drive, daemon=True)
            thread.start()
            try:
                deadline = time.monotonic() + 60
                while subscriptions() > 1:  # the slow one's subscriptions are gone: dropped
                    assert time.monotonic() < deadline, "the slow subscriber was never dropped"
                    await fast.read_for(0.2)  # the reading subscriber keeps reading
                dropped_at = node.call(lambda: node.sequencer.head.number)
                # the slow subscriber, reading again, finds everything queued, then the close frame
                close = None
                while close is None:
                    message = await slow.receive(timeout=30)
                    if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED,
                                        aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.ERROR):
                        close = message
                assert slow.close_code == 1008, (close.type, close.data, close.extra)
                assert close.extra == "slow consumer"
                # blocks go on, and the reading subscriber still gets them
                await fast.until(lambda: any(h["number"] > dropped_at + 2 for h in fast.of(heads)), timeout=30)
            finally:
                stop.set()
                thread.join(30)
            await slow.close()
            await fast_ws.close()

    asyncio.run(main())
