"""The margin engine: equity, initial and maintenance requirements of an account's perpetuals.

Rules (issue 4, "Accounts and markets"):

* initial margin rate ``imr = ceil(1e6 / max_leverage)`` ppm of notional at the mark price;
  maintenance rate = half the initial rate at max leverage, rounded up;
* cross margin by default: the account's free collateral (balance - reserved) plus the
  unrealized PnL of all its cross positions in that collateral backs all of them;
* isolated margin, chosen per market (``SetMarginMode``): the position and the open orders of
  that market are backed only by the position's ``isolated_margin`` (collateral the account set
  aside, held in its balance's ``reserved``) plus the position's unrealized PnL, and take no part
  in the cross figures;
* an open perp order needs initial margin on its notional at its own price, except a
  reduce-only order, which cannot add risk;
* every order and every fill is checked (the resting side too, at the moment it fills): it is
  accepted if the account meets its initial margin afterwards, or if it only reduces a
  position and the realized loss and fee are payable from the balance.

All figures are exact integers; requirements round up, against the account.
"""

from __future__ import annotations

import msgspec

from node.tradezone.state import MARGIN_CROSS, MARGIN_ISOLATED, PPM, Market, Position, State


class MarginSummary(msgspec.Struct, frozen=True):
    """Margin figures: an account's cross figures in one collateral asset, or one isolated
    position's."""

    equity: int
    initial: int
    maintenance: int
    unrealized_pnl: int

    @property
    def meets_initial(self) -> bool:
        """True when equity covers the initial margin requirement."""
        return self.equity >= self.initial

    @property
    def meets_maintenance(self) -> bool:
        """True when equity covers the maintenance requirement (not liquidatable)."""
        return self.equity >= self.maintenance


def initial_rate_ppm(market: Market) -> int:
    """Initial margin rate in ppm of notional: 1 / max_leverage, rounded up."""
    return -(-PPM // market.max_leverage)


def maintenance_rate_ppm(market: Market) -> int:
    """Maintenance margin rate: half the initial rate at max leverage, rounded up."""
    return -(-initial_rate_ppm(market) // 2)


def _ceil_ppm(value: int, rate: int) -> int:
    return -((-value * rate) // PPM)


def unrealized_pnl(market: Market, position: Position) -> int:
    """PnL of a position at the market's mark price: ``size * mark * tick - cost``."""
    return position.size * market.mark_price * market.tick_size - position.cost


def position_notional(market: Market, size: int) -> int:
    """Absolute notional of ``size`` lots at the mark price."""
    return abs(size) * market.mark_price * market.tick_size


def margin_summary(
    state: State,
    account: bytes,
    collateral: int,
    override: tuple[int, Position | None, int] | None = None,
    balance_delta: int = 0,
) -> MarginSummary:
    """Cross-margin figures of ``account`` in ``collateral``.

    ``override = (market_id, position, order_notional)`` evaluates the account as if that
    market's position and open-order notional were replaced (used to check a fill before it is
    settled); ``balance_delta`` is added to the free collateral likewise.
    """
    balance, reserved = state.balances.get((account, collateral), (0, 0))
    equity = balance - reserved + balance_delta
    initial = 0
    maintenance = 0
    upnl_total = 0
    markets = state.markets
    positions = state.positions
    order_notional = state.order_notional
    market_ids = state.perp_markets_of.get(account, ())
    if override is not None and override[0] not in market_ids:
        market_ids = (*market_ids, override[0])
    for market_id in market_ids:
        market = markets[market_id]
        if market.quote_asset != collateral:
            continue
        if override is not None and override[0] == market_id:
            position: Position | None = override[1]
            open_notional = override[2]
        else:
            position = positions.get((account, market_id))
            open_notional = order_notional.get((account, market_id), 0)
        if position is not None and position.margin_mode == MARGIN_ISOLATED:
            continue  # margined on its own (isolated_summary)
        # The rates and rounding of initial_rate_ppm, maintenance_rate_ppm and _ceil_ppm, inline
        # (this runs for every perp order and both sides of every perp fill).
        imr = -(-PPM // market.max_leverage)
        if position is not None and position.size != 0 and position.margin_mode == MARGIN_CROSS:
            size = position.size
            mark_value = market.mark_price * market.tick_size
            upnl_total += size * mark_value - position.cost
            value = (size if size > 0 else -size) * mark_value
            initial -= (-value * imr) // PPM
            maintenance -= (-value * -(-imr // 2)) // PPM
        if open_notional:
            initial -= (-open_notional * imr) // PPM
    return MarginSummary(equity + upnl_total, initial, maintenance, upnl_total)


def order_initial_margin(market: Market, open_notional: int) -> int:
    """The initial margin of ``open_notional`` of open (not reduce-only) orders in ``market``."""
    return _ceil_ppm(open_notional, initial_rate_ppm(market))


def isolated_summary(market: Market, position: Position, open_notional: int) -> MarginSummary:
    """The figures of an isolated position with ``open_notional`` of open (not reduce-only)
    orders in its market: equity is its isolated margin plus its unrealized PnL; the initial
    requirement covers the position and the orders, the maintenance requirement the position."""
    imr = initial_rate_ppm(market)
    upnl = unrealized_pnl(market, position)
    value = position_notional(market, position.size)
    initial = _ceil_ppm(value, imr) + order_initial_margin(market, open_notional)
    maintenance = _ceil_ppm(value, maintenance_rate_ppm(market))
    return MarginSummary(position.isolated_margin + upnl, initial, maintenance, upnl)


def meets_initial_margin(state: State, account: bytes, collateral: int) -> bool:
    """True when the account's cross equity in ``collateral`` covers its initial margin."""
    if account not in state.perp_markets_of:
        return True
    return margin_summary(state, account, collateral).meets_initial


def apply_trade_to_position(
    market: Market, position: Position | None, signed_size: int, price: int
) -> tuple[Position, int]:
    """The position after trading ``signed_size`` lots (positive buys) at ``price``, and the
    realized PnL in collateral units.

    The cost basis released by a reduction is rounded so that the realized PnL rounds down
    (against the account); the released amount leaves ``cost`` exactly, so the sum of balances
    minus the sum of cost bases is conserved by every trade.
    """
    if position is None:
        position = Position(0, 0, market.funding_index)
    size = position.size
    cost = position.cost
    trade_value = signed_size * price * market.tick_size
    new_size = size + signed_size
    if size == 0 or (size > 0) == (signed_size > 0):
        return Position(new_size, cost + trade_value, position.funding_index,
                        position.margin_mode, position.isolated_margin), 0
    closing = min(abs(signed_size), abs(size))
    # Release cost proportionally to the closed part, rounded toward +infinity: for a long and
    # for a short alike that lowers the realized PnL (against the account).
    released = -((-cost * closing) // abs(size))
    # Proceeds of the closed part: a long sells (receives), a short buys back (pays).
    closed_value = (-1 if size > 0 else 1) * closing * price * market.tick_size
    realized = -closed_value - released
    remaining_cost = cost - released
    opening = abs(signed_size) - closing
    if opening:
        direction = 1 if signed_size > 0 else -1
        remaining_cost += direction * opening * price * market.tick_size
    return Position(new_size, remaining_cost, position.funding_index,
                    position.margin_mode, position.isolated_margin), realized
