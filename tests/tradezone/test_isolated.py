"""Isolated margin on perpetuals: choosing the mode, moving margin in and out, placements and fills
margined by the isolated position alone, closing, variation margin, and what the cross figures
and the free balance see."""

from __future__ import annotations

import copy

from node.tradezone.genesis import load_genesis_spec
from node.tradezone.margin import isolated_summary, margin_summary
from node.tradezone.receipts import ORDER_FILLED, ORDER_RESTING, REMOVED_UNFUNDED
from node.tradezone.state import MARGIN_CROSS, MARGIN_ISOLATED
from node.tradezone.transactions import (
    BUY,
    SELL,
    TIF_IOC,
    AdjustIsolatedMargin,
    OracleUpdate,
    PlaceOrder,
    SetMarginMode,
    Withdraw,
)
from tests.vectors.harness import BTC_PERP, SPOT, USDT, Harness

MARK = 1_000_000  # one lot = 10 USDT of notional at the mark
LOT_VALUE = MARK * 10
FUNDS = 1_000 * 10**6


def funded(variation_margin: bool = False) -> Harness:
    spec = copy.deepcopy(load_genesis_spec())
    for market in spec["markets"]:
        if market["kind"] == "perp":
            market["settle_variation_margin"] = variation_margin
    h = Harness(spec)
    h.block([h.deposit(h.addr(i), USDT, FUNDS) for i in (1, 2, 3)])
    return h


def isolated(h: Harness, key: int, margin: int) -> None:
    receipts = h.block([h.sign(key, SetMarginMode(BTC_PERP, True)),
                        h.sign(key, AdjustIsolatedMargin(BTC_PERP, margin, True))])
    assert all(r.ok for r in receipts), receipts


def reason(receipt: object) -> str:
    return receipt.reason  # type: ignore[attr-defined, no-any-return]


def test_choosing_isolated_records_the_mode_and_margin_moves_from_free_to_reserved() -> None:
    h = funded()
    isolated(h, 1, 50 * 10**6)
    position = h.state.positions[(h.addr(1), BTC_PERP)]
    assert (position.size, position.cost, position.margin_mode, position.isolated_margin) == (
        0, 0, MARGIN_ISOLATED, 50 * 10**6)
    assert h.balance(1, USDT) == (FUNDS, 50 * 10**6)  # still owned (the escape hatch pays it), not free
    r = h.block([h.sign(1, AdjustIsolatedMargin(BTC_PERP, 20 * 10**6, False))])
    assert r[0].ok
    assert h.state.positions[(h.addr(1), BTC_PERP)].isolated_margin == 30 * 10**6
    assert h.balance(1, USDT) == (FUNDS, 30 * 10**6)
    # back to cross: what is still set aside returns to the free balance and the leaf goes
    r = h.block([h.sign(1, SetMarginMode(BTC_PERP, False))])
    assert r[0].ok
    assert (h.addr(1), BTC_PERP) not in h.state.positions
    assert h.balance(1, USDT) == (FUNDS, 0)


def test_margin_mode_changes_are_refused_with_a_position_or_orders_open_or_outside_perpetuals() -> None:
    h = funded()
    r = h.block([h.sign(1, SetMarginMode(SPOT, True)), h.sign(1, SetMarginMode(BTC_PERP, False)),
                 h.sign(1, SetMarginMode(999, True))])
    assert [x.ok for x in r] == [False, False, False]
    assert "perpetual" in r[0].detail and "already" in r[1].detail and reason(r[2]) == "unknown_market"
    h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK - 1_000, 1))])
    r = h.block([h.sign(1, SetMarginMode(BTC_PERP, True))])
    assert not r[0].ok and "orders are open" in r[0].detail
    h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK, 1))])
    h.block([h.sign(3, PlaceOrder(BTC_PERP, BUY, MARK, 1, TIF_IOC))])
    r = h.block([h.sign(3, SetMarginMode(BTC_PERP, True))])
    assert not r[0].ok and "position is open" in r[0].detail
    r = h.block([h.sign(3, AdjustIsolatedMargin(BTC_PERP, 1, True))])
    assert not r[0].ok and "isolated" in r[0].detail


def test_margin_moves_are_bounded_by_the_free_balance_and_by_the_isolated_requirement() -> None:
    h = funded()
    isolated(h, 1, 100 * 10**6)
    r = h.block([h.sign(1, AdjustIsolatedMargin(BTC_PERP, FUNDS, True)),
                 h.sign(1, AdjustIsolatedMargin(BTC_PERP, 101 * 10**6, False)),
                 h.sign(1, AdjustIsolatedMargin(BTC_PERP, 0, True))])
    assert [reason(x) for x in r] == ["insufficient_balance", "insufficient_balance", "invalid_action"]
    # 100 USDT backs 200 lots' initial margin at 20x (2,000 USDT of notional at 5%)
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 200))])
    assert r[0].orders[0].status == ORDER_RESTING
    r = h.block([h.sign(1, AdjustIsolatedMargin(BTC_PERP, 1, False))])
    assert reason(r[0]) == "insufficient_margin"
    assert h.balance(1, USDT) == (FUNDS, 100 * 10**6)


def test_an_isolated_market_is_margined_by_its_own_margin_only() -> None:
    h = funded()
    h.block([h.sign(1, SetMarginMode(BTC_PERP, True))])
    # 1,000 USDT free does not back an isolated order: the position has no margin yet
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 1))])
    assert reason(r[0]) == "insufficient_margin"
    h.block([h.sign(1, AdjustIsolatedMargin(BTC_PERP, 10 * 10**6, True))])
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 20)), h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 1))])
    assert r[0].orders[0].status == ORDER_RESTING and reason(r[1]) == "insufficient_margin"
    # the cross figures leave the isolated market out entirely
    cross = margin_summary(h.state, h.addr(1), USDT)
    assert (cross.equity, cross.initial) == (FUNDS - 10 * 10**6, 0)
    # and the rest of the account withdraws freely
    r = h.block([h.sign(1, Withdraw(USDT, FUNDS - 10 * 10**6, h.addr(1)))])
    assert r[0].ok


def test_fills_move_the_isolated_margin_and_closing_returns_what_is_left() -> None:
    h = funded()
    isolated(h, 1, 60 * 10**6)
    h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK, 100))])
    # 50 USDT of margin and the fee would not do: the taker stops, nothing moves
    r = h.block([h.sign(1, AdjustIsolatedMargin(BTC_PERP, 10 * 10**6, False)),
                 h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 100, TIF_IOC))])
    assert r[1].fills == () and h.state.positions[(h.addr(1), BTC_PERP)].size == 0
    h.block([h.sign(1, AdjustIsolatedMargin(BTC_PERP, 10 * 10**6, True))])
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 100, TIF_IOC))])
    assert r[0].orders[0].status == ORDER_FILLED
    fee = r[0].fills[0].taker_fee
    position = h.state.positions[(h.addr(1), BTC_PERP)]
    assert (position.size, position.isolated_margin) == (100, 60 * 10**6 - fee)
    assert h.balance(1, USDT) == (FUNDS - fee, 60 * 10**6 - fee)  # free balance untouched by the fee
    # the price rises 2%: the long closes into a bid at the new price
    up = MARK * 102 // 100
    h.block([h.sign(8, OracleUpdate(BTC_PERP, up, h.head.timestamp_ms))])
    h.block([h.sign(3, PlaceOrder(BTC_PERP, BUY, up, 100))])
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, up, 100, TIF_IOC, True))])
    close_fee = r[0].fills[0].taker_fee
    profit = 100 * (up - MARK) * 10
    position = h.state.positions[(h.addr(1), BTC_PERP)]
    assert (position.size, position.cost, position.margin_mode, position.isolated_margin) == (0, 0, MARGIN_ISOLATED, 0)
    assert h.balance(1, USDT) == (FUNDS - fee + profit - close_fee, 0)


def test_closing_keeps_the_margin_the_open_orders_in_the_market_still_need() -> None:
    h = funded()
    isolated(h, 1, 80 * 10**6)
    h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK, 100))])
    h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 100, TIF_IOC))])
    # a bid to buy back lower, 40 lots (396 USDT of notional: 19.8 USDT of initial margin) ...
    low = MARK - 10_000
    assert h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, low, 40))])[0].ok
    order_margin = 40 * low * 10 // 20
    # ... stays backed when the long closes at the mark: its margin stays set aside, the rest returns
    h.block([h.sign(3, PlaceOrder(BTC_PERP, BUY, MARK, 100))])
    before = h.balance(1, USDT)[0]
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 100, TIF_IOC, True))])
    assert r[0].orders[0].status == ORDER_FILLED
    position = h.state.positions[(h.addr(1), BTC_PERP)]
    assert (position.size, position.isolated_margin) == (0, order_margin)
    assert h.balance(1, USDT) == (before - r[0].fills[0].taker_fee, order_margin)
    # the bid then fills as a maker, backed by what was kept
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, low, 40, TIF_IOC))])
    assert r[0].orders[0].status == ORDER_FILLED and h.state.positions[(h.addr(1), BTC_PERP)].size == 40


def test_a_forced_withdrawal_returns_the_isolated_margin_no_position_needs() -> None:
    h = funded()
    isolated(h, 1, 50 * 10**6)  # set aside, no position
    isolated(h, 2, 90 * 10**6)
    h.block([h.sign(3, PlaceOrder(BTC_PERP, SELL, MARK, 100))])
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, BUY, MARK, 100, TIF_IOC)),
                 h.sign(2, PlaceOrder(BTC_PERP, BUY, MARK - 10_000, 40))])  # 50 + 19.8 USDT needed
    assert all(x.ok for x in r)
    fee = r[0].fills[0].taker_fee
    r = h.block([h.forced_withdrawal(h.addr(1), USDT), h.forced_withdrawal(h.addr(2), USDT)])
    assert r[0].ok and r[1].ok and r[1].removed  # account 2's bid margined in USDT is cancelled
    withdrawn = [h.state.withdrawals[x.withdrawal_id].amount for x in r]
    # account 1: everything, its idle isolated margin included
    assert withdrawn[0] == FUNDS and h.balance(1, USDT) == (0, 0)
    assert h.state.positions[(h.addr(1), BTC_PERP)].isolated_margin == 0
    # account 2: all but the 50 USDT its open position needs (the bid is gone)
    position = h.state.positions[(h.addr(2), BTC_PERP)]
    assert position.isolated_margin == 50 * 10**6
    assert withdrawn[1] == FUNDS - fee - 50 * 10**6 and h.balance(2, USDT) == (50 * 10**6, 50 * 10**6)


def test_a_loss_beyond_the_isolated_margin_refuses_the_fill_and_spares_the_rest_of_the_account() -> None:
    h = funded()
    isolated(h, 1, 60 * 10**6)
    h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK, 100))])
    h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 100, TIF_IOC))])
    margin = h.state.positions[(h.addr(1), BTC_PERP)].isolated_margin
    # the mark falls 10%: the long's loss (100 USDT) exceeds its isolated margin
    down = MARK * 90 // 100
    h.block([h.sign(8, OracleUpdate(BTC_PERP, down, h.head.timestamp_ms))])
    # key 1's reduce-only ask rests at the new price; a taker's fill there would realize the loss
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, down, 100, reduce_only=True))])
    assert r[0].orders[0].status == ORDER_RESTING
    r = h.block([h.sign(3, PlaceOrder(BTC_PERP, BUY, down, 100, TIF_IOC))])
    assert r[0].fills == () and [x.why for x in r[0].removed] == [REMOVED_UNFUNDED]
    assert h.state.positions[(h.addr(1), BTC_PERP)].isolated_margin == margin
    assert h.balance(1, USDT)[0] - h.balance(1, USDT)[1] == FUNDS - 60 * 10**6  # free balance intact


def test_variation_margin_takes_an_isolated_loss_from_the_isolated_margin_only() -> None:
    h = funded(variation_margin=True)
    isolated(h, 1, 60 * 10**6)
    h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK, 100))])
    h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 100, TIF_IOC))])
    balance, reserved = h.balance(1, USDT)
    margin = h.state.positions[(h.addr(1), BTC_PERP)].isolated_margin
    free = balance - reserved
    # down 3%: a 30 USDT loss, paid from the isolated margin at the block's end
    h.block([h.sign(8, OracleUpdate(BTC_PERP, MARK * 97 // 100, h.head.timestamp_ms))])
    position = h.state.positions[(h.addr(1), BTC_PERP)]
    assert position.isolated_margin == margin - 30 * 10**6
    assert h.balance(1, USDT) == (balance - 30 * 10**6, reserved - 30 * 10**6)
    # down 10% in all: only what is left of the isolated margin is taken; the free balance is spared
    h.block([h.sign(8, OracleUpdate(BTC_PERP, MARK * 90 // 100, h.head.timestamp_ms + 1))])
    position = h.state.positions[(h.addr(1), BTC_PERP)]
    assert position.isolated_margin == 0
    assert h.balance(1, USDT)[0] - h.balance(1, USDT)[1] == free
    summary = isolated_summary(h.state.markets[BTC_PERP], position, 0)
    assert summary.equity < 0 and not summary.meets_maintenance  # bad debt: liquidation's to take
    # the short's cross account was credited the whole gain
    assert h.state.positions[(h.addr(2), BTC_PERP)].margin_mode == MARGIN_CROSS
