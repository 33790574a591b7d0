"""Spot markets: reservation, settlement of base and quote, maker/taker fees, rounding against
the account, post-only, IOC, self-trade prevention, cancels and modifies."""

from __future__ import annotations

from node.tradezone.receipts import (
    ORDER_DONE,
    ORDER_FILLED,
    ORDER_RESTING,
    REMOVED_CANCELLED,
    REMOVED_SELF_TRADE,
)
from node.tradezone.trading import buy_reservation
from node.tradezone.transactions import (
    ALL_MARKETS,
    BUY,
    SELL,
    TIF_IOC,
    TIF_POST_ONLY,
    CancelAll,
    CancelByClientId,
    CancelOrder,
    ModifyOrder,
    PlaceOrder,
    PlaceOrders,
)
from tests.vectors.harness import SPOT, USDT, WBTC, Harness

FEE_ACCOUNT = bytes.fromhex("fee0000000000000000000000000000000000001")
PRICE = 1_000_000  # 100,000.0 USDT per BTC in 0.1 USDT ticks; one lot (0.0001 BTC) = 10 USDT


def funded() -> Harness:
    h = Harness()
    h.block([
        h.deposit(h.addr(1), USDT, 1_000_000_000),
        h.deposit(h.addr(2), WBTC, 100_000_000),
        h.deposit(h.addr(3), USDT, 1_000_000_000),
        h.deposit(h.addr(3), WBTC, 100_000_000),
    ])
    return h


def total(h: Harness, asset: int) -> int:
    return sum(b for (_, a), (b, _) in h.state.balances.items() if a == asset)


def test_resting_bid_reserves_notional_worst_fee_and_rounding_slack() -> None:
    h = funded()
    market = h.state.markets[SPOT]
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 3))])
    assert r[0].orders[0].status == ORDER_RESTING
    expected = 3 * PRICE * 10 + (3 * PRICE * 10 * 500 + 999_999) // 1_000_000 + 3
    assert buy_reservation(market, PRICE, 3) == expected
    assert h.balance(1, USDT) == (1_000_000_000, expected)


def test_resting_ask_reserves_base() -> None:
    h = funded()
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 4))])
    assert h.balance(2, WBTC) == (100_000_000, 40_000)


def test_fill_moves_base_and_quote_and_pays_fees_with_a_maker_rebate() -> None:
    h = funded()
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 4))])
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 4, TIF_IOC))])
    fill = r[0].fills[0]
    value = 4 * PRICE * 10  # 40 USDT
    assert (fill.price, fill.size, fill.taker_fee, fill.maker_fee) == (PRICE, 4, value * 500 // 10**6, -(value * 100 // 10**6))
    assert r[0].orders[0].status == ORDER_FILLED
    assert h.balance(1, WBTC) == (40_000, 0)
    assert h.balance(1, USDT) == (1_000_000_000 - value - fill.taker_fee, 0)
    assert h.balance(2, WBTC) == (100_000_000 - 40_000, 0)
    assert h.balance(2, USDT) == (value + 4_000, 0)
    assert h.balance(FEE_ACCOUNT, USDT) == (fill.taker_fee + fill.maker_fee, 0)
    assert total(h, USDT) == 2_000_000_000 and total(h, WBTC) == 200_000_000


def test_fees_round_against_the_account() -> None:
    h = funded()
    # one lot at price 7: notional 70 units; taker fee 0.035 -> 1, maker rebate 0.007 -> 0
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, 7, 1))])
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, 7, 1))])
    fill = r[0].fills[0]
    assert fill.taker_fee == 1 and fill.maker_fee == 0


def test_taker_walks_levels_at_maker_prices_and_rests_the_rest() -> None:
    h = funded()
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 1)), h.sign(3, PlaceOrder(SPOT, SELL, PRICE + 10, 2))])
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, PRICE + 10, 5))])
    assert [(f.price, f.size) for f in r[0].fills] == [(PRICE, 1), (PRICE + 10, 2)]
    result = r[0].orders[0]
    assert (result.status, result.filled, result.remaining) == (ORDER_RESTING, 3, 2)
    assert h.state.books[SPOT].best_bid() == PRICE + 10


def test_ioc_remainder_is_released() -> None:
    h = funded()
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 1))])
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 5, TIF_IOC))])
    assert r[0].orders[0].status == ORDER_DONE
    assert h.balance(1, USDT)[1] == 0 and not h.state.books[SPOT].best_bid()


def test_post_only_that_would_cross_is_rejected_without_trace() -> None:
    h = funded()
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 1))])
    before = dict(h.state.balances)
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 1, TIF_POST_ONLY))])
    assert r[0].reason == "post_only_would_cross"
    assert h.state.balances == before and len(h.state.books[SPOT]) == 1


def test_tick_lot_and_bounds_are_enforced() -> None:
    h = funded()
    r = h.block([
        h.sign(1, PlaceOrder(SPOT, BUY, 0, 1)),
        h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 0)),
        h.sign(1, PlaceOrder(SPOT, 2, PRICE, 1)),
        h.sign(1, PlaceOrder(999, BUY, PRICE, 1)),
        h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 1, 0, True)),
    ])
    assert [x.reason for x in r] == ["invalid_order", "invalid_order", "invalid_order", "unknown_market",
                                     "invalid_order"]


def test_insufficient_balance_is_rejected() -> None:
    h = Harness()
    h.fund(1, USDT, 100)
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 1))])
    assert r[0].reason == "insufficient_balance" and h.balance(1, USDT) == (100, 0)


def test_self_trade_expires_the_resting_maker() -> None:
    h = funded()
    h.block([h.sign(3, PlaceOrder(SPOT, SELL, PRICE, 2)), h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 2))])
    r = h.block([h.sign(3, PlaceOrder(SPOT, BUY, PRICE, 2))])
    assert [(x.why) for x in r[0].removed] == [REMOVED_SELF_TRADE]
    assert r[0].fills[0].maker == h.addr(2)
    assert h.balance(3, WBTC) == (100_000_000 + 20_000, 0)


def test_cancel_by_id_client_id_and_all_release_reservations() -> None:
    h = funded()
    r = h.block([
        h.sign(3, PlaceOrder(SPOT, BUY, PRICE - 100, 1, client_order_id=7)),
        h.sign(3, PlaceOrder(SPOT, BUY, PRICE - 200, 1)),
        h.sign(3, PlaceOrder(SPOT, SELL, PRICE + 100, 1)),
        h.sign(3, PlaceOrder(SPOT, SELL, PRICE + 200, 1)),
    ])
    ids = [x.orders[0].order_id for x in r]
    r = h.block([h.sign(3, CancelByClientId(SPOT, 7)), h.sign(3, CancelOrder(SPOT, ids[1]))])
    assert all(x.ok for x in r) and r[1].removed[0].why == REMOVED_CANCELLED
    assert h.balance(3, USDT)[1] == 0
    r = h.block([h.sign(3, CancelAll(ALL_MARKETS)), h.sign(3, CancelOrder(SPOT, ids[0]))])
    assert len(r[0].removed) == 2 and r[1].reason == "order_not_found"
    assert h.balance(3, WBTC)[1] == 0 and len(h.state.books[SPOT]) == 0


def test_cannot_cancel_another_accounts_order() -> None:
    h = funded()
    r = h.block([h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 1))])
    r = h.block([h.sign(1, CancelOrder(SPOT, r[0].orders[0].order_id))])
    assert r[0].reason == "order_not_found" and len(h.state.books[SPOT]) == 1


def test_modify_down_keeps_priority_and_releases_reservation() -> None:
    h = funded()
    r = h.block([h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 5)), h.sign(3, PlaceOrder(SPOT, SELL, PRICE, 5))])
    first = r[0].orders[0].order_id
    r = h.block([h.sign(2, ModifyOrder(SPOT, first, PRICE, 2))])
    assert r[0].orders[0].order_id == first
    assert h.balance(2, WBTC)[1] == 20_000
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 1))])
    assert r[0].fills[0].maker == h.addr(2)


def test_modify_price_is_cancel_replace_and_can_take() -> None:
    h = funded()
    r = h.block([h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 1)), h.sign(3, PlaceOrder(SPOT, BUY, PRICE - 50, 1))])
    bid = r[1].orders[0].order_id
    r = h.block([h.sign(3, ModifyOrder(SPOT, bid, PRICE, 1))])
    assert r[0].removed[0].order_id == bid and r[0].fills[0].maker == h.addr(2)
    assert h.balance(3, USDT)[1] == 0


def test_batch_orders_stand_alone() -> None:
    h = funded()
    r = h.block([h.sign(1, PlaceOrders((PlaceOrder(SPOT, BUY, PRICE, 1), PlaceOrder(SPOT, BUY, 0, 1),
                                        PlaceOrder(SPOT, BUY, PRICE - 10, 1))))])
    statuses = [o.status for o in r[0].orders]
    assert statuses[0] == ORDER_RESTING and statuses[2] == ORDER_RESTING
    assert r[0].orders[1].reason == "invalid_order"
    assert len(h.state.books[SPOT]) == 2


def test_maker_first_ordering_lets_a_post_only_rest_before_a_taker_of_the_same_block() -> None:
    h = funded()
    r = h.block([
        h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 1, TIF_IOC)),
        h.sign(2, PlaceOrder(SPOT, SELL, PRICE, 1, TIF_POST_ONLY)),
    ])
    assert r[0].fills and r[0].fills[0].maker == h.addr(2)


def test_failed_modify_restores_the_cancelled_order_with_its_priority_and_reservation() -> None:
    h = funded()
    h.fund(4, WBTC, 30_000)
    r = h.block([h.sign(4, PlaceOrder(SPOT, SELL, PRICE, 2)), h.sign(3, PlaceOrder(SPOT, SELL, PRICE, 2))])
    first = r[0].orders[0].order_id
    before = (dict(h.state.balances), dict(h.state.orders))
    r = h.block([h.sign(4, ModifyOrder(SPOT, first, PRICE + 10, 5))])  # needs 50,000 sats: it has 30,000
    assert r[0].reason == "insufficient_balance"
    assert (h.state.balances, h.state.orders) == before
    assert [o.order_id for o in h.state.books[SPOT].orders()][0] == first
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, PRICE, 1))])
    assert r[0].fills[0].maker_order_id == first
