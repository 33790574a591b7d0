"""Venues and markets: lookup, the market rules an order must follow, notional and fees.

Prices are integer ticks, sizes integer lots; the collateral (quote) value of ``size`` lots at
``price`` is ``price * size * tick_size`` smallest units, exact, never rounded. Fees are in
millionths of that notional and every fee rounds against the account: a fee paid is rounded
up, a maker rebate received is rounded down.

Outcome markets have one book in YES terms. Their NO side is addressed with the market id plus
``NO_SIDE_FLAG`` (the top bit of the uint32 market id): a NO order at ``q`` is a YES order at
``max_price - q`` on the opposite side.
"""

from __future__ import annotations

from node.tradezone.errors import InvalidAction, InvalidOrder, MarketClosed, UnknownMarket
from node.tradezone.state import (
    MARKET_OUTCOME,
    MARKET_PERP,
    MARKET_SPOT,
    OUTCOME_NO,
    OUTCOME_YES,
    PPM,
    UNRESOLVED,
    Market,
    State,
)
from node.tradezone.transactions import BUY, SELL, TIF_GTC, TIF_IOC, TIF_POST_ONLY

NO_SIDE_FLAG = 1 << 31
MAX_FEE_PPM = 100_000  # 10%: a protocol bound on any fee rate
MAX_ORDER_LOTS = 1 << 48  # keeps every notional far inside uint256


def resolve_market_id(state: State, market_id: int) -> tuple[Market, int]:
    """The market an id names and which outcome it addresses (OUTCOME_YES unless the NO flag is
    set on an outcome market's id). Raises UnknownMarket."""
    outcome = OUTCOME_YES
    base_id = market_id
    if market_id & NO_SIDE_FLAG:
        base_id = market_id ^ NO_SIDE_FLAG
        outcome = OUTCOME_NO
    market = state.markets.get(base_id)
    if market is None or (outcome == OUTCOME_NO and market.kind != MARKET_OUTCOME):
        raise UnknownMarket(f"market {market_id} is not listed")
    return market, outcome


def to_book_terms(market: Market, outcome: int, side: int, price: int) -> tuple[int, int]:
    """(side, price) in the book's YES terms of an order on ``outcome``."""
    if outcome == OUTCOME_NO:
        return (SELL if side == BUY else BUY), market.max_price - price
    return side, price


def resolve_perp_market(state: State, market_id: int) -> Market:
    """The perpetual market an id names, for the margin-mode actions. Raises UnknownMarket, or
    InvalidAction for a market of another kind."""
    market, _ = resolve_market_id(state, market_id)
    if market.kind != MARKET_PERP:
        raise InvalidAction(f"market {market_id} is not a perpetual: margin modes apply to perpetuals only")
    return market


def check_tradable(market: Market) -> None:
    """Raise MarketClosed for a resolved outcome market."""
    if market.resolution != UNRESOLVED:
        raise MarketClosed(f"market {market.market_id} is resolved and no longer trades")


def check_order(market: Market, side: int, price: int, size: int, tif: int) -> None:
    """Raise InvalidOrder unless the order follows the market's rules: a known side and time in
    force, ``0 < size <= MAX_ORDER_LOTS`` lots, a price inside the market's bounds (outcome
    prices strictly inside (0, max_price))."""
    if side != BUY and side != SELL:
        raise InvalidOrder(f"side {side} is neither buy (0) nor sell (1)")
    if tif != TIF_GTC and tif != TIF_IOC and tif != TIF_POST_ONLY:
        raise InvalidOrder(f"time in force {tif} is not GTC (0), IOC (1) or post-only (2)")
    if size <= 0 or size > MAX_ORDER_LOTS:
        raise InvalidOrder(f"size {size} lots is out of range")
    if price < market.min_price or price > market.max_price:
        raise InvalidOrder(f"price {price} is outside [{market.min_price}, {market.max_price}]")
    if market.kind == MARKET_OUTCOME and (price <= 0 or price >= market.max_price):
        raise InvalidOrder(f"outcome price {price} is not strictly inside (0, {market.max_price})")


def notional(market: Market, price: int, size: int) -> int:
    """Collateral value of ``size`` lots at ``price`` ticks (exact)."""
    return price * size * market.tick_size


def taker_fee(market: Market, value: int) -> int:
    """Taker fee on a notional, rounded up (against the taker)."""
    return -((-value * market.taker_fee_ppm) // PPM)


def maker_fee(market: Market, value: int) -> int:
    """Maker fee on a notional: positive rounds up, a rebate (negative) rounds toward zero,
    both against the maker."""
    return -((-value * market.maker_fee_ppm) // PPM)


def worst_fee(market: Market, value: int) -> int:
    """The largest fee an order of this notional can pay as taker or maker (never negative)."""
    rate = max(market.taker_fee_ppm, market.maker_fee_ppm, 0)
    return -((-value * rate) // PPM)


def check_market_params(market: Market) -> None:
    """Raise ValueError if a listed market's parameters break a protocol bound (genesis check)."""
    if market.kind not in (MARKET_SPOT, MARKET_PERP, MARKET_OUTCOME):
        raise ValueError(f"market {market.market_id}: unknown kind {market.kind}")
    if market.market_id & NO_SIDE_FLAG:
        raise ValueError(f"market {market.market_id}: ids use at most 31 bits")
    if market.lot_size <= 0 or market.tick_size <= 0:
        raise ValueError(f"market {market.market_id}: lot and tick sizes must be positive")
    if not 0 < market.min_price <= market.max_price:
        raise ValueError(f"market {market.market_id}: bad price bounds")
    if not 0 <= market.taker_fee_ppm <= MAX_FEE_PPM or abs(market.maker_fee_ppm) > MAX_FEE_PPM:
        raise ValueError(f"market {market.market_id}: fee rate out of protocol bounds")
    if market.maker_fee_ppm + market.taker_fee_ppm < 0:
        raise ValueError(f"market {market.market_id}: maker rebate larger than the taker fee")
    if market.kind == MARKET_PERP and market.max_leverage < 1:
        raise ValueError(f"market {market.market_id}: max leverage must be at least 1")
    if market.kind == MARKET_OUTCOME and market.max_price * market.tick_size != market.lot_size:
        raise ValueError(f"market {market.market_id}: max_price * tick_size must equal lot_size")
