"""Order flow: placing (with matching), cancelling and modifying orders in any market kind.

Placing an order follows one path for spot, perpetual and outcome markets:

1. validate against the market's rules (tick/lot bounds, time in force, post-only, reduce-only,
   duplicate client id);
2. lock what the order may need: spot and outcome buys reserve collateral for the notional at
   the limit price plus the worst fee plus one unit per lot of rounding slack, sells reserve the
   base or share units; perp orders reserve nothing but their notional counts in the account's
   initial margin (cross, or the isolated position's in an isolated market), which must hold;
3. match (unless post-only) through the book with a ``try_fill`` callback that settles each
   fill in the settlement engine of the market kind;
4. rest the remainder (GTC, post-only) or release what it still holds (IOC, fully filled,
   stopped).

A failure at any step raises a named ``InvalidTransaction``; the caller's snapshot undoes
everything, including book changes made by matching.

The margin mode of a perpetual market is chosen per account (``set_margin_mode``), and an
isolated position's margin is moved in and out with ``adjust_isolated_margin``.
"""

from __future__ import annotations

import msgspec

from node.tradezone.errors import (
    DuplicateClientOrderId,
    InsufficientBalance,
    InsufficientMargin,
    InvalidAction,
    InvalidOrder,
    MarketClosed,
    OrderNotFound,
    ReduceOnlyViolation,
    WouldCross,
)
from node.tradezone.margin import isolated_summary, margin_summary, meets_initial_margin
from node.tradezone.matching import FillVerdict, RestingOrder
from node.tradezone.outcome import settle_outcome_fill, share_asset
from node.tradezone.receipts import (
    ORDER_DONE,
    ORDER_FILLED,
    ORDER_RESTING,
    ORDER_STOPPED,
    REMOVED_CANCELLED,
    REMOVED_SELF_TRADE,
    REMOVED_UNFUNDED,
    Events,
    OrderResult,
    RemovedOrder,
)
from node.tradezone.settlement import settle_perp_fill, settle_spot_fill, update_order_reserved
from node.tradezone.state import (
    MARGIN_CROSS,
    MARGIN_ISOLATED,
    MARKET_OUTCOME,
    MARKET_PERP,
    MARKET_SPOT,
    OUTCOME_NO,
    TAG_ORDER,
    TAG_POSITION,
    Market,
    OrderMeta,
    Position,
    State,
    book_add,
    book_reduce,
    book_remove,
    delete_entry,
    delete_index,
    enlist_book,
    mark_order_dirty,
    new_order_id,
    set_balance,
    set_entry,
    set_index,
)
from node.tradezone.transactions import ALL_MARKETS, BUY, TIF_IOC, TIF_POST_ONLY, PlaceOrder
from node.tradezone.venues import (
    NO_SIDE_FLAG,
    check_order,
    check_tradable,
    notional,
    resolve_market_id,
    resolve_perp_market,
    to_book_terms,
    worst_fee,
)


def buy_reservation(market: Market, price: int, size: int) -> int:
    """Collateral a buy of ``size`` lots at ``price`` (in its own share's terms) reserves:
    notional + worst-case fee + one unit per lot when a fee applies (each fill rounds its fee
    up by less than one unit and fills at least one lot)."""
    value = notional(market, price, size)
    fee = worst_fee(market, value)
    return value + fee + (size if fee else 0)


def _add_order_index(state: State, account: bytes, order_id: int) -> None:
    own = state.orders_of.get(account)
    if own is None:
        own = {}
        set_index(state, state.orders_of, account, own)
    set_index(state, own, order_id, None)


def _note_perp_market(state: State, account: bytes, market_id: int) -> None:
    markets = state.perp_markets_of.get(account, ())
    if market_id not in markets:
        set_index(state, state.perp_markets_of, account, tuple(sorted((*markets, market_id))))


def _add_order_notional(state: State, account: bytes, market_id: int, amount: int) -> None:
    key = (account, market_id)
    total = state.order_notional.get(key, 0) + amount
    if total:
        set_index(state, state.order_notional, key, total)
    else:
        delete_index(state, state.order_notional, key)


def release_order(state: State, order_id: int, size_left: int, client_order_id: int, reduce_only: bool,
                  price: int) -> OrderMeta:
    """Forget an order that no longer rests (or never will): release what it still reserves,
    drop its open-order notional (``size_left`` lots at ``price``), its client id and index
    entries, and mark its leaf. Returns its metadata."""
    meta = state.orders[order_id]
    account = meta.account
    if meta.reserved:
        balance, reserved = state.balances[(account, meta.reserved_asset)]
        set_balance(state, account, meta.reserved_asset, balance, reserved - meta.reserved)
    market = state.markets[meta.market_id]
    if market.kind == MARKET_PERP and not reduce_only and size_left:
        _add_order_notional(state, account, meta.market_id, -size_left * price * market.tick_size)
    if client_order_id:
        delete_index(state, state.client_ids, (account, meta.market_id, client_order_id))
    own = state.orders_of.get(account)
    if own is not None:
        delete_index(state, own, order_id)
    delete_entry(state, TAG_ORDER, state.orders, order_id)
    return meta


def remove_resting(state: State, order: RestingOrder, why: int, events: Events, in_book: bool) -> None:
    """Take a resting order out (if ``in_book``; matching may have removed it already), release
    it, and record its removal among the transaction's events."""
    meta = state.orders[order.order_id]
    if in_book:
        book_remove(state, meta.market_id, order.order_id)
    else:
        mark_order_dirty(state, order.order_id)
    release_order(state, order.order_id, order.size, order.client_order_id, order.reduce_only, order.price)
    events.removed.append(RemovedOrder(order.order_id, why))


class _Taker:
    """The taker's side of one matching walk, and the ``try_fill`` callback for it."""

    __slots__ = ("state", "market", "account", "order_id", "price", "reduce_only", "events", "stopped", "finished")

    def __init__(self, state: State, market: Market, account: bytes, order_id: int, price: int,
                 reduce_only: bool, events: Events) -> None:
        self.state = state
        self.market = market
        self.account = account
        self.order_id = order_id
        self.price = price
        self.reduce_only = reduce_only
        self.events = events
        self.stopped = False
        self.finished: list[RestingOrder] = []

    def try_fill(self, maker: RestingOrder, price: int, size: int) -> FillVerdict:
        state = self.state
        market = state.markets[self.market.market_id]
        kind = market.kind
        if kind == MARKET_SPOT:
            verdict = settle_spot_fill(state, market, maker, self.account, self.order_id, price, size,
                                       self.events.fills)
        elif kind == MARKET_PERP:
            verdict = settle_perp_fill(state, market, maker, self.account, self.order_id, self.price,
                                       self.reduce_only, price, size, self.events.fills)
        else:
            verdict = settle_outcome_fill(state, market, maker, self.account, self.order_id, price, size,
                                          self.events.fills)
        if verdict == FillVerdict.ACCEPT:
            mark_order_dirty(state, maker.order_id)
            if size == maker.size:
                self.finished.append(maker)
        elif verdict == FillVerdict.STOP:
            self.stopped = True
        return verdict


def place_order(state: State, account: bytes, order: PlaceOrder, events: Events) -> OrderResult:
    """Place one order for ``account`` (steps in the module docstring); returns how it ended.
    Raises a named InvalidTransaction before or while matching; the caller rolls back."""
    market, outcome = resolve_market_id(state, order.market_id)
    check_tradable(market)
    check_order(market, order.side, order.price, order.size, order.tif)
    market_id = market.market_id
    kind = market.kind
    cid = order.client_order_id
    if cid and (account, market_id, cid) in state.client_ids:
        raise DuplicateClientOrderId(f"client order id {cid} is already open in market {market_id}")
    book_side, book_price = to_book_terms(market, outcome, order.side, order.price)
    book = state.books[market_id]
    if order.tif == TIF_POST_ONLY and book.would_cross(book_side, book_price):
        raise WouldCross(f"post-only order at {order.price} would take liquidity")
    size = order.size
    if kind == MARKET_PERP and market.mark_price == 0:
        raise MarketClosed(f"market {market_id} has no mark price yet")
    if order.reduce_only:
        if kind != MARKET_PERP:
            raise InvalidOrder("reduce-only applies to perpetual markets only")
        position = state.positions.get((account, market_id))
        current = position.size if position is not None else 0
        if current == 0 or (current > 0) == (order.side == BUY):
            raise ReduceOnlyViolation("a reduce-only order must be opposite to an open position")
        size = min(size, abs(current))
    order_id, seq = new_order_id(state)
    if kind == MARKET_PERP:
        reserved_asset, amount = market.quote_asset, 0
    elif order.side == BUY:
        reserved_asset, amount = market.quote_asset, buy_reservation(market, order.price, size)
    else:
        reserved_asset = market.base_asset if kind == MARKET_SPOT else share_asset(market, outcome)
        amount = size * market.lot_size
    if amount:
        balance, reserved = state.balances.get((account, reserved_asset), (0, 0))
        if balance - reserved < amount:
            raise InsufficientBalance(reserved_asset, amount, balance - reserved)
        set_balance(state, account, reserved_asset, balance, reserved + amount)
    set_entry(state, TAG_ORDER, state.orders, order_id,
              OrderMeta(market_id, account, outcome, order.side, order.price, reserved_asset, amount))
    if kind == MARKET_PERP:
        _note_perp_market(state, account, market_id)
        if not order.reduce_only:
            _add_order_notional(state, account, market_id, size * book_price * market.tick_size)
            position = state.positions.get((account, market_id))
            if position is not None and position.margin_mode == MARGIN_ISOLATED:
                summary = isolated_summary(market, position, state.order_notional.get((account, market_id), 0))
            else:
                summary = margin_summary(state, account, market.quote_asset)
            if not summary.meets_initial:
                raise InsufficientMargin(
                    f"equity {summary.equity} below initial margin {summary.initial} with this order"
                )
    remaining = size
    stopped = False
    if order.tif != TIF_POST_ONLY:
        taker = _Taker(state, market, account, order_id, book_price, order.reduce_only, events)
        if state.checkpoints:
            enlist_book(state, book)
        result = book.match(account, book_side, book_price, size, taker.try_fill)
        stopped = taker.stopped
        for expired in result.expired:
            remove_resting(state, expired, REMOVED_SELF_TRADE, events, in_book=False)
        for cancelled in result.cancelled:
            remove_resting(state, cancelled, REMOVED_UNFUNDED, events, in_book=False)
        for maker in taker.finished:
            release_order(state, maker.order_id, 0, maker.client_order_id, maker.reduce_only, maker.price)
        remaining = result.remaining
    if remaining and order.tif != TIF_IOC and not stopped:
        book_add(state, market_id,
                 RestingOrder(order_id, account, book_side, book_price, remaining, cid, order.reduce_only, seq))
        if cid:
            set_index(state, state.client_ids, (account, market_id, cid), order_id)
        _add_order_index(state, account, order_id)
        return OrderResult(order_id, ORDER_RESTING, size - remaining, remaining)
    release_order(state, order_id, remaining, 0, order.reduce_only, book_price)
    status = ORDER_FILLED if remaining == 0 else ORDER_STOPPED if stopped else ORDER_DONE
    return OrderResult(order_id, status, size - remaining, 0)


def find_own_order(state: State, account: bytes, market_id: int, order_id: int) -> RestingOrder:
    """The account's resting order ``order_id`` in ``market_id`` (YES or NO id of an outcome
    market); raises OrderNotFound."""
    base_id = market_id & ~NO_SIDE_FLAG
    meta = state.orders.get(order_id)
    if meta is None or meta.account != account or meta.market_id != base_id:
        raise OrderNotFound(f"no open order {order_id} of the account in market {market_id}")
    order = state.books[base_id].get(order_id)
    if order is None:
        raise OrderNotFound(f"order {order_id} does not rest")
    return order


def cancel_order(state: State, account: bytes, market_id: int, order_id: int, events: Events) -> None:
    """Cancel one resting order of the account and release what it reserved."""
    order = find_own_order(state, account, market_id, order_id)
    remove_resting(state, order, REMOVED_CANCELLED, events, in_book=True)


def cancel_by_client_id(state: State, account: bytes, market_id: int, client_order_id: int,
                        events: Events) -> None:
    """Cancel the account's resting order with that client order id in that market."""
    base_id = market_id & ~NO_SIDE_FLAG
    order_id = state.client_ids.get((account, base_id, client_order_id)) if client_order_id else None
    if order_id is None:
        raise OrderNotFound(f"no open order with client id {client_order_id} in market {market_id}")
    cancel_order(state, account, base_id, order_id, events)


def cancel_all(state: State, account: bytes, market_id: int, events: Events,
               asset_filter: int | None = None, why: int = REMOVED_CANCELLED) -> int:
    """Remove every resting order of the account in ``market_id`` (``ALL_MARKETS``: everywhere;
    ``asset_filter``: only orders reserving that asset or margined in it), oldest id first,
    recording ``why``. Returns how many were removed."""
    own = state.orders_of.get(account)
    if not own:
        return 0
    base_id = market_id if market_id == ALL_MARKETS else market_id & ~NO_SIDE_FLAG
    count = 0
    for order_id in sorted(own):
        meta = state.orders[order_id]
        if base_id != ALL_MARKETS and meta.market_id != base_id:
            continue
        if asset_filter is not None:
            market = state.markets[meta.market_id]
            if meta.reserved_asset != asset_filter and not (
                market.kind == MARKET_PERP and market.quote_asset == asset_filter
            ):
                continue
        order = state.books[meta.market_id].get(order_id)
        if order is None:
            continue
        remove_resting(state, order, why, events, in_book=True)
        count += 1
    return count


def modify_order(state: State, account: bytes, market_id: int, order_id: int, new_price: int, new_size: int,
                 events: Events) -> OrderResult:
    """Change a resting order. Same price and a smaller size: reduced in place, keeping time
    priority (and releasing the reservation it no longer needs). Anything else: cancel and
    replace by a new GTC order (new id, back of the queue, may take liquidity)."""
    order = find_own_order(state, account, market_id, order_id)
    meta = state.orders[order_id]
    market = state.markets[meta.market_id]
    check_tradable(market)
    if new_price == meta.user_price and new_size == order.size:
        raise InvalidAction("modify changes neither price nor size")
    if new_price == meta.user_price and 0 < new_size < order.size:
        old_size = order.size
        book_reduce(state, meta.market_id, order_id, new_size)
        if market.kind == MARKET_PERP:
            if not order.reduce_only:
                _add_order_notional(state, account, meta.market_id,
                                    -(old_size - new_size) * order.price * market.tick_size)
        else:
            if meta.user_side == BUY:
                target = min(meta.reserved, buy_reservation(market, meta.user_price, new_size))
            else:
                target = new_size * market.lot_size
            surplus = meta.reserved - target
            if surplus > 0:
                balance, reserved = state.balances[(account, meta.reserved_asset)]
                set_balance(state, account, meta.reserved_asset, balance, reserved - surplus)
                update_order_reserved(state, order_id, meta, target)
        return OrderResult(order_id, ORDER_RESTING, 0, new_size)
    remove_resting(state, order, REMOVED_CANCELLED, events, in_book=True)
    user_market_id = meta.market_id | (NO_SIDE_FLAG if market.kind == MARKET_OUTCOME and meta.outcome == OUTCOME_NO else 0)
    replacement = PlaceOrder(user_market_id, meta.user_side, new_price, new_size, 0, order.reduce_only,
                             order.client_order_id)
    return place_order(state, account, replacement, events)


def set_margin_mode(state: State, account: bytes, market_id: int, isolated: bool) -> None:
    """Trade a perpetual market in isolated (or again in cross) margin. Only while the account
    has no position (and no unpaid loss) and no open order in that market. Isolated: a position
    leaf of size 0 records the mode until the account switches back; switching back returns any
    isolated margin still set aside to the free balance."""
    market = resolve_perp_market(state, market_id)
    key = (account, market.market_id)
    position = state.positions.get(key)
    mode = MARGIN_ISOLATED if isolated else MARGIN_CROSS
    current = position.margin_mode if position is not None else MARGIN_CROSS
    name = "isolated" if isolated else "cross"
    if current == mode:
        raise InvalidAction(f"the account already trades market {market_id} in {name} margin")
    if position is not None and (position.size != 0 or position.cost != 0):
        raise InvalidAction(f"the margin mode cannot change while a position is open in market {market_id}")
    own = state.orders_of.get(account, {})
    if any(state.orders[order_id].market_id == market.market_id for order_id in own):
        raise InvalidAction(f"the margin mode cannot change while orders are open in market {market_id}")
    if isolated:
        set_entry(state, TAG_POSITION, state.positions, key,
                  Position(0, 0, market.funding_index, MARGIN_ISOLATED, 0))
        _note_perp_market(state, account, market.market_id)
        return
    assert position is not None
    if position.isolated_margin:
        balance, reserved = state.balances[(account, market.quote_asset)]
        set_balance(state, account, market.quote_asset, balance, reserved - position.isolated_margin)
    delete_entry(state, TAG_POSITION, state.positions, key)
    holders = state.position_holders.get(market.market_id)
    if holders is not None:
        delete_index(state, holders, account)


def adjust_isolated_margin(state: State, account: bytes, market_id: int, amount: int, add: bool) -> None:
    """Move ``amount`` of collateral from the free balance into the isolated margin of the
    account's position in ``market_id`` (``add``), or back out of it. Adding must leave the cross
    figures meeting their initial margin; removing must leave the isolated position meeting its
    own (the position's and its open orders')."""
    market = resolve_perp_market(state, market_id)
    key = (account, market.market_id)
    position = state.positions.get(key)
    if position is None or position.margin_mode != MARGIN_ISOLATED:
        raise InvalidAction(f"the account does not trade market {market_id} in isolated margin")
    if amount <= 0:
        raise InvalidAction("the amount must be positive")
    collateral = market.quote_asset
    balance, reserved = state.balances.get((account, collateral), (0, 0))
    if add:
        if balance - reserved < amount:
            raise InsufficientBalance(collateral, amount, balance - reserved)
        set_balance(state, account, collateral, balance, reserved + amount)
        set_entry(state, TAG_POSITION, state.positions, key,
                  msgspec.structs.replace(position, isolated_margin=position.isolated_margin + amount))
        check_margin_after_debit(state, account, collateral)
        return
    if amount > position.isolated_margin:
        raise InsufficientBalance(collateral, amount, position.isolated_margin)
    after = msgspec.structs.replace(position, isolated_margin=position.isolated_margin - amount)
    summary = isolated_summary(market, after, state.order_notional.get(key, 0))
    if not summary.meets_initial:
        raise InsufficientMargin(
            f"isolated equity {summary.equity} would fall below its initial margin {summary.initial}"
        )
    _return_isolated(state, key, collateral, amount)


def _return_isolated(state: State, key: tuple[bytes, int], collateral: int, amount: int) -> None:
    """Move ``amount`` out of the isolated margin of position ``key`` into the free balance."""
    position = state.positions[key]
    balance, reserved = state.balances[(key[0], collateral)]
    set_balance(state, key[0], collateral, balance, reserved - amount)
    set_entry(state, TAG_POSITION, state.positions, key,
              msgspec.structs.replace(position, isolated_margin=position.isolated_margin - amount))


def release_isolated_excess(state: State, account: bytes, asset_id: int) -> None:
    """Return to the free balance the isolated margin, settled in ``asset_id``, that the account's
    isolated positions do not need: whatever their equity holds above the initial margin of the
    position and of its market's open orders (all of it where neither is left)."""
    for market_id in state.perp_markets_of.get(account, ()):
        key = (account, market_id)
        position = state.positions.get(key)
        market = state.markets[market_id]
        if position is None or position.margin_mode != MARGIN_ISOLATED or market.quote_asset != asset_id:
            continue
        summary = isolated_summary(market, position, state.order_notional.get(key, 0))
        excess = min(position.isolated_margin, summary.equity - summary.initial)
        if excess > 0:
            _return_isolated(state, key, asset_id, excess)


def withdrawable(state: State, account: bytes, asset_id: int) -> int:
    """How much of an asset the account can take out now: its free balance, and, where the asset
    backs perpetual positions or orders, no more than the equity above the initial margin."""
    balance, reserved = state.balances.get((account, asset_id), (0, 0))
    free = balance - reserved
    if account in state.perp_markets_of:
        summary = margin_summary(state, account, asset_id)
        if summary.initial:
            free = min(free, max(0, summary.equity - summary.initial))
    return free


def check_margin_after_debit(state: State, account: bytes, asset_id: int) -> None:
    """Raise InsufficientMargin if, after a debit, the account no longer meets initial margin."""
    if not meets_initial_margin(state, account, asset_id):
        raise InsufficientMargin("the debit would leave the account below its initial margin")
