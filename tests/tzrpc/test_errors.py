"""Bad input gets its error, changes no state, and never stops block production: malformed
JSON, wrong types, bad signatures, replayed nonces, unknown markets, sizes and prices out of
bounds, oversized requests, a flood beyond the mempool bound."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.sdk import TradeZoneClient
from node.tradezone.eip712 import typed_data
from node.tradezone.signing import Signer
from node.tradezone.transactions import BUY, TIF_POST_ONLY, PlaceOrder, SignedTx, encode_transaction
from node.tzrpc import TzRpcConfig

from .conftest import ACCOUNTS, OUTCOME, Node

MEMPOOL = 40
MAX_BODY = 64 * 1024
CAROL = Signer(ACCOUNTS[7].private_key)
MALLORY = Signer(ACCOUNTS[3].private_key)


@pytest.fixture(scope="module")
def small_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    config = TzRpcConfig(max_body_bytes=MAX_BODY, max_batch=50, max_send_batch=200)
    running = Node(Path(tmp_path_factory.mktemp("tzbad")), mempool_total=MEMPOOL, rpc_config=config).start()
    yield running
    running.stop()


def post(url: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def rpc(url: str, method: str, *params: Any) -> Any:
    return post(url, json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}).encode())[1]


def code_of(answer: Any) -> int:
    return int(answer["error"]["code"])


def snapshot(node: Node) -> tuple[int, bytes, Any]:
    def read() -> tuple[int, bytes, Any]:
        seq = node.sequencer
        return seq.head.number, seq.state.trie.root, dict(seq.state.nonces)

    return node.call(read)  # type: ignore[no-any-return]


def order(nonce: int, signer: Signer = CAROL, **fields: Any) -> SignedTx:
    values: dict[str, Any] = {"market_id": OUTCOME, "side": BUY, "price": 10, "size": 1, "tif": TIF_POST_ONLY}
    values.update(fields)
    return signer.sign(PlaceOrder(**values), nonce)


def hexraw(tx: SignedTx) -> str:
    return "0x" + encode_transaction(tx).hex()


def test_bad_input_is_refused_with_its_error_and_changes_nothing(small_node: Node) -> None:
    url = small_node.url
    client = TradeZoneClient(url, CAROL)
    nonce = client.get_nonce()["pendingNonce"]
    before = snapshot(small_node)

    # malformed JSON, wrong request shapes, unknown methods
    assert code_of(post(url, b'{"jsonrpc": "2.0", "id": 1, "method": ')[1]) == -32700
    assert code_of(post(url, b'{"jsonrpc": "2.0", "id": 1, "method": "tz_chainId", "params": 5}')[1]) == -32600
    assert code_of(rpc(url, "tz_noSuchMethod")) == -32601
    # wrong param types
    for method, params in (
        ("tz_getOrderBook", ["abc"]), ("tz_getOrderBook", [True]), ("tz_getOrderBook", [OUTCOME, 0]),
        ("tz_getBlockByNumber", [{"x": 1}]), ("tz_getBlockByNumber", ["latest", "yes"]),
        ("tz_getAccount", ["0x1234"]), ("tz_getTrades", [OUTCOME, -1]), ("tz_getProof", ["0x" + "11" * 20, []]),
        ("tz_sendTransaction", [123]), ("tz_sendTransaction", ["0xzz"]),
        ("tz_sendTransaction", [{"typedData": {}, "signature": "0x00"}]),
        ("tz_sendTransaction", [hexraw(order(nonce)), {"waitForInclusion": "yes"}]),
        ("tz_sendTransaction", [hexraw(order(nonce)), {"timeoutMs": 5, "surprise": 1}]),
        ("tz_sendTransactions", ["0x00"]), ("tz_chainId", [1]),
    ):
        assert code_of(rpc(url, method, *params)) == -32602, (method, params)
    # unknown markets, in reads and in transactions
    assert code_of(rpc(url, "tz_getOrderBook", 4242)) == -32602
    assert code_of(rpc(url, "tz_getTrades", 4242)) == -32602
    unknown = rpc(url, "tz_sendTransaction", hexraw(order(nonce, market_id=4242)))
    assert code_of(unknown) == -32010 and unknown["error"]["data"]["reason"] == "unknown_market"
    # a size of zero lots, a price outside the market's bounds
    bounds: list[dict[str, Any]] = [{"size": 0}, {"price": 101}, {"price": 0}]
    for fields in bounds:
        refused = rpc(url, "tz_sendTransaction", hexraw(order(nonce, **fields)))
        assert refused["error"]["data"]["reason"] == "invalid_order", fields
    # a size beyond uint64 or fractional in a typed-data document
    good = order(nonce)
    document = typed_data(good.action, good.account, good.nonce)
    for size in (2**64, 1.5, "lots"):
        bad_doc = json.loads(json.dumps(document))
        bad_doc["message"]["size"] = size
        answer = rpc(url, "tz_sendTransaction", {"typedData": bad_doc, "signature": "0x" + good.signature.hex()})
        assert answer["error"]["data"]["reason"] == "value_out_of_range", size
    # bad signatures: an invalid v, a high s, and a valid signature by a key that is not the account's
    sig = good.signature
    for signature in (sig[:64] + bytes((29,)), sig[:32] + (2**256 - 1).to_bytes(32, "big") + sig[64:]):
        answer = rpc(url, "tz_sendTransaction", hexraw(SignedTx(good.action, good.account, good.nonce, signature)))
        assert answer["error"]["data"]["reason"] == "bad_signature"
    forged = MALLORY.sign(good.action, nonce, account=CAROL.address)
    answer = rpc(url, "tz_sendTransaction", hexraw(forged))
    assert answer["error"]["data"]["reason"] == "unauthorized_signer"
    answer = rpc(url, "tz_sendTransaction", {"typedData": document, "signature": "0x" + forged.signature.hex()})
    assert answer["error"]["data"]["reason"] == "unauthorized_signer"
    # a nonce from the future
    assert rpc(url, "tz_sendTransaction", hexraw(order(nonce + 5)))["error"]["data"]["reason"] == "nonce_mismatch"
    # oversized: a body over the bound, a batch over the bound, a raw transaction over the protocol's size
    status, answer = post(url, b"[" + b" " * MAX_BODY + b"]")
    assert status == 413 and code_of(answer) == -32600
    batch = [{"jsonrpc": "2.0", "id": i, "method": "tz_chainId", "params": []} for i in range(51)]
    assert code_of(post(url, json.dumps(batch).encode())[1]) == -32600
    assert code_of(rpc(url, "tz_sendTransaction", "0x" + "01" * 5000)) == -32602
    assert code_of(rpc(url, "tz_sendTransactions", ["0x00"] * 201)) == -32602

    # nothing above touched the state or produced a block
    assert snapshot(small_node) == before
    # and blocks go on: a good transaction is included in the next block
    receipt = client.send(good.action, wait=True)
    assert receipt["status"] == 1 and receipt["blockNumber"] == before[0] + 1
    # replaying it is refused
    replay = rpc(url, "tz_sendTransaction", hexraw(order(nonce)))
    assert replay["error"]["data"]["reason"] == "nonce_mismatch"
    assert rpc(url, "tz_getNonce", "0x" + CAROL.address.hex())["result"]["nonce"] == nonce + 1
    client.cancel_all(wait=True)


def test_a_flood_beyond_the_mempool_bound_is_refused_and_blocks_go_on(small_node: Node) -> None:
    url = small_node.url
    signer = Signer(ACCOUNTS[6].private_key)
    client = TradeZoneClient(url, signer)
    nonce = client.get_nonce()["pendingNonce"]
    txs = [order(nonce + i, signer, price=1 + i % 50) for i in range(MEMPOOL + 25)]
    before = snapshot(small_node)
    answer = rpc(url, "tz_sendTransactions", [hexraw(tx) for tx in txs])["result"]
    accepted = [a for a in answer if isinstance(a, str)]
    refused = [a for a in answer if isinstance(a, dict)]
    assert len(accepted) == MEMPOOL and accepted == answer[:MEMPOOL]
    assert refused and all(r["code"] == -32010 and r["data"]["reason"] in ("mempool_full", "nonce_mismatch")
                           for r in refused)
    assert refused[0]["data"]["reason"] == "mempool_full"
    # the admitted ones are all included; the refused ones never were
    for tx_hash in accepted:
        receipt = client.wait_for_receipt(tx_hash, timeout=15)
        assert receipt["status"] == 1
    after = snapshot(small_node)
    assert after[0] > before[0]
    assert client.get_nonce() == {"nonce": nonce + MEMPOOL, "pendingNonce": nonce + MEMPOOL}
    assert len(client.get_open_orders(market=OUTCOME)) == MEMPOOL
    # the node takes new transactions again
    assert client.cancel_all(wait=True)["status"] == 1
    assert client.get_open_orders() == []


@pytest.fixture(scope="module")
def paused_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node whose block loop waits ten minutes: blocks come only when the test produces one."""
    running = Node(Path(tmp_path_factory.mktemp("tzpaused")), block_ms=600_000).start()
    yield running
    running.stop()


def test_inclusion_wait_times_out_with_the_hash_then_resolves_in_the_next_block(paused_node: Node) -> None:
    node = paused_node
    url = node.url
    first, second = order(0), order(1)
    answer = rpc(url, "tz_sendTransaction", hexraw(first), {"waitForInclusion": True, "timeoutMs": 100})
    assert answer["error"]["code"] == -32011
    tx_hash = answer["error"]["data"]["hash"]
    assert rpc(url, "tz_getTransactionReceipt", tx_hash)["result"] is None
    pending = rpc(url, "tz_getTransactionByHash", tx_hash)["result"]  # pending: found, in no block yet
    assert pending["hash"] == tx_hash and pending["blockNumber"] is None
    assert rpc(url, "tz_syncStatus")["result"]["mempoolSize"] == 1
    assert rpc(url, "tz_getNonce", "0x" + CAROL.address.hex())["result"] == {"nonce": 0, "pendingNonce": 1}

    waiting: list[Any] = []
    thread = threading.Thread(target=lambda: waiting.append(
        rpc(url, "tz_sendTransaction", hexraw(second), {"waitForInclusion": True, "timeoutMs": 20_000})))
    thread.start()
    while node.call(lambda: len(node.sequencer.mempool)) < 2:
        time.sleep(0.01)
    produced = node.call(lambda: node.sequencer.produce_block(node.sequencer.head.timestamp_ms + 100))
    assert produced is not None
    thread.join(20)
    receipt = waiting[0]["result"]
    assert receipt["status"] == 1 and receipt["blockNumber"] == produced[0].header.number
    assert rpc(url, "tz_getTransactionReceipt", tx_hash)["result"]["blockNumber"] == receipt["blockNumber"]
    assert rpc(url, "tz_getTransactionByHash", tx_hash)["result"]["blockNumber"] == receipt["blockNumber"]
