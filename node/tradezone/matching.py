"""The matching core: one order book per market, price-time priority on integer ticks.

Protocol rules this module implements (issue 4, "Matching engine"):

- Price-time priority: a taker meets the best price first and, within a price level, the
  order that has rested longest first. Prices are integer ticks, sizes integer lots.
- Fills happen at the maker's (resting order's) price.
- Reducing a resting order's size keeps its time priority; any other change is a removal
  followed by a new ``add`` at the back of the new level.
- Self-trade prevention, "expire maker": a resting order of the taker's own account that the
  taker would meet is removed from the book, and matching goes on behind it.
- Every candidate fill is offered to the caller's ``try_fill`` callback, which checks both
  sides' margin or balances at that moment and settles the fill itself on ``ACCEPT``.

The book holds no money and knows nothing of accounts beyond their 20-byte address. It is
deterministic: its iteration order depends only on the sequence of calls made on it.

Layout, chosen for speed in CPython: each price level is an intrusive doubly linked list
threaded through the resting orders themselves (no per-order container allocations, O(1)
removal from the middle of a level), levels are found by price in a dict, and the active
prices of each side are kept in an ascending list maintained with ``bisect`` so the best
price is an index lookup, never a sort.

Changes can be undone: ``begin_transaction`` / ``commit_transaction`` /
``rollback_transaction`` (nestable) keep an undo journal of every change made in between, so
a rejected transaction leaves the book exactly as it was, time priority included.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple

BUY: int = 0
SELL: int = 1

# Undo journal entry kinds.
_UNDO_ADD: int = 0  # (kind, order): the order was added; undo removes it
_UNDO_REMOVE: int = 1  # (kind, order, prev, next, price, size, seq): removed from between prev and next
_UNDO_SIZE: int = 2  # (kind, order, old_size): the order's size was changed from old_size


class BookError(Exception):
    """A call on the order book that breaks its preconditions (a caller bug, not a user error)."""


class DuplicateOrderId(BookError):
    """``add`` was given an order id that already rests in the book."""

    def __init__(self, order_id: int) -> None:
        super().__init__(f"order id {order_id} already rests in the book")
        self.order_id = order_id


class UnknownOrderId(BookError):
    """``reduce`` was given an order id that does not rest in the book."""

    def __init__(self, order_id: int) -> None:
        super().__init__(f"order id {order_id} does not rest in the book")
        self.order_id = order_id


class InvalidOrderSize(BookError):
    """A size that is not a positive integer, or a ``reduce`` that would grow the order."""

    def __init__(self, size: int, reason: str) -> None:
        super().__init__(f"invalid size {size}: {reason}")
        self.size = size


class InvalidSide(BookError):
    """A side other than BUY (0) or SELL (1)."""

    def __init__(self, side: int) -> None:
        super().__init__(f"invalid side {side}: expected 0 (buy) or 1 (sell)")
        self.side = side


class NoOpenTransaction(BookError):
    """``commit_transaction`` or ``rollback_transaction`` without a matching ``begin_transaction``."""

    def __init__(self) -> None:
        super().__init__("no open order-book transaction")


@dataclass(slots=True)
class RestingOrder:
    """An order resting in a book. Mutable, but change it only through its ``OrderBook``.

    ``seq`` is the time-priority stamp the caller assigns (informational for the book: the
    book's own priority is the order of ``add`` calls). The link fields are the book's
    intrusive per-level list and are not part of the order's value.
    """

    order_id: int
    account: bytes
    side: int
    price: int
    size: int
    client_order_id: int = 0
    reduce_only: bool = False
    seq: int = 0
    _prev: RestingOrder | None = field(default=None, init=False, repr=False, compare=False)
    _next: RestingOrder | None = field(default=None, init=False, repr=False, compare=False)
    _level: _Level | None = field(default=None, init=False, repr=False, compare=False)

    def __reduce__(self) -> tuple[type[RestingOrder], tuple[int, bytes, int, int, int, int, bool, int]]:
        """A copy (pickle, deepcopy) carries the order's value only and rests in no book; this
        also keeps pickling from recursing along a level's links."""
        return RestingOrder, (
            self.order_id,
            self.account,
            self.side,
            self.price,
            self.size,
            self.client_order_id,
            self.reduce_only,
            self.seq,
        )


class _Level:
    """One price level of one side: a FIFO of resting orders and its total size."""

    __slots__ = ("price", "head", "tail", "total", "count")

    def __init__(self, price: int) -> None:
        self.price = price
        self.head: RestingOrder | None = None
        self.tail: RestingOrder | None = None
        self.total = 0
        self.count = 0


class FillVerdict(IntEnum):
    """What ``try_fill`` decided about one candidate fill."""

    ACCEPT = 0  # the fill is settled; the book reduces or removes the maker and goes on
    CANCEL_MAKER = 1  # the maker can no longer pay: remove it from the book and go on
    STOP = 2  # the taker can pay no more: end matching here


# Enum attribute lookups are slow in CPython; the hot path compares against these.
_ACCEPT: int = FillVerdict.ACCEPT
_CANCEL_MAKER: int = FillVerdict.CANCEL_MAKER


class Fill(NamedTuple):
    """One fill: ``size`` lots of the maker's order traded at ``price`` (the maker's price)."""

    maker_order_id: int
    maker_account: bytes
    price: int
    size: int
    maker_remaining: int


@dataclass(slots=True)
class MatchResult:
    """The outcome of one ``match`` call.

    ``fills`` in execution order; ``expired`` the taker's own resting orders removed by
    self-trade prevention; ``cancelled`` the makers ``try_fill`` answered CANCEL_MAKER for
    (removed from the book); ``remaining`` the taker's size left unfilled.
    """

    fills: list[Fill]
    expired: list[RestingOrder]
    cancelled: list[RestingOrder]
    remaining: int

    @property
    def filled(self) -> int:
        """Total size the taker received across all fills."""
        return sum(fill.size for fill in self.fills)


TryFill = Callable[[RestingOrder, int, int], FillVerdict]


def _priority_key(order: RestingOrder) -> tuple[int, int]:
    return order.seq, order.order_id


def _rebuild_book(market_id: int, orders: list[RestingOrder]) -> OrderBook:
    """Unpickling of an OrderBook: ``orders`` in ``orders()`` order (fresh, detached objects)."""
    book = OrderBook(market_id)
    for order in orders:
        book.add(order)
    return book


class OrderBook:
    """The order book of one market: bids and asks at integer tick prices, price-time priority."""

    __slots__ = ("market_id", "_orders", "_levels", "_prices", "_journal", "_spare_journal", "_marks")

    def __init__(self, market_id: int) -> None:
        self.market_id = market_id
        self._orders: dict[int, RestingOrder] = {}
        # Indexed by side (BUY, SELL): price -> level, and the ascending list of active prices.
        self._levels: tuple[dict[int, _Level], dict[int, _Level]] = ({}, {})
        self._prices: tuple[list[int], list[int]] = ([], [])
        # The undo journal while a transaction is open, else None (so changes outside a
        # transaction cost one None check). The list object is kept between transactions.
        self._journal: list[tuple] | None = None
        self._spare_journal: list[tuple] = []
        self._marks: list[int] = []

    @classmethod
    def from_orders(cls, market_id: int, orders: Iterable[RestingOrder]) -> OrderBook:
        """A book holding ``orders`` (the objects themselves, which must rest in no other book),
        each level in time priority by ``seq`` (ties by ``order_id``). When every order was
        added with a larger ``seq`` than the orders before it, and kept it through ``reduce``,
        this rebuilds exactly the book they came from: the way to restore a book from the
        order records in the state. Raises what ``add`` raises."""
        book = cls(market_id)
        for order in sorted(orders, key=_priority_key):
            book.add(order)
        return book

    def __reduce__(self) -> tuple[Callable[[int, list[RestingOrder]], OrderBook], tuple[int, list[RestingOrder]]]:
        """A copy (pickle, deepcopy) is the same book, time priority included, rebuilt from a
        flat list of its orders (no recursion along the levels' links). Raises BookError inside
        an open transaction, whose undo journal cannot be copied."""
        if self._marks:
            raise BookError("an order book cannot be copied inside an open transaction")
        return _rebuild_book, (self.market_id, list(self.orders()))

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of resting orders (both sides)."""
        return len(self._orders)

    def __contains__(self, order_id: object) -> bool:
        return order_id in self._orders

    def get(self, order_id: int) -> RestingOrder | None:
        """The resting order with this id, or None. The returned object is live: do not mutate it."""
        return self._orders.get(order_id)

    def best_bid(self) -> int | None:
        """Highest bid price, or None when there are no bids."""
        prices = self._prices[BUY]
        return prices[-1] if prices else None

    def best_ask(self) -> int | None:
        """Lowest ask price, or None when there are no asks."""
        prices = self._prices[SELL]
        return prices[0] if prices else None

    def would_cross(self, side: int, price: int) -> bool:
        """True when an order of ``side`` at ``price`` would meet at least one resting order
        of the other side (a buy at or above the best ask, a sell at or below the best bid).
        Resting orders of the same account count too: post-only rejection does not look at
        self-trade prevention."""
        if side == BUY:
            asks = self._prices[SELL]
            return bool(asks) and price >= asks[0]
        if side == SELL:
            bids = self._prices[BUY]
            return bool(bids) and price <= bids[-1]
        raise InvalidSide(side)

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Up to ``levels`` best price levels of each side as ``(price, total size)``: bids from
        the highest price down, asks from the lowest price up."""
        if levels <= 0:
            return [], []
        bid_levels = self._levels[BUY]
        ask_levels = self._levels[SELL]
        bid_prices = self._prices[BUY]
        ask_prices = self._prices[SELL]
        bids = [(p, bid_levels[p].total) for p in reversed(bid_prices[-levels:])]
        asks = [(p, ask_levels[p].total) for p in ask_prices[:levels]]
        return bids, asks

    def level_size(self, side: int, price: int) -> int:
        """Total resting size of ``side`` at ``price`` (0 when the level is empty)."""
        level = self._levels[side].get(price)
        return level.total if level is not None else 0

    def orders(self) -> Iterator[RestingOrder]:
        """Every resting order in a deterministic order: bids from the best price down, then
        asks from the best price up; within a level, in time priority."""
        for side, prices in ((BUY, reversed(self._prices[BUY])), (SELL, iter(self._prices[SELL]))):
            levels = self._levels[side]
            for price in prices:
                order = levels[price].head
                while order is not None:
                    yield order
                    order = order._next

    def orders_at(self, side: int, price: int) -> list[RestingOrder]:
        """The orders resting at one level, in time priority (empty list when none)."""
        level = self._levels[side].get(price)
        out: list[RestingOrder] = []
        order = level.head if level is not None else None
        while order is not None:
            out.append(order)
            order = order._next
        return out

    # -- changing --------------------------------------------------------------------------

    def add(self, order: RestingOrder) -> None:
        """Rest ``order`` at the back of its price level (lowest time priority at that price).

        Raises DuplicateOrderId, InvalidOrderSize (size <= 0) or InvalidSide; on error the
        book is unchanged. The book does not check that the order would not cross: the caller
        matches first and rests only what is left.
        """
        order_id = order.order_id
        orders = self._orders
        if order_id in orders:
            raise DuplicateOrderId(order_id)
        if order.size <= 0:
            raise InvalidOrderSize(order.size, "a resting order needs a positive size")
        side = order.side
        if side != BUY and side != SELL:
            raise InvalidSide(side)
        self._link_back(order)
        orders[order_id] = order
        journal = self._journal
        if journal is not None:
            journal.append((_UNDO_ADD, order))

    def _link_back(self, order: RestingOrder) -> None:
        """Put ``order`` at the back of the level of its side and price, creating the level."""
        side = order.side
        price = order.price
        levels = self._levels[side]
        level = levels.get(price)
        if level is None:
            level = _Level(price)
            levels[price] = level
            insort(self._prices[side], price)
        tail = level.tail
        order._prev = tail
        order._next = None
        order._level = level
        if tail is None:
            level.head = order
        else:
            tail._next = order
        level.tail = order
        level.total += order.size
        level.count += 1

    def remove(self, order_id: int) -> RestingOrder | None:
        """Take the order with this id out of the book and return it, or return None (and change
        nothing) when no such order rests."""
        order = self._orders.get(order_id)
        if order is None:
            return None
        self._unlink(order)
        return order

    def reduce(self, order_id: int, new_size: int) -> None:
        """Set a resting order's size to ``new_size`` with 0 < new_size <= its size, keeping its
        place in the queue (time priority). Raises UnknownOrderId or InvalidOrderSize and then
        changes nothing."""
        order = self._orders.get(order_id)
        if order is None:
            raise UnknownOrderId(order_id)
        old_size = order.size
        if new_size <= 0:
            raise InvalidOrderSize(new_size, "use remove to take an order out of the book")
        if new_size > old_size:
            raise InvalidOrderSize(new_size, f"reduce cannot grow an order of size {old_size}")
        if new_size == old_size:
            return
        level: _Level = order._level  # type: ignore[assignment]  # set while the order rests
        level.total -= old_size - new_size
        order.size = new_size
        journal = self._journal
        if journal is not None:
            journal.append((_UNDO_SIZE, order, old_size))

    def move(self, order_id: int, new_price: int, new_size: int, seq: int) -> RestingOrder:
        """Cancel-replace a resting order: take it out, give it ``new_price``, ``new_size`` and
        the priority stamp ``seq``, and rest it at the back of its (new) level, losing its time
        priority. Same result as ``remove`` then ``add`` of the same object, in one call. The
        caller checks ``would_cross`` first (a crossing replacement must match instead); a size
        decrease at the same price that should keep priority is ``reduce``.

        Raises UnknownOrderId or InvalidOrderSize (new_size <= 0) and then changes nothing.
        Returns the (same, updated) order object.
        """
        order = self._orders.get(order_id)
        if order is None:
            raise UnknownOrderId(order_id)
        if new_size <= 0:
            raise InvalidOrderSize(new_size, "a resting order needs a positive size")
        # Out of the old level (as _unlink, but the id index keeps the order: it comes back).
        level: _Level = order._level  # type: ignore[assignment]  # set while the order rests
        prev = order._prev
        following = order._next
        if prev is None:
            level.head = following
        else:
            prev._next = following
        if following is None:
            level.tail = prev
        else:
            following._prev = prev
        level.total -= order.size
        level.count -= 1
        side = order.side
        if level.count == 0:
            self._drop_level(side, level.price)
        journal = self._journal
        if journal is not None:
            journal.append((_UNDO_REMOVE, order, prev, following, level.price, order.size, order.seq))
        # Into the new one, at the back.
        order.price = new_price
        order.size = new_size
        order.seq = seq
        self._link_back(order)
        if journal is not None:
            journal.append((_UNDO_ADD, order))
        return order

    def match(
        self,
        taker_account: bytes,
        side: int,
        limit_price: int,
        size: int,
        try_fill: TryFill,
    ) -> MatchResult:
        """Match a taker of ``side`` for up to ``size`` lots against the other side of the book,
        walking price-time priority up to ``limit_price`` inclusive.

        For every maker met in order:
        - a maker of ``taker_account`` is removed (self-trade prevention, expire maker) and
          reported in ``expired``; it consumes none of the taker's size;
        - otherwise ``try_fill(maker, maker.price, n)`` is called with
          ``n = min(maker.size, remaining)`` and the maker still unchanged. ACCEPT: the maker is
          reduced by ``n`` (removed when it reaches 0) and a Fill at the maker's price is
          recorded; CANCEL_MAKER: the maker is removed and reported in ``cancelled``; STOP:
          matching ends.
        ``try_fill`` must not change this book. The taker itself is never added to the book; a
        ``size`` of 0 or less matches nothing. If ``try_fill`` raises, the exception propagates
        with the book consistent: makers met before are filled, expired or cancelled, the maker
        being offered is untouched; ``rollback_transaction`` undoes all of it.
        """
        if side == BUY:
            other = SELL
            best_index = 0
        elif side == SELL:
            other = BUY
            best_index = -1
        else:
            raise InvalidSide(side)
        fills: list[Fill] = []
        expired: list[RestingOrder] = []
        cancelled: list[RestingOrder] = []
        remaining = size
        prices = self._prices[other]
        levels = self._levels[other]
        journal = self._journal
        accept = _ACCEPT
        cancel = _CANCEL_MAKER
        stopped = False
        while remaining > 0 and prices and not stopped:
            price = prices[best_index]
            if (price > limit_price) if side == BUY else (price < limit_price):
                break
            level = levels[price]
            maker = level.head
            while maker is not None and remaining > 0:
                following = maker._next
                if maker.account == taker_account:
                    expired.append(maker)
                    self._unlink(maker)
                    maker = following
                    continue
                maker_size = maker.size
                quantity = maker_size if maker_size <= remaining else remaining
                verdict = try_fill(maker, price, quantity)
                if verdict == accept:
                    remaining -= quantity
                    left = maker_size - quantity
                    fills.append(Fill(maker.order_id, maker.account, price, quantity, left))
                    if left == 0:
                        self._unlink(maker)
                    else:
                        level.total -= quantity
                        maker.size = left
                        if journal is not None:
                            journal.append((_UNDO_SIZE, maker, maker_size))
                elif verdict == cancel:
                    cancelled.append(maker)
                    self._unlink(maker)
                else:
                    stopped = True
                    break
                maker = following
            # Here the level is either emptied (and deleted by _unlink, so the next best price
            # is at prices[best_index]) or the taker is filled or stopped, which ends the walk.
        return MatchResult(fills, expired, cancelled, remaining)

    # -- transactions ----------------------------------------------------------------------

    def begin_transaction(self) -> None:
        """Start recording changes so that ``rollback_transaction`` can undo them. Nestable."""
        journal = self._journal
        if journal is None:
            journal = self._journal = self._spare_journal
        self._marks.append(len(journal))

    def commit_transaction(self) -> None:
        """Keep the changes since the matching ``begin_transaction`` (an enclosing transaction
        can still roll them back). Raises NoOpenTransaction when none is open."""
        marks = self._marks
        if not marks:
            raise NoOpenTransaction()
        marks.pop()
        if not marks:
            self._spare_journal.clear()
            self._journal = None

    def rollback_transaction(self) -> None:
        """Undo every change since the matching ``begin_transaction``: the book (orders, sizes,
        levels and time priority) is exactly as it was then. Raises NoOpenTransaction when none
        is open."""
        if not self._marks:
            raise NoOpenTransaction()
        journal: list[tuple] = self._journal  # type: ignore[assignment]  # a list while marks exist
        mark = self._marks.pop()
        # Recording stops while undoing; entries are undone strictly newest first, so every
        # neighbour an entry refers to is where it was when the entry was written.
        self._journal = None
        for index in range(len(journal) - 1, mark - 1, -1):
            entry = journal[index]
            kind = entry[0]
            if kind == _UNDO_ADD:
                self._unlink(entry[1])
            elif kind == _UNDO_REMOVE:
                self._relink(entry)
            else:
                order = entry[1]
                level = order._level
                if level is None:
                    raise BookError(f"undo journal refers to an order that no longer rests: {order.order_id}")
                level.total += entry[2] - order.size
                order.size = entry[2]
        del journal[mark:]
        self._journal = journal if self._marks else None

    @property
    def in_transaction(self) -> bool:
        """True while a ``begin_transaction`` is open."""
        return bool(self._marks)

    # -- internals -------------------------------------------------------------------------

    def _unlink(self, order: RestingOrder) -> None:
        """Take a resting order out of its level, the id index and (when it empties) the level
        table and price list. Records the undo entry."""
        level: _Level = order._level  # type: ignore[assignment]  # set while the order rests
        prev = order._prev
        following = order._next
        if prev is None:
            level.head = following
        else:
            prev._next = following
        if following is None:
            level.tail = prev
        else:
            following._prev = prev
        level.total -= order.size
        level.count -= 1
        if level.count == 0:
            self._drop_level(order.side, level.price)
        order._level = None
        order._prev = order._next = None  # a removed order keeps no neighbour alive
        del self._orders[order.order_id]
        journal = self._journal
        if journal is not None:
            # The order's fields are saved too: a caller may reuse a removed order object for
            # its replacement (modify) before the transaction ends.
            journal.append((_UNDO_REMOVE, order, prev, following, level.price, order.size, order.seq))

    def _drop_level(self, side: int, price: int) -> None:
        """Delete an emptied level from the level table and the price list (the best price is
        the common case, so the ends are checked before a bisection)."""
        prices = self._prices[side]
        if prices[0] == price:
            del prices[0]
        elif prices[-1] == price:
            prices.pop()
        else:
            del prices[bisect_left(prices, price)]
        del self._levels[side][price]

    def _relink(self, entry: tuple) -> None:
        """Undo of ``_unlink``: put the order back, with the price, size and priority stamp it
        had, between the neighbours it had."""
        _, order, prev, following, order.price, order.size, order.seq = entry
        side = order.side
        if prev is not None:
            level = prev._level
        elif following is not None:
            level = following._level
        else:
            level = _Level(order.price)
            self._levels[side][order.price] = level
            insort(self._prices[side], order.price)
        if level is None:
            raise BookError(f"undo journal refers to an order that no longer rests: {order.order_id}")
        order._prev = prev
        order._next = following
        order._level = level
        if prev is None:
            level.head = order
        else:
            prev._next = order
        if following is None:
            level.tail = order
        else:
            following._prev = order
        level.total += order.size
        level.count += 1
        self._orders[order.order_id] = order

    def orders_of(self, account: bytes) -> list[RestingOrder]:
        """The account's resting orders, in ``orders()`` order (a scan of the whole book)."""
        return [order for order in self.orders() if order.account == account]
