"""Linear perpetuals: positions and cost basis, realized PnL, margin at placement and at fill
(resting side included), reduce-only, oracle marks, open interest, conservation."""

from __future__ import annotations

from node.tradezone.margin import (
    apply_trade_to_position,
    initial_rate_ppm,
    maintenance_rate_ppm,
    margin_summary,
)
from node.tradezone.receipts import ORDER_RESTING, REMOVED_UNFUNDED
from node.tradezone.transactions import BUY, SELL, TIF_IOC, OracleUpdate, PlaceOrder, Transfer, Withdraw
from tests.vectors.harness import BTC_PERP, USDT, Harness

MARK = 1_000_000  # 100,000 USDT per BTC; one lot = 10 USDT of notional
LOT_VALUE = MARK * 10


def funded(amount: int = 1_000_000_000) -> Harness:
    h = Harness()
    h.block([h.deposit(h.addr(i), USDT, amount) for i in (1, 2, 3)])
    return h


def conserved_usdt(h: Harness) -> int:
    balances = sum(b for (_, a), (b, _) in h.state.balances.items() if a == USDT)
    costs = sum(p.cost for p in h.state.positions.values())
    return balances - costs


def test_margin_rates_follow_max_leverage() -> None:
    h = Harness()
    market = h.state.markets[BTC_PERP]
    assert initial_rate_ppm(market) == 50_000 and maintenance_rate_ppm(market) == 25_000


def test_position_cost_basis_and_realized_pnl() -> None:
    h = Harness()
    m = h.state.markets[BTC_PERP]
    pos, realized = apply_trade_to_position(m, None, 10, 100)
    assert (pos.size, pos.cost, realized) == (10, 10 * 100 * 10, 0)
    pos, realized = apply_trade_to_position(m, pos, -4, 110)
    assert (pos.size, pos.cost, realized) == (6, 6_000, 400)
    pos, realized = apply_trade_to_position(m, pos, -10, 90)  # close 6 at a loss, open 4 short
    assert (pos.size, pos.cost, realized) == (-4, -3_600, -600)


def test_open_and_close_moves_pnl_and_keeps_balances_minus_costs_conserved() -> None:
    h = funded()
    start = conserved_usdt(h)
    h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 10))])
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, BUY, MARK, 10, TIF_IOC))])
    assert r[0].fills[0].size == 10
    open_fee = r[0].fills[0].taker_fee
    long = h.state.positions[(h.addr(2), BTC_PERP)]
    short = h.state.positions[(h.addr(1), BTC_PERP)]
    assert (long.size, short.size) == (10, -10)
    assert h.state.markets[BTC_PERP].open_interest == 10
    assert conserved_usdt(h) == start
    # the price rises 10%; the long closes into a new bid at the higher price
    up = MARK * 11 // 10
    h.block([h.sign(8, OracleUpdate(BTC_PERP, up, h.head.timestamp_ms))])
    h.block([h.sign(3, PlaceOrder(BTC_PERP, BUY, up, 10))])
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, up, 10, TIF_IOC, True))])
    close_fee = r[0].fills[0].taker_fee
    assert (h.addr(2), BTC_PERP) not in h.state.positions
    profit = 10 * (up - MARK) * 10
    assert h.balance(2, USDT) == (1_000_000_000 + profit - open_fee - close_fee, 0)
    assert h.state.markets[BTC_PERP].open_interest == 10  # key 3 now holds the long
    assert conserved_usdt(h) == start


def test_placement_needs_initial_margin_including_open_orders() -> None:
    h = funded(amount=25 * LOT_VALUE)
    equity = h.balance(1, USDT)[0]
    max_lots = equity * 20 // LOT_VALUE  # 20x leverage
    ok = h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, max_lots))])
    assert ok[0].orders[0].status == ORDER_RESTING
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 1))])
    assert r[0].reason == "insufficient_margin"
    summary = margin_summary(h.state, h.addr(1), USDT)
    assert summary.initial == max_lots * LOT_VALUE // 20 and summary.equity == equity


def test_resting_side_is_margin_checked_at_fill_and_cancelled_when_unfunded() -> None:
    h = funded()
    h.fund(4, USDT, 60 * 10**6)
    h.block([h.sign(4, PlaceOrder(BTC_PERP, BUY, MARK, 100))])  # 1,000 USDT at 5%: 50 USDT
    r = h.block([h.sign(4, Transfer(h.addr(9), USDT, 20 * 10**6))])
    assert r[0].reason == "insufficient_margin"  # open orders count in the requirement
    h.block([h.sign(3, PlaceOrder(BTC_PERP, SELL, MARK, 90, TIF_IOC))])
    assert h.state.positions[(h.addr(4), BTC_PERP)].size == 90
    # a 10% mark drop: 90 USDT of loss against 60 USDT of collateral
    h.block([h.sign(8, OracleUpdate(BTC_PERP, MARK * 90 // 100, h.head.timestamp_ms))])
    assert not margin_summary(h.state, h.addr(4), USDT).meets_initial
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK, 10, TIF_IOC))])
    assert not r[0].fills and r[0].removed and r[0].removed[0].why == REMOVED_UNFUNDED
    assert h.state.positions[(h.addr(4), BTC_PERP)].size == 90
    assert len(h.state.books[BTC_PERP]) == 0


def test_reduce_only_cannot_open_or_flip() -> None:
    h = funded()
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 1, 0, True))])
    assert r[0].reason == "reduce_only_violation"
    h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 3))])
    h.block([h.sign(2, PlaceOrder(BTC_PERP, BUY, MARK, 3, TIF_IOC))])
    h.block([h.sign(3, PlaceOrder(BTC_PERP, SELL, MARK, 10))])
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK, 10, 0, True)),
                 h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 10, TIF_IOC, True))])
    # the short (key 1) buys back only its 3 lots: reduce-only caps the size to the position
    assert r[1].orders[0].filled == 3
    assert (h.addr(1), BTC_PERP) not in h.state.positions


def test_withdraw_keeps_initial_margin() -> None:
    h = funded(amount=1_000 * 10**6)
    h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 1_000))])
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, BUY, MARK, 1_000, TIF_IOC))])
    assert r[0].fills
    # 10,000 USDT notional at 5%: 500 USDT of initial margin; taker paid 5 USDT fee
    r = h.block([h.sign(2, Withdraw(USDT, 600 * 10**6, h.addr(2)))])
    assert r[0].reason == "insufficient_margin"
    r = h.block([h.sign(2, Withdraw(USDT, 400 * 10**6, h.addr(2)))])
    assert r[0].ok


def test_oracle_update_rules() -> None:
    h = Harness()
    now = h.head.timestamp_ms
    r = h.block([
        h.sign(1, OracleUpdate(BTC_PERP, MARK, now)),
        h.sign(8, OracleUpdate(BTC_PERP, MARK * 2, now + 1000)),
        h.sign(8, OracleUpdate(BTC_PERP, MARK * 2, now + 10)),
        h.sign(8, OracleUpdate(BTC_PERP, MARK * 2, now + 10)),
    ])
    assert [x.reason for x in r] == ["unauthorized_signer", "invalid_action", "", "invalid_action"]
    market = h.state.markets[BTC_PERP]
    assert market.mark_price == MARK * 2 and market.deviation_events == 1


def test_open_interest_cap_stops_the_taker_but_allows_reductions() -> None:
    import copy

    from node.tradezone.genesis import load_genesis_spec

    spec = copy.deepcopy(load_genesis_spec())
    next(m for m in spec["markets"] if m["market_id"] == BTC_PERP)["max_open_interest"] = 15
    h = Harness(spec)
    h.block([h.deposit(h.addr(i), USDT, 10**9) for i in (1, 2, 3)])
    h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 10)), h.sign(3, PlaceOrder(BTC_PERP, SELL, MARK, 10))])
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, BUY, MARK, 20, TIF_IOC))])
    assert r[0].orders[0].filled == 10 and h.state.markets[BTC_PERP].open_interest == 10
    # closing trades lower open interest and are always allowed
    r = h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK - 10, 10))])  # ahead of key 3's ask
    r = h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 10, TIF_IOC, True))])
    assert r[0].orders[0].filled == 10 and h.state.markets[BTC_PERP].open_interest == 0


def variation_margin_harness() -> Harness:
    import copy

    from node.tradezone.genesis import load_genesis_spec

    spec = copy.deepcopy(load_genesis_spec())
    for market in spec["markets"]:
        if market["kind"] == "perp":
            market["settle_variation_margin"] = True
    return Harness(spec)


def test_variation_margin_makes_balances_the_equity_at_the_mark() -> None:
    h = variation_margin_harness()
    h.block([h.deposit(h.addr(i), USDT, 1_000 * 10**6) for i in (1, 2, 3)])
    custody = 3_000 * 10**6
    h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 10))])
    h.block([h.sign(2, PlaceOrder(BTC_PERP, BUY, MARK, 10, TIF_IOC))])
    up = MARK * 11 // 10
    h.block([h.sign(8, OracleUpdate(BTC_PERP, up, h.head.timestamp_ms))])
    gain = 10 * (up - MARK) * 10  # 10 USDT
    short = h.state.positions[(h.addr(1), BTC_PERP)]
    assert (short.size, short.cost) == (-10, -10 * up * 10)
    assert h.balance(1, USDT)[0] == 1_000 * 10**6 - gain
    h.block([h.sign(3, PlaceOrder(BTC_PERP, BUY, up, 10))])
    h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, up, 10, TIF_IOC, True))])
    # every open position sits at the mark: the balances alone are what custody backs
    assert sum(p.cost - p.size * up * 10 for p in h.state.positions.values()) == 0
    balances = sum(b for (_, a), (b, _) in h.state.balances.items() if a == USDT)
    assert balances == custody and conserved_usdt(h) == custody - sum(p.cost for p in h.state.positions.values())


def test_variation_margin_takes_a_loss_only_from_the_free_balance() -> None:
    h = variation_margin_harness()
    h.block([h.deposit(h.addr(i), USDT, 1_000 * 10**6) for i in (1, 2)])
    h.fund(4, USDT, 20 * 10**6)
    h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 30))])
    r = h.block([h.sign(4, PlaceOrder(BTC_PERP, BUY, MARK, 30, TIF_IOC))])  # 300 USDT long on 20 USDT
    fee = r[0].fills[0].taker_fee
    h.block([h.sign(8, OracleUpdate(BTC_PERP, MARK * 90 // 100, h.head.timestamp_ms))])  # -30 USDT
    assert h.balance(4, USDT)[0] == 0
    position = h.state.positions[(h.addr(4), BTC_PERP)]
    unsettled = position.size * (MARK * 90 // 100) * 10 - position.cost
    # the part of the 30 USDT loss the balance could not pay stays in the cost basis
    assert unsettled == -(30 * 10**6 - (20 * 10**6 - fee))
    assert conserved_usdt(h) == 2_020 * 10**6
