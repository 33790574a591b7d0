"""Binary outcome markets: YES/NO shares, mint and merge at fill time, and resolution.

One book per market, in YES terms. Who a book side stands for depends on the share its order
trades: a book bid is "buy YES" or "sell NO", a book ask is "sell YES" or "buy NO". A fill at
YES price ``p`` therefore settles one of four ways, decided by the two orders alone:

* buy YES vs sell YES: YES shares move, the buyer pays ``p``;
* buy NO vs sell NO: NO shares move, the buyer pays ``max - p``;
* buy YES vs buy NO: a pair is minted, the two buyers pay ``p`` and ``max - p``, which together
  are exactly one lot's worth of collateral, held by the market's pool account;
* sell YES vs sell NO: a pair is merged, the pool pays ``p`` and ``max - p`` to the sellers.

So YES supply == NO supply == pool collateral / 1 at all times (``max_price * tick_size ==
lot_size``). A resolution by the market's resolver cancels every resting order, pays each
winning share one unit of collateral out of the pool and burns all shares; trading stops.
"""

from __future__ import annotations

import msgspec

from node.tradezone.errors import InvalidAction, MarketClosed, UnauthorizedSigner
from node.tradezone.matching import FillVerdict, RestingOrder
from node.tradezone.receipts import FILL_MERGE, FILL_MINT, FILL_TRADE, FillEvent
from node.tradezone.settlement import ACCEPT, CANCEL_MAKER, STOP, pay_fee, update_order_reserved
from node.tradezone.state import (
    MARKET_OUTCOME,
    OUTCOME_NO,
    OUTCOME_YES,
    RESOLVED_NO,
    RESOLVED_YES,
    TAG_MARKET,
    UNRESOLVED,
    Market,
    State,
    set_balance,
    set_entry,
)
from node.tradezone.transactions import BUY
from node.tradezone.venues import maker_fee, taker_fee

POOL_PREFIX = b"\xee" * 16


def pool_account(market_id: int) -> bytes:
    """The account that holds the collateral backing an outcome market's share pairs."""
    return POOL_PREFIX + market_id.to_bytes(4, "big")


def user_side(book_side: int, outcome: int) -> int:
    """The side as the user signed it (buy/sell of its own share) from the book side."""
    return book_side if outcome == OUTCOME_YES else 1 - book_side


def share_asset(market: Market, outcome: int) -> int:
    """The asset id of an outcome's shares."""
    return market.base_asset if outcome == OUTCOME_YES else market.no_asset


def settle_outcome_fill(
    state: State,
    market: Market,
    maker: RestingOrder,
    taker_account: bytes,
    taker_order_id: int,
    price: int,
    size: int,
    events: list[FillEvent],
) -> FillVerdict:
    """Settle ``size`` lots at YES price ``price`` as a transfer, a mint or a merge (see the
    module docstring). Buyers pay out of their order's reservation (plus free balance if fee
    rounding needs it), sellers deliver reserved shares; nothing is written unless both can."""
    orders = state.orders
    collateral = market.quote_asset
    share_units = size * market.lot_size
    parties = (
        (maker.account, maker.order_id, orders[maker.order_id], maker.side, True),
        (taker_account, taker_order_id, orders[taker_order_id], 1 - maker.side, False),
    )
    plans = []
    pool_delta = 0
    fees = [0, 0]
    buyers = 0
    for account, order_id, meta, book_side, is_maker in parties:
        own_price = price if meta.outcome == OUTCOME_YES else market.max_price - price
        value = own_price * size * market.tick_size
        fee = maker_fee(market, value) if is_maker else taker_fee(market, value)
        fees[0 if is_maker else 1] = fee
        asset = share_asset(market, meta.outcome)
        balance, reserved = state.balances.get((account, collateral), (0, 0))
        if user_side(book_side, meta.outcome) == BUY:
            buyers += 1
            cost = value + fee
            part = min(meta.reserved, cost)
            if cost - part > balance - reserved:
                return CANCEL_MAKER if is_maker else STOP
            plans.append((account, order_id, meta, part, -cost, asset, share_units))
            pool_delta += value
        else:
            s_balance, s_reserved = state.balances.get((account, asset), (0, 0))
            part = min(meta.reserved, share_units)
            if share_units - part > s_balance - s_reserved:
                return CANCEL_MAKER if is_maker else STOP
            plans.append((account, order_id, meta, part, value - fee, asset, -share_units))
            pool_delta -= value
    for account, order_id, meta, part, collateral_delta, asset, shares_delta in plans:
        if shares_delta > 0:
            balance, reserved = state.balances.get((account, collateral), (0, 0))
            set_balance(state, account, collateral, balance + collateral_delta, reserved - part)
            s_balance, s_reserved = state.balances.get((account, asset), (0, 0))
            set_balance(state, account, asset, s_balance + shares_delta, s_reserved)
        else:
            s_balance, s_reserved = state.balances.get((account, asset), (0, 0))
            set_balance(state, account, asset, s_balance + shares_delta, s_reserved - part)
            balance, reserved = state.balances.get((account, collateral), (0, 0))
            set_balance(state, account, collateral, balance + collateral_delta, reserved)
        update_order_reserved(state, order_id, meta, meta.reserved - part)
    if pool_delta:
        pool = pool_account(market.market_id)
        balance, reserved = state.balances.get((pool, collateral), (0, 0))
        set_balance(state, pool, collateral, balance + pool_delta, reserved)
    pay_fee(state, market, fees[0] + fees[1])
    kind = FILL_MINT if buyers == 2 else FILL_MERGE if buyers == 0 else FILL_TRADE
    events.append(
        FillEvent(market.market_id, maker.order_id, taker_order_id, maker.account, taker_account,
                  price, size, fees[0], fees[1], kind, 1 - maker.side)
    )
    return ACCEPT


def check_resolver(state: State, market_id: int, signer: bytes) -> Market:
    """The outcome market ``signer`` may resolve; raises InvalidAction, MarketClosed or
    UnauthorizedSigner."""
    market = state.markets.get(market_id)
    if market is None or market.kind != MARKET_OUTCOME:
        raise InvalidAction(f"market {market_id} is not an outcome market")
    if market.resolution != UNRESOLVED:
        raise MarketClosed(f"market {market_id} is already resolved")
    if signer != market.resolver:
        raise UnauthorizedSigner(f"0x{signer.hex()} is not the resolver of market {market_id}")
    return market


def pay_out_resolution(state: State, market: Market, winning: int) -> int:
    """Mark the market resolved, pay every winning share one unit of collateral from the pool
    and burn every share of both outcomes. The market's orders must already be cancelled (no
    share is reserved). Returns the collateral paid out."""
    set_entry(
        state, TAG_MARKET, state.markets, market.market_id,
        msgspec.structs.replace(market, resolution=RESOLVED_YES if winning == OUTCOME_YES else RESOLVED_NO),
    )
    collateral = market.quote_asset
    win_asset = share_asset(market, winning)
    lose_asset = share_asset(market, OUTCOME_NO if winning == OUTCOME_YES else OUTCOME_YES)
    paid = 0
    for asset in (win_asset, lose_asset):
        holders = sorted(state.holders.get(asset, {}))
        for account in holders:
            shares, reserved = state.balances.get((account, asset), (0, 0))
            if shares == 0:
                continue
            if reserved:
                raise RuntimeError("resolution with shares still reserved by an order")
            set_balance(state, account, asset, 0, 0)
            if asset == win_asset:
                balance, c_reserved = state.balances.get((account, collateral), (0, 0))
                set_balance(state, account, collateral, balance + shares, c_reserved)
                paid += shares
    pool = pool_account(market.market_id)
    balance, reserved = state.balances.get((pool, collateral), (0, 0))
    if balance < paid:
        raise RuntimeError(f"outcome pool {balance} cannot pay {paid}: supply invariant broken")
    set_balance(state, pool, collateral, balance - paid, reserved)
    return paid
