"""Every tz_* read and send method over HTTP against a real node (embedded EVM chain, LevelDB,
sequencer producing blocks, batcher committing to the bridge)."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest
import rlp

from node.sdk import L1Bridge, RpcCallError, TradeZoneClient, TransactionRejected
from node.tradezone.blocks import header_hash
from node.tradezone.margin import margin_summary
from node.tradezone.signing import Signer
from node.tradezone.state import balance_key
from node.tradezone.transactions import BUY, SELL, TIF_POST_ONLY, PlaceOrder, encode_transaction
from node.tzrpc import TzRpc
from proofs.verify import verify_proof

from .conftest import ACCOUNTS, BTC_PERP, OUTCOME, USDT, WCP, Node

ALICE_KEY, BOB_KEY = ACCOUNTS[5].private_key, ACCOUNTS[6].private_key
ALICE, BOB = Signer(ALICE_KEY), Signer(BOB_KEY)


def raw_call(url: str, method: str, *params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def wait_until(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def usdt_of(account: dict[str, Any]) -> int:
    return next((int(b["balance"]) for b in account["balances"] if b["assetId"] == USDT), 0)


@pytest.fixture(scope="module")
def funded(node: Node) -> tuple[TradeZoneClient, TradeZoneClient]:
    """Alice and Bob with 100 USDT each, deposited on the EVM chain through the bridge."""
    alice, bob = TradeZoneClient(node.url, ALICE), TradeZoneClient(node.url, BOB)
    for key, client in ((ALICE_KEY, alice), (BOB_KEY, bob)):
        L1Bridge(node.eth_url, key).deposit(USDT, 100_000_000)
        wait_until(lambda c=client: usdt_of(c.get_account()) >= 100_000_000)
    return alice, bob


def test_identity_and_blocks_by_number_tag_and_hash(node: Node, funded: Any) -> None:
    client = TradeZoneClient(node.url)
    assert client.chain_id() == 1961
    number = client.block_number()
    assert 1 <= number <= node.call(lambda: node.sequencer.head.number)
    latest = client.get_block("latest")
    assert latest is not None and latest["number"] >= number
    stored = node.call(node.sequencer.store.get_header, latest["number"])
    assert latest["hash"] == "0x" + header_hash(stored).hex()
    assert latest["stateRoot"] == "0x" + stored.state_root.hex()
    genesis = client.get_block("earliest")
    assert genesis is not None and genesis["number"] == 0 and genesis["transactions"] == []
    assert client.get_block(0) == genesis and client.get_block("0x0") == genesis
    assert client.get_block_by_hash(latest["hash"]) == client.get_block(latest["number"])
    full = client.get_block(1, full=True)
    assert full is not None and full["transactions"][0]["type"] == "DepositMessage"
    assert full["transactions"][0]["hash"] == client.get_block(1)["transactions"][0]  # type: ignore[index]
    assert client.get_block(10**9) is None
    assert client.get_block_by_hash("0x" + "ab" * 32) is None
    for tag in ("safe", "finalized", "pending"):
        assert client.get_block(tag) is not None


def test_send_with_wait_returns_the_receipt_and_lookups_find_it(node: Node, funded: Any) -> None:
    alice, _bob = funded
    receipt = alice.place_order(BTC_PERP, BUY, 900_000, 2, tif=TIF_POST_ONLY, client_order_id=77, wait=True)
    assert receipt["status"] == 1 and receipt["orders"][0][1] == 0  # resting
    tx_hash = receipt["transactionHash"]
    assert alice.get_receipt(tx_hash) == receipt
    tx = alice.get_transaction(tx_hash)
    assert tx is not None and tx["type"] == "PlaceOrder" and tx["blockNumber"] == receipt["blockNumber"]
    assert tx["account"] == "0x" + ALICE.address.hex() and tx["action"]["clientOrderId"] == "77"
    block = alice.get_block(receipt["blockNumber"])
    assert block is not None and block["transactions"][receipt["transactionIndex"]] == tx_hash
    assert alice.get_receipt("0x" + "00" * 32) is None and alice.get_transaction("0x" + "00" * 32) is None
    order_id = receipt["orders"][0][0]
    orders = alice.get_open_orders(market=BTC_PERP)
    assert [o["orderId"] for o in orders] == [order_id]
    assert orders[0]["price"] == 900_000 and orders[0]["size"] == 2 and orders[0]["clientOrderId"] == "77"
    assert alice.cancel_order(BTC_PERP, order_id, wait=True)["status"] == 1
    assert alice.get_open_orders(market=BTC_PERP) == []


def test_typed_data_document_with_signature_is_accepted_like_raw_bytes(node: Node, funded: Any) -> None:
    alice, _bob = funded
    receipt = alice.send_typed(PlaceOrder(BTC_PERP, BUY, 800_000, 1, TIF_POST_ONLY), wait=True)
    assert receipt["status"] == 1
    tx = alice.get_transaction(receipt["transactionHash"])
    assert tx is not None and tx["action"]["price"] == "800000"
    alice.cancel_all(BTC_PERP, wait=True)


def test_trade_shows_in_trades_book_account_positions_and_margin(node: Node, funded: Any) -> None:
    alice, bob = funded
    ask = alice.place_order(BTC_PERP, SELL, 1_000_000, 3, tif=TIF_POST_ONLY, wait=True)
    assert ask["status"] == 1
    book = alice.get_order_book(BTC_PERP, 5)
    assert book["asks"] == [[1_000_000, 3]] and book["bids"] == []
    take = bob.place_order(BTC_PERP, BUY, 1_000_000, 2, wait=True)
    assert take["status"] == 1 and len(take["fills"]) == 1
    trades = alice.get_trades(BTC_PERP, 10)
    newest = trades[0]
    assert newest["transactionHash"] == take["transactionHash"] and newest["size"] == 2
    assert newest["price"] == 1_000_000 and newest["takerSide"] == "buy"
    assert newest["maker"] == "0x" + ALICE.address.hex() and newest["taker"] == "0x" + BOB.address.hex()
    assert alice.get_order_book(BTC_PERP)["asks"] == [[1_000_000, 1]]

    view = bob.get_account()
    (position,) = view["positions"]
    assert position["marketId"] == BTC_PERP and position["size"] == 2 and position["side"] == "long"
    summary = node.call(margin_summary, node.sequencer.state, BOB.address, USDT)
    (margin,) = view["margin"]
    assert (int(margin["equity"]), int(margin["initialMargin"]), int(margin["maintenanceMargin"])) == (
        summary.equity, summary.initial, summary.maintenance)
    assert int(margin["initialMargin"]) == int(position["initialMargin"]) > int(position["maintenanceMargin"]) > 0
    assert view["nonce"] == view["pendingNonce"] == bob.get_nonce()["nonce"]
    alice_view = alice.get_account()
    assert alice_view["positions"][0]["size"] == -2
    assert [o["size"] for o in alice_view["openOrders"]] == [1]
    alice.cancel_all(wait=True)

    # a TzRpc started later seeds its trades ring from the stored receipts
    fresh = TzRpc(node.sequencer)
    node.call(fresh.trades.seed, node.sequencer.store, node.sequencer.head.number)
    assert [t.to_json() for t in fresh.trades.recent(BTC_PERP, 10)] == trades


def test_markets_and_assets_list_the_genesis(node: Node) -> None:
    client = TradeZoneClient(node.url)
    markets = {m["marketId"]: m for m in client.get_markets()}
    assert {1, 2, 3, 100, 101, 102} <= set(markets)
    assert markets[BTC_PERP]["kind"] == "perp" and markets[BTC_PERP]["maxLeverage"] == 20
    assert markets[OUTCOME]["kind"] == "outcome" and markets[OUTCOME]["resolution"] in ("unresolved", "yes", "no")
    assets = {a["assetId"]: a for a in client.get_assets()}
    assert assets[USDT]["symbol"] == "USDT" and assets[USDT]["decimals"] == 6 and assets[USDT]["l1Backed"]
    assert assets[WCP]["l1Backed"] is False


def test_batch_sync_status_and_proof_anchored_on_the_bridge(node: Node, funded: Any) -> None:
    alice, _bob = funded
    assert node.step_batcher() or node.sequencer.store.head(b"safe") == node.sequencer.head.number
    status = alice.sync_status()
    assert status["safe"]["number"] >= 1 and status["l1Reachable"] is True and status["l1Head"] > 0
    assert status["unsafe"]["number"] >= status["safe"]["number"] >= status["finalized"]["number"]
    assert status["mempoolSize"] == 0 and status["batchesInFlight"] == 0  # step() waits for its batch
    first = alice.get_batch(0)
    assert first is not None and first["status"] in ("committed", "finalized") and first["firstBlock"] == 1
    assert alice.get_batch(10**6) is None

    bridge_root = L1Bridge(node.eth_url, ALICE_KEY).last_committed_root()
    proof = alice.get_proof([USDT, 2], block="safe")
    assert proof["stateRoot"] == "0x" + bridge_root.hex()
    assert proof["batch"] is not None and proof["batch"]["lastBlock"] == proof["blockNumber"]
    usdt, wbtc = proof["balances"]
    key = balance_key(ALICE.address, USDT)
    value = verify_proof(bridge_root, key, [bytes.fromhex(n[2:]) for n in usdt["proof"]])
    assert usdt["key"] == "0x" + key.hex() and usdt["value"] == "0x" + value.hex()
    balance, reserved = (int.from_bytes(item, "big") for item in rlp.decode(value))
    assert (usdt["balance"], usdt["reserved"]) == (str(balance), str(reserved)) and balance > 0
    assert wbtc["value"] == "0x" and wbtc["balance"] == "0"  # an absence proof
    assert verify_proof(bridge_root, balance_key(ALICE.address, 2), [bytes.fromhex(n[2:]) for n in wbtc["proof"]]) == b""

    # a later block that no batch ends at: provable, anchored to no batch
    alice.place_order(BTC_PERP, BUY, 700_000, 1, tif=TIF_POST_ONLY, wait=True)
    latest = alice.get_proof([USDT])
    assert latest["batch"] is None and latest["blockNumber"] == alice.block_number()
    # the first committed batch's root stays provable, anchored to that batch
    old = alice.get_proof([WCP], block=first["lastBlock"])
    assert old["stateRoot"] == first["stateRoot"] and old["batch"]["index"] == 0
    with pytest.raises(RpcCallError) as missing:
        alice.get_proof([USDT], block=10**9)
    assert missing.value.code == -32012
    alice.cancel_all(wait=True)


def test_send_transactions_answers_each_item_with_its_hash_or_error(node: Node, funded: Any) -> None:
    client = TradeZoneClient(node.url, Signer(ACCOUNTS[7].private_key))
    nonce = client.get_nonce()["pendingNonce"]
    signer = Signer(ACCOUNTS[7].private_key)
    good = [signer.sign(PlaceOrder(OUTCOME, BUY, 10 + i, 1, TIF_POST_ONLY), nonce + i) for i in range(3)]
    raws = ["0x" + encode_transaction(tx).hex() for tx in good]
    replay = raws[0]
    answer = client.call("tz_sendTransactions", [raws[0], "nothex", raws[1], replay, 5, raws[2]])
    assert answer[0].startswith("0x") and answer[2].startswith("0x") and answer[5].startswith("0x")
    assert answer[1]["code"] == -32602 and answer[4]["code"] == -32602
    assert answer[3]["code"] == -32010 and answer[3]["data"]["reason"] in ("duplicate_transaction", "nonce_mismatch")
    wait_until(lambda: all(client.get_receipt(h) is not None for h in (answer[0], answer[2], answer[5])))
    client.cancel_all(wait=True)


def test_sdk_batch_and_errors_carry_codes(node: Node) -> None:
    client = TradeZoneClient(node.url, Signer(ACCOUNTS[7].private_key))
    results = client.batch([("tz_chainId", []), ("tz_getOrderBook", [999]), ("tz_nope", [])])
    assert results[0] == 1961
    assert isinstance(results[1], RpcCallError) and results[1].code == -32602 and "unknown market" in results[1].message
    assert isinstance(results[2], RpcCallError) and results[2].code == -32601
    with pytest.raises(TransactionRejected) as refused:
        client.place_order(999, BUY, 1, 1)
    assert refused.value.reason == "unknown_market" and refused.value.code == -32010
    with pytest.raises(RpcCallError) as http_sub:
        client.call("tz_subscribe", "newHeads")
    assert http_sub.value.code == -32013
    assert raw_call(node.url, "tz_getNonce", "0x12")["error"]["code"] == -32602


def test_a_port_in_use_fails_to_start_and_leaves_nothing_hooked(node: Node) -> None:
    listeners = node.call(lambda: len(node.sequencer.listeners))
    second = TzRpc(node.sequencer)
    with pytest.raises(OSError):
        node.run(second.start("127.0.0.1", node.service.port))
    assert node.call(lambda: len(node.sequencer.listeners)) == listeners
