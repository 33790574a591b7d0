"""The settlement engine: what one fill does to both accounts, checked before it is applied.

Each ``settle_*_fill`` function first decides whether the maker, then the taker, can carry the
fill at that moment (balances for spot, margin for perps), and only then writes anything. It
returns the verdict the matching core expects: ``ACCEPT`` (settled), ``CANCEL_MAKER`` (the maker
can no longer pay or margin it; nothing written) or ``STOP`` (the taker can pay no more; nothing
written).

Fees are paid in the market's collateral (quote) asset to the venue's fee account; the taker fee
of a fill always covers the maker's rebate, so the fee account never goes negative.
"""

from __future__ import annotations

import msgspec

from node.tradezone.margin import (
    apply_trade_to_position,
    isolated_summary,
    margin_summary,
    order_initial_margin,
)
from node.tradezone.matching import FillVerdict, RestingOrder
from node.tradezone.receipts import FILL_TRADE, FillEvent
from node.tradezone.state import (
    MARGIN_CROSS,
    MARGIN_ISOLATED,
    TAG_BALANCE,
    TAG_MARKET,
    TAG_ORDER,
    TAG_POSITION,
    Market,
    OrderMeta,
    Position,
    State,
    add_to_balance,
    delete_entry,
    delete_index,
    set_balance,
    set_entry,
    set_index,
)
from node.tradezone.transactions import BUY
from node.tradezone.venues import maker_fee, notional, taker_fee

ACCEPT = FillVerdict.ACCEPT
CANCEL_MAKER = FillVerdict.CANCEL_MAKER
STOP = FillVerdict.STOP


def update_order_reserved(state: State, order_id: int, meta: OrderMeta, reserved: int) -> None:
    """Record what an open order still holds in reserve (journaled)."""
    set_entry(state, TAG_ORDER, state.orders, order_id, msgspec.structs.replace(meta, reserved=reserved))


def pay_fee(state: State, market: Market, amount: int) -> None:
    """Credit (or, for a net rebate never below zero overall, debit) the venue's fee account."""
    if amount == 0:
        return
    add_to_balance(state, state.venues[market.venue_id].fee_account, market.quote_asset, amount)


# --- spot -----------------------------------------------------------------------------------------


def settle_spot_fill(
    state: State,
    market: Market,
    maker: RestingOrder,
    taker_account: bytes,
    taker_order_id: int,
    price: int,
    size: int,
    events: list[FillEvent],
) -> FillVerdict:
    """Settle ``size`` lots at ``price``: the buyer pays notional plus its fee out of its order's
    reservation (the remainder, if rounding needs it, out of its free balance), the seller
    delivers ``size * lot_size`` base units from its reservation and receives notional minus its
    fee."""
    orders = state.orders
    maker_meta = orders[maker.order_id]
    taker_meta = orders[taker_order_id]
    value = notional(market, price, size)
    m_fee = maker_fee(market, value)
    t_fee = taker_fee(market, value)
    base_units = size * market.lot_size
    quote = market.quote_asset
    base = market.base_asset
    if maker.side == BUY:
        buyer, buyer_meta, buyer_oid, buyer_fee = maker.account, maker_meta, maker.order_id, m_fee
        seller, seller_meta, seller_oid, seller_fee = taker_account, taker_meta, taker_order_id, t_fee
    else:
        buyer, buyer_meta, buyer_oid, buyer_fee = taker_account, taker_meta, taker_order_id, t_fee
        seller, seller_meta, seller_oid, seller_fee = maker.account, maker_meta, maker.order_id, m_fee
    cost = value + buyer_fee
    buyer_part = min(buyer_meta.reserved, cost)
    seller_part = min(seller_meta.reserved, base_units)
    # The buyer pays ``cost`` in quote, ``buyer_part`` of it out of its reservation; the seller
    # delivers ``base_units`` of base, ``seller_part`` out of its reservation. Each side can pay
    # when its free balance covers the rest.
    balances = state.balances
    buyer_balance, buyer_reserved = balances.get((buyer, quote), (0, 0))
    seller_balance, seller_reserved = balances.get((seller, base), (0, 0))
    buyer_ok = cost - buyer_part <= buyer_balance - buyer_reserved
    seller_ok = base_units - seller_part <= seller_balance - seller_reserved
    maker_is_buyer = maker.side == BUY
    if not (buyer_ok if maker_is_buyer else seller_ok):
        return CANCEL_MAKER
    if not (seller_ok if maker_is_buyer else buyer_ok):
        return STOP
    # Buyer and seller are different accounts (the book never matches an account with itself),
    # so the balances read above are still current when written back.
    set_balance(state, buyer, quote, buyer_balance - cost, buyer_reserved - buyer_part)
    add_to_balance(state, buyer, base, base_units)
    set_balance(state, seller, base, seller_balance - base_units, seller_reserved - seller_part)
    add_to_balance(state, seller, quote, value - seller_fee)
    pay_fee(state, market, m_fee + t_fee)
    if buyer_part:
        update_order_reserved(state, buyer_oid, buyer_meta, buyer_meta.reserved - buyer_part)
    if seller_part:
        update_order_reserved(state, seller_oid, seller_meta, seller_meta.reserved - seller_part)
    events.append(
        FillEvent(market.market_id, maker.order_id, taker_order_id, maker.account, taker_account,
                  price, size, m_fee, t_fee, FILL_TRADE, 1 - maker.side)
    )
    return ACCEPT


# --- perpetuals -----------------------------------------------------------------------------------


def _perp_side_after(
    state: State, market: Market, account: bytes, signed_size: int, price: int, fee: int,
    order_price: int, reduce_only: bool,
) -> tuple[Position, int, int, int, int] | None:
    """Evaluate one side of a perp fill: None if it must be refused, else (new position, balance
    delta, new open-order notional, change of the side's long size, reserved delta).

    A cross side's realized PnL and fee move its free balance, and it must meet the cross
    initial margin afterwards unless the fill only reduces its position. An isolated side's move
    its isolated margin (and the balance and ``reserved`` with it), which must cover them; it must
    meet its own initial margin afterwards unless the fill only reduces it; a fill that closes it
    keeps the initial margin of the account's open orders in that market and returns the rest
    of the isolated margin to the free balance."""
    key = (account, market.market_id)
    position = state.positions.get(key)
    old_size = position.size if position is not None else 0
    reducing = old_size != 0 and (old_size > 0) != (signed_size > 0) and abs(signed_size) <= abs(old_size)
    if reduce_only and not reducing:
        return None
    new_position, realized = apply_trade_to_position(market, position, signed_size, price)
    delta = realized - fee
    open_notional = state.order_notional.get(key, 0)
    if not reduce_only:
        open_notional -= abs(signed_size) * order_price * market.tick_size
    new_size = new_position.size
    long_change = (new_size if new_size > 0 else 0) - (old_size if old_size > 0 else 0)
    if new_position.margin_mode == MARGIN_ISOLATED:
        isolated = new_position.isolated_margin + delta
        if isolated < 0:
            return None  # the realized loss and fee exceed the isolated margin
        if not new_size:
            # Closed: keep what the open orders in this market still need, return the rest.
            isolated = min(isolated, order_initial_margin(market, open_notional))
        new_position = msgspec.structs.replace(new_position, isolated_margin=isolated)
        if not reducing and not isolated_summary(market, new_position, open_notional).meets_initial:
            return None
        return new_position, delta, open_notional, long_change, new_position.isolated_margin - (
            position.isolated_margin if position is not None else 0)
    collateral = market.quote_asset
    balance, reserved = state.balances.get((account, collateral), (0, 0))
    if balance + delta < reserved:
        return None
    if not reducing:
        summary = margin_summary(
            state, account, collateral, (market.market_id, new_position, open_notional), delta
        )
        if not summary.meets_initial:
            return None
    return new_position, delta, open_notional, long_change, 0


def _write_perp_side(
    state: State, market: Market, account: bytes, position: Position, delta: int, open_notional: int,
    reserved_delta: int,
) -> None:
    key = (account, market.market_id)
    holders = state.position_holders.get(market.market_id)
    if holders is None:
        holders = state.position_holders[market.market_id] = {}
    if position.size == 0 and position.cost == 0 and position.margin_mode == MARGIN_CROSS:
        delete_entry(state, TAG_POSITION, state.positions, key)
        delete_index(state, holders, account)
    else:
        set_entry(state, TAG_POSITION, state.positions, key, position)
        if account not in holders:
            set_index(state, holders, account, None)
    if open_notional:
        set_index(state, state.order_notional, key, open_notional)
    else:
        delete_index(state, state.order_notional, key)
    if reserved_delta:
        balance, reserved = state.balances.get((account, market.quote_asset), (0, 0))
        set_balance(state, account, market.quote_asset, balance + delta, reserved + reserved_delta)
    elif delta:
        add_to_balance(state, account, market.quote_asset, delta)


def settle_perp_fill(
    state: State,
    market: Market,
    maker: RestingOrder,
    taker_account: bytes,
    taker_order_id: int,
    taker_price: int,
    taker_reduce_only: bool,
    price: int,
    size: int,
    events: list[FillEvent],
) -> FillVerdict:
    """Settle ``size`` lots of a perpetual at ``price``: both positions change, realized PnL and
    fees move collateral, open interest follows. Each side must meet its initial margin (cross or
    isolated) after the fill unless the fill only reduces its position; the realized loss and fee
    must be payable (from the free balance, or from an isolated position's margin); a fill that
    would lift open interest above the market's cap stops the taker."""
    value = notional(market, price, size)
    m_fee = maker_fee(market, value)
    t_fee = taker_fee(market, value)
    maker_signed = size if maker.side == BUY else -size
    maker_side = _perp_side_after(
        state, market, maker.account, maker_signed, price, m_fee, maker.price, maker.reduce_only
    )
    if maker_side is None:
        return CANCEL_MAKER
    taker_side = _perp_side_after(
        state, market, taker_account, -maker_signed, price, t_fee, taker_price, taker_reduce_only
    )
    if taker_side is None:
        return STOP
    long_change = maker_side[3] + taker_side[3]
    cap = market.max_open_interest
    if cap and long_change > 0 and market.open_interest + long_change > cap:
        return STOP  # the venue's open-interest cap: the taker may not add exposure beyond it
    _write_perp_side(state, market, maker.account, *maker_side[:3], maker_side[4])
    _write_perp_side(state, market, taker_account, *taker_side[:3], taker_side[4])
    pay_fee(state, market, m_fee + t_fee)
    if long_change:
        current = state.markets[market.market_id]
        set_entry(
            state, TAG_MARKET, state.markets, market.market_id,
            msgspec.structs.replace(current, open_interest=current.open_interest + long_change),
        )
    events.append(
        FillEvent(market.market_id, maker.order_id, taker_order_id, maker.account, taker_account,
                  price, size, m_fee, t_fee, FILL_TRADE, 1 - maker.side)
    )
    return ACCEPT


# --- variation margin -----------------------------------------------------------------------------


def settle_position_to_mark(state: State, market: Market, account: bytes) -> int:
    """Move a position's unrealized PnL at the mark into its collateral balance (variation
    margin) and return the amount moved. A gain is credited in full; a loss is taken from the
    free balance only, or for an isolated position from its isolated margin only (what cannot be
    paid stays in the position's cost basis, to be met by liquidation and the insurance fund).
    An isolated position's margin (and the balance's ``reserved``) moves by the same amount, so
    its free balance is unchanged. ``balance - cost`` is unchanged, so conservation and the
    account's equity are unaffected."""
    key = (account, market.market_id)
    position = state.positions.get(key)
    if position is None:
        return 0
    pnl = position.size * market.mark_price * market.tick_size - position.cost
    if pnl == 0:
        return 0
    collateral = market.quote_asset
    balance, reserved = state.balances.get((account, collateral), (0, 0))
    if position.margin_mode == MARGIN_ISOLATED:
        moved = pnl if pnl > 0 else -min(-pnl, position.isolated_margin)
        if moved == 0:
            return 0
        set_balance(state, account, collateral, balance + moved, reserved + moved)
        set_entry(state, TAG_POSITION, state.positions, key,
                  msgspec.structs.replace(position, cost=position.cost + moved,
                                          isolated_margin=position.isolated_margin + moved))
        return moved
    moved = pnl if pnl > 0 else -min(-pnl, balance - reserved)
    if moved == 0:
        return 0
    set_balance(state, account, collateral, balance + moved, reserved)
    set_entry(state, TAG_POSITION, state.positions, key,
              msgspec.structs.replace(position, cost=position.cost + moved))
    return moved


def settle_variation_margin(state: State) -> None:
    """End-of-block step: for every perpetual with ``settle_variation_margin``, settle to the mark
    each position that traded in this block, each position whose account's collateral balance
    changed in this block (so a loss left unpaid is collected as soon as there is money), and,
    where the mark moved in this block, every position of the market. Deterministic: markets and
    accounts in sorted order."""
    flagged = {m.market_id: m.quote_asset for m in state.markets.values() if m.settle_variation_margin}
    if not flagged:
        state.marked.clear()
        return
    touched: dict[int, set[bytes]] = {market_id: set() for market_id in flagged}
    for account, market_id in state.dirty[TAG_POSITION]:
        if market_id in flagged:
            touched[market_id].add(account)
    for market_id in state.marked:
        if market_id in flagged:
            touched[market_id].update(state.position_holders.get(market_id, {}))
    state.marked.clear()
    perp_markets_of = state.perp_markets_of
    collaterals = set(flagged.values())
    for account, asset in state.dirty[TAG_BALANCE]:
        if asset not in collaterals:
            continue
        market_ids = perp_markets_of.get(account)
        if market_ids:
            for market_id in market_ids:
                if flagged.get(market_id) == asset:
                    touched[market_id].add(account)
    positions = state.positions
    for market_id in sorted(touched):
        market = state.markets[market_id]
        mark_value = market.mark_price * market.tick_size
        for account in sorted(touched[market_id]):
            # A position already at the mark (the common case) has nothing to settle.
            position = positions.get((account, market_id))
            if position is not None and position.size * mark_value != position.cost:
                settle_position_to_mark(state, market, account)
