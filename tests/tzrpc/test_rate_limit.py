"""Per-client transaction rate limits: a client over its budget gets -32005 with the time to
retry, its refused transactions never reach the mempool, other work goes on, and the budget
refills at the configured rate."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from node.sdk import TradeZoneClient
from node.tradezone.signing import Signer
from node.tzrpc import TzRpcConfig
from node.tzrpc.ratelimit import TxRateLimiter

from .conftest import ACCOUNTS, Node
from .test_errors import hexraw, order, rpc

RATE, BURST = 4.0, 10  # a token every 250 ms: far more than any step between two sends takes
DAVE = Signer(ACCOUNTS[6].private_key)  # holds WCP in the devnet genesis


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate_and_says_when_to_retry() -> None:
    clock = Clock()
    limiter = TxRateLimiter(rate=10, burst=5, clock=clock)
    assert limiter.take("a", 8) == 5  # the burst
    assert limiter.take("a", 1) == 0
    assert limiter.retry_after_ms("a") == 100  # one token every 100 ms
    assert limiter.take("b", 3) == 3  # another client has its own bucket
    clock.now += 0.25
    assert limiter.take("a", 5) == 2  # 2.5 tokens refilled: whole transactions only
    clock.now += 60
    assert limiter.take("a", 50) == 5  # refills up to the burst, not beyond
    with pytest.raises(ValueError):
        TxRateLimiter(rate=0, burst=5)


def test_the_buckets_kept_are_bounded_and_the_least_recent_client_goes_first() -> None:
    clock = Clock()
    limiter = TxRateLimiter(rate=1, burst=1, clock=clock, max_clients=3)
    for client in "abc":
        assert limiter.take(client, 1) == 1
    assert limiter.take("a", 1) == 0  # a is now the most recent
    assert limiter.take("d", 1) == 1  # evicts b, the least recently seen
    assert limiter.take("b", 1) == 1  # b starts over with a full bucket
    assert limiter.take("a", 1) == 0


@pytest.fixture(scope="module")
def limited_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    config = TzRpcConfig(tx_rate_per_client=RATE, tx_burst_per_client=BURST)
    running = Node(Path(tmp_path_factory.mktemp("tzlimit")), rpc_config=config).start()
    yield running
    running.stop()


def test_a_client_over_its_rate_is_refused_with_the_time_to_retry_and_nothing_else_changes(
    limited_node: Node,
) -> None:
    url = limited_node.url
    client = TradeZoneClient(url, DAVE)
    time.sleep(BURST / RATE)  # a full bucket, whatever the fixture's clients spent
    nonce = client.get_nonce()["pendingNonce"]
    txs = [order(nonce + i, DAVE, price=1 + i) for i in range(BURST + 5)]
    answer = rpc(url, "tz_sendTransactions", [hexraw(tx) for tx in txs])["result"]
    accepted = [a for a in answer if isinstance(a, str)]
    assert accepted == answer[:BURST]
    refused = answer[BURST:]
    assert all(r["code"] == -32005 and "rate limit" in r["message"] and r["data"]["retryAfterMs"] > 0
               for r in refused)
    # the refused ones never reached the mempool: the pending nonce moved by the burst only
    assert client.get_nonce()["pendingNonce"] == nonce + BURST
    single = rpc(url, "tz_sendTransaction", hexraw(txs[BURST]))
    assert single["error"]["code"] == -32005
    # reads are not limited, and blocks go on
    head = int(str(client.block_number()), 0)
    for tx_hash in accepted:
        assert client.wait_for_receipt(tx_hash, timeout=15)["status"] == 1
    assert int(str(client.block_number()), 0) > head
    # the budget refills: after the advertised wait the next transaction goes through
    time.sleep(single["error"]["data"]["retryAfterMs"] / 1000 + 0.05)
    again = rpc(url, "tz_sendTransaction", hexraw(txs[BURST]))
    assert isinstance(again["result"], str)
    assert client.wait_for_receipt(again["result"], timeout=15)["status"] == 1


def test_the_limit_holds_over_websocket_too(limited_node: Node) -> None:
    client = TradeZoneClient(limited_node.url, DAVE)
    time.sleep(BURST / RATE)
    nonce = client.get_nonce()["pendingNonce"]
    txs = [order(nonce + i, DAVE, price=1 + i) for i in range(BURST + 3)]

    async def main() -> list[dict[str, object]]:
        async with aiohttp.ClientSession() as http, http.ws_connect(limited_node.ws_url) as ws:
            for index, tx in enumerate(txs):  # all at once, answered in any order
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": index, "method": "tz_sendTransaction",
                                              "params": [hexraw(tx)]}))
            answers = [json.loads((await ws.receive()).data) for _ in txs]
            return sorted(answers, key=lambda answer: answer["id"])

    answers = asyncio.run(main())
    assert all("result" in a for a in answers[:BURST])
    assert all(a["error"]["code"] == -32005 for a in answers[BURST:])  # type: ignore[index]
