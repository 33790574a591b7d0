"""The SDK signs and sends every action type to a real node, tracks nonces, waits for
inclusion, reads back, and moves funds on the EVM chain (deposit, then claim a withdrawal)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from node.sdk import L1Bridge, RpcCallError, TradeZoneClient, TransactionRejected
from node.tradezone.signing import Signer
from node.tradezone.transactions import (
    BUY,
    OUTCOME_YES,
    SELL,
    TIF_POST_ONLY,
    PlaceOrder,
)
from node.tradezone.venues import NO_SIDE_FLAG

from .conftest import ACCOUNTS, BTC_PERP, ORACLE, OUTCOME, USDT, WCP, Node

DAVE_KEY, ERIN_KEY, AGENT_KEY = ACCOUNTS[5].private_key, ACCOUNTS[6].private_key, ACCOUNTS[2].private_key
DAVE, ERIN, AGENT = Signer(DAVE_KEY), Signer(ERIN_KEY), Signer(AGENT_KEY)


def balance(client: TradeZoneClient, asset_id: int, who: bytes | None = None) -> tuple[int, int]:
    for item in client.get_account(who)["balances"]:
        if item["assetId"] == asset_id:
            return int(item["balance"]), int(item["reserved"])
    return 0, 0


def wait_until(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


def ok(receipt: dict[str, Any]) -> dict[str, Any]:
    assert receipt["status"] == 1, receipt
    return receipt


def test_every_trading_action_through_the_sdk(node: Node) -> None:
    dave = TradeZoneClient(node.url, DAVE)
    # place one, place many, cancel by id, by client id, modify, cancel all
    first = ok(dave.place_order(OUTCOME, BUY, 30, 4, tif=TIF_POST_ONLY, client_order_id=11, wait=True))
    order_id = first["orders"][0][0]
    many = ok(dave.place_orders([PlaceOrder(OUTCOME, BUY, 20 + i, 1, TIF_POST_ONLY, False, 100 + i)
                                 for i in range(3)], wait=True))
    assert len(many["orders"]) == 3
    assert sorted(o["price"] for o in dave.get_open_orders(market=OUTCOME)) == [20, 21, 22, 30]
    ok(dave.modify_order(OUTCOME, order_id, 31, 2, wait=True))
    book = dave.get_order_book(OUTCOME, 10)
    assert book["bids"][0] == [31, 2] and [31, 2] in book["bids"]
    ok(dave.cancel_by_client_id(OUTCOME, 101, wait=True))
    assert sorted(o["price"] for o in dave.get_open_orders(market=OUTCOME)) == [20, 22, 31]
    modified = next(o for o in dave.get_open_orders() if o["price"] == 31)
    ok(dave.cancel_order(OUTCOME, modified["orderId"], wait=True))
    cancelled = ok(dave.cancel_all(OUTCOME, wait=True))
    assert len(cancelled["removed"]) == 2 and dave.get_open_orders() == []
    assert balance(dave, WCP)[1] == 0  # every reservation released

    # without waiting: a hash now, the receipt later; nonces advance on their own
    nonce = dave.get_nonce()["pendingNonce"]
    hashes = [dave.place_order(OUTCOME, BUY, 5, 1, tif=TIF_POST_ONLY) for _ in range(3)]
    assert all(h.startswith("0x") for h in hashes)
    receipts = [dave.wait_for_receipt(h) for h in hashes]
    assert all(r["status"] == 1 for r in receipts)
    assert dave.get_nonce()["nonce"] == nonce + 3
    sent = dave.send_many([PlaceOrder(OUTCOME, BUY, 6, 1, TIF_POST_ONLY) for _ in range(4)])
    assert all(isinstance(h, str) for h in sent)
    wait_until(lambda: dave.get_nonce()["nonce"] == nonce + 7)
    ok(dave.cancel_all(wait=True))

    # a stale counter (another client used the key) is refused once, then re-synced
    other = TradeZoneClient(node.url, DAVE)
    ok(other.place_order(OUTCOME, BUY, 7, 1, tif=TIF_POST_ONLY, wait=True))
    with pytest.raises(TransactionRejected) as stale:
        dave.place_order(OUTCOME, BUY, 8, 1, tif=TIF_POST_ONLY, wait=True)
    assert stale.value.reason == "nonce_mismatch"
    ok(dave.cancel_all(wait=True))


def test_agents_transfers_oracle_and_resolution(node: Node) -> None:
    dave, erin = TradeZoneClient(node.url, DAVE), TradeZoneClient(node.url, ERIN)
    # an approved agent trades for dave with its own nonce; once revoked it cannot
    ok(dave.approve_agent(AGENT.address, wait=True))
    agent = TradeZoneClient(node.url, AGENT, account=DAVE.address)
    placed = ok(agent.place_order(OUTCOME, BUY, 12, 1, tif=TIF_POST_ONLY, wait=True))
    assert [o["orderId"] for o in dave.get_open_orders()] == [placed["orders"][0][0]]
    assert agent.get_nonce()["nonce"] == 1 and agent.account == DAVE.address
    with pytest.raises(TransactionRejected) as no_withdraw:
        agent.withdraw(WCP, 1, DAVE.address)
    assert no_withdraw.value.reason == "unauthorized_signer"
    ok(dave.revoke_agent(AGENT.address, wait=True))
    with pytest.raises(TransactionRejected) as revoked:
        agent.cancel_all()
    assert revoked.value.reason == "unauthorized_signer"
    ok(dave.cancel_all(wait=True))

    # transfer
    before = balance(erin, WCP)[0]
    ok(dave.transfer(ERIN.address, WCP, 123_456, wait=True))
    assert balance(erin, WCP)[0] == before + 123_456

    # oracle update by the market's oracle key; anyone else is refused
    oracle = TradeZoneClient(node.url, ORACLE)
    now = dave.get_block("latest")["timestampMs"]  # type: ignore[index]
    ok(oracle.oracle_update(BTC_PERP, 1_010_000, now, wait=True))
    market = next(m for m in dave.get_markets() if m["marketId"] == BTC_PERP)
    assert market["markPrice"] == 1_010_000 and market["lastOracleMs"] == now
    with pytest.raises(TransactionRejected) as not_oracle:
        dave.oracle_update(BTC_PERP, 1_000_000, now + 1)
    assert not_oracle.value.reason == "unauthorized_signer"

    # an outcome market: dave holds YES, erin NO, the resolver resolves YES and dave is paid
    ok(dave.place_order(102, BUY, 70, 2, wait=True))
    fill = ok(erin.place_order(102 | NO_SIDE_FLAG, BUY, 30, 2, wait=True))
    assert len(fill["fills"]) == 1
    wcp_before = balance(dave, WCP)[0]
    resolved = ok(oracle.resolve_market(102, OUTCOME_YES, wait=True))
    assert resolved["status"] == 1
    market = next(m for m in dave.get_markets() if m["marketId"] == 102)
    assert market["resolution"] == "yes"
    assert balance(dave, WCP)[0] > wcp_before
    with pytest.raises(TransactionRejected) as closed:
        dave.place_order(102, BUY, 50, 1)
    assert closed.value.reason == "market_closed"


def test_deposit_trade_withdraw_and_claim_on_the_evm_chain(node: Node) -> None:
    dave, erin = TradeZoneClient(node.url, DAVE), TradeZoneClient(node.url, ERIN)
    l1_dave, l1_erin = L1Bridge(node.eth_url, DAVE_KEY), L1Bridge(node.eth_url, ERIN_KEY)
    for bridge, client in ((l1_dave, dave), (l1_erin, erin)):
        start = balance(client, USDT)[0]
        receipt = bridge.deposit(USDT, 50_000_000)
        assert receipt["status"] == 1
        wait_until(lambda c=client, s=start: balance(c, USDT)[0] == s + 50_000_000)
    # OKB, the native coin, deposits with value
    okb_before = balance(dave, 0)[0]
    l1_dave.deposit(0, 10**15)
    wait_until(lambda: balance(dave, 0)[0] == okb_before + 10**15)

    ok(dave.place_order(BTC_PERP, SELL, 1_000_000, 1, tif=TIF_POST_ONLY, wait=True))
    ok(erin.place_order(BTC_PERP, BUY, 1_000_000, 1, wait=True))
    assert dave.get_trades(BTC_PERP, 1)[0]["size"] == 1

    on_l1 = l1_erin.token_balance(USDT)
    withdrawal = ok(erin.withdraw(USDT, 7_000_000, wait=True))
    withdrawal_id = withdrawal["withdrawal_id"]
    assert withdrawal_id is not None
    wait_until(lambda: node.step_batcher() or node.sequencer.store.head(b"safe") >= withdrawal["blockNumber"],
               timeout=30)
    batches: list[dict[str, Any]] = []
    while (batch := dave.get_batch(len(batches))) is not None:
        batches.append(batch)
    carrier = next(b for b in batches if b["firstBlock"] <= withdrawal["blockNumber"] <= b["lastBlock"])
    assert carrier["withdrawals"] >= 1 and carrier["l1TransactionHash"].startswith("0x")
    proof = erin.get_proof([USDT], block="safe")
    assert proof["batch"] is not None
    l1_dave.claim(withdrawal_id, ERIN.address, USDT, 7_000_000)  # anyone may send the claim
    assert l1_erin.token_balance(USDT) == on_l1 + 7_000_000
    with pytest.raises(Exception, match="claimed|revert"):
        l1_dave.claim(withdrawal_id, ERIN.address, USDT, 7_000_000)
    with pytest.raises(RpcCallError) as too_much:
        erin.withdraw(USDT, 10**15)
    assert too_much.value.code == -32010


def test_isolated_margin_through_the_sdk(node: Node) -> None:
    frank_key = ACCOUNTS[7].private_key
    frank = TradeZoneClient(node.url, Signer(frank_key))
    start = balance(frank, USDT)[0]
    assert L1Bridge(node.eth_url, frank_key).deposit(USDT, 40_000_000)["status"] == 1
    wait_until(lambda: balance(frank, USDT)[0] == start + 40_000_000)
    ok(frank.set_margin_mode(BTC_PERP, True, wait=True))
    ok(frank.adjust_isolated_margin(BTC_PERP, 15_000_000, wait=True))
    view = next(p for p in frank.get_account()["positions"] if p["marketId"] == BTC_PERP)
    assert (view["marginMode"], view["isolatedMargin"], view["isolatedEquity"], view["size"]) == (
        "isolated", "15000000", "15000000", 0)
    assert balance(frank, USDT) == (start + 40_000_000, 15_000_000)
    # the isolated market takes no part in the cross figures
    assert all(m["initialMargin"] == "0" for m in frank.get_account()["margin"])
    # an order beyond what the isolated margin backs is refused in its block, naming why
    too_big = frank.place_order(BTC_PERP, BUY, 900_000, 40, wait=True)
    assert (too_big["status"], too_big["reason"]) == (0, "insufficient_margin")
    ok(frank.place_order(BTC_PERP, BUY, 900_000, 30, tif=TIF_POST_ONLY, wait=True))
    ok(frank.cancel_all(BTC_PERP, wait=True))
    ok(frank.adjust_isolated_margin(BTC_PERP, 5_000_000, add=False, wait=True))
    ok(frank.set_margin_mode(BTC_PERP, False, wait=True))
    assert balance(frank, USDT) == (start + 40_000_000, 0)
    not_isolated = frank.adjust_isolated_margin(BTC_PERP, 1, wait=True)
    assert (not_isolated["status"], not_isolated["reason"]) == (0, "invalid_action")
    # admission refuses at once what it can see: margin moved into a spot market, or more than is free
    with pytest.raises(TransactionRejected) as spot:
        frank.adjust_isolated_margin(1, 1)
    assert spot.value.reason == "invalid_action"
    with pytest.raises(TransactionRejected) as too_much:
        frank.adjust_isolated_margin(BTC_PERP, 10**12)
    assert too_much.value.reason == "insufficient_balance"
