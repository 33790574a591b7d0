"""Binary outcome markets: mint (buy YES vs buy NO), merge (sell YES vs sell NO), transfers of
shares, the NO-side market id, resolution by the resolver, and trading stopping after it."""

from __future__ import annotations

from node.tradezone.outcome import pool_account
from node.tradezone.receipts import FILL_MERGE, FILL_MINT, FILL_TRADE, REMOVED_RESOLVED
from node.tradezone.state import set_balance
from node.tradezone.transactions import BUY, OUTCOME_NO, OUTCOME_YES, SELL, PlaceOrder, ResolveMarket
from node.tradezone.venues import NO_SIDE_FLAG
from tests.vectors.harness import OUTCOME, WCP, Harness

YES, NO = 1001, 1002
SHARE = 1_000_000  # one lot = one share = 1_000_000 units; collateral per lot at price p: p * 10_000
NO_MARKET = OUTCOME | NO_SIDE_FLAG


def funded() -> Harness:
    h = Harness()
    # keys 5, 6, 7 map to fresh test keys, so hand them WCP from the genesis faucet (devnet account 0)
    faucet = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")
    for i in (1, 2, 3):
        set_balance(h.state, h.addr(i), WCP, 1_000 * SHARE, 0)
        balance, reserved = h.state.balances[(faucet, WCP)]
        set_balance(h.state, faucet, WCP, balance - 1_000 * SHARE, reserved)
    return h


def supply(h: Harness, asset: int) -> int:
    return sum(b for (_, a), (b, _) in h.state.balances.items() if a == asset)


def test_buy_yes_against_buy_no_mints_a_pair_from_both_collaterals() -> None:
    h = funded()
    h.block([h.sign(1, PlaceOrder(OUTCOME, BUY, 60, 5))])  # buy YES at 0.60
    r = h.block([h.sign(2, PlaceOrder(NO_MARKET, BUY, 40, 5))])  # buy NO at 0.40
    fill = r[0].fills[0]
    assert fill.kind == FILL_MINT and fill.price == 60 and fill.size == 5
    assert h.balance(1, YES) == (5 * SHARE, 0) and h.balance(2, NO) == (5 * SHARE, 0)
    assert h.balance(pool_account(OUTCOME), WCP) == (5 * SHARE, 0)
    assert h.balance(1, WCP) == (1_000 * SHARE - 5 * 60 * 10_000, 0)
    taker_fee = fill.taker_fee
    assert h.balance(2, WCP) == (1_000 * SHARE - 5 * 40 * 10_000 - taker_fee, 0)
    assert supply(h, YES) == supply(h, NO) == h.balance(pool_account(OUTCOME), WCP)[0]


def test_sell_yes_against_sell_no_merges_and_pays_from_the_pool() -> None:
    h = funded()
    h.block([h.sign(1, PlaceOrder(OUTCOME, BUY, 60, 5))])
    h.block([h.sign(2, PlaceOrder(NO_MARKET, BUY, 40, 5))])
    h.block([h.sign(1, PlaceOrder(OUTCOME, SELL, 70, 3))])  # sell YES at 0.70
    r = h.block([h.sign(2, PlaceOrder(NO_MARKET, SELL, 30, 3))])  # sell NO at 0.30
    assert r[0].fills[0].kind == FILL_MERGE
    assert h.balance(pool_account(OUTCOME), WCP) == (2 * SHARE, 0)
    assert supply(h, YES) == supply(h, NO) == 2 * SHARE


def test_yes_against_yes_transfers_shares() -> None:
    h = funded()
    h.block([h.sign(1, PlaceOrder(OUTCOME, BUY, 60, 5))])
    h.block([h.sign(2, PlaceOrder(NO_MARKET, BUY, 40, 5))])
    h.block([h.sign(1, PlaceOrder(OUTCOME, SELL, 65, 2))])
    r = h.block([h.sign(3, PlaceOrder(OUTCOME, BUY, 65, 2))])
    assert r[0].fills[0].kind == FILL_TRADE
    assert h.balance(3, YES) == (2 * SHARE, 0) and h.balance(1, YES) == (3 * SHARE, 0)
    assert h.balance(pool_account(OUTCOME), WCP) == (5 * SHARE, 0)


def test_selling_shares_one_does_not_hold_is_refused() -> None:
    h = funded()
    r = h.block([h.sign(1, PlaceOrder(OUTCOME, SELL, 50, 1))])
    assert r[0].reason == "insufficient_balance"


def test_outcome_prices_are_strictly_inside_zero_and_one() -> None:
    h = funded()
    r = h.block([h.sign(1, PlaceOrder(OUTCOME, BUY, 100, 1)), h.sign(1, PlaceOrder(NO_MARKET, BUY, 0, 1))])
    assert [x.reason for x in r] == ["invalid_order", "invalid_order"]


def test_resolution_pays_winners_burns_shares_cancels_orders_and_stops_trading() -> None:
    h = funded()
    h.block([h.sign(1, PlaceOrder(OUTCOME, BUY, 60, 5))])
    h.block([h.sign(2, PlaceOrder(NO_MARKET, BUY, 40, 5))])
    h.block([h.sign(3, PlaceOrder(OUTCOME, BUY, 20, 1))])
    wcp_before = h.balance(1, WCP)[0]
    r = h.block([h.sign(1, ResolveMarket(OUTCOME, OUTCOME_YES))])
    assert r[0].reason == "unauthorized_signer"
    r = h.block([h.sign(8, ResolveMarket(OUTCOME, OUTCOME_YES))])
    assert r[0].ok and r[0].removed[0].why == REMOVED_RESOLVED
    assert h.balance(1, WCP)[0] == wcp_before + 5 * SHARE
    assert h.balance(1, YES) == (0, 0) and h.balance(2, NO) == (0, 0)
    assert h.balance(3, WCP)[1] == 0
    assert h.balance(pool_account(OUTCOME), WCP) == (0, 0)
    r = h.block([h.sign(3, PlaceOrder(OUTCOME, BUY, 20, 1)), h.sign(8, ResolveMarket(OUTCOME, OUTCOME_NO))])
    assert [x.reason for x in r] == ["market_closed", "market_closed"]
