"""Property test: the order book behaves exactly like a simple reference model (a sorted list)
on random streams of add / remove / reduce / match, with transactions rolled back or committed."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from node.tradezone.matching import BUY, SELL, FillVerdict, OrderBook, RestingOrder

ACCOUNTS = [bytes([i]) * 20 for i in range(1, 5)]


@dataclass
class ModelOrder:
    order_id: int
    account: bytes
    side: int
    price: int
    size: int
    arrival: int


class ModelBook:
    """The reference: a plain list, sorted on demand by (price priority, arrival)."""

    def __init__(self) -> None:
        self.orders: list[ModelOrder] = []
        self.arrivals = 0

    def priority(self, side: int) -> list[ModelOrder]:
        same = [o for o in self.orders if o.side == side]
        if side == BUY:
            return sorted(same, key=lambda o: (-o.price, o.arrival))
        return sorted(same, key=lambda o: (o.price, o.arrival))

    def listing(self) -> list[tuple[int, bytes, int, int, int]]:
        return [(o.order_id, o.account, o.side, o.price, o.size) for o in self.priority(BUY) + self.priority(SELL)]

    def depth(self, side: int) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for o in self.priority(side):
            if out and out[-1][0] == o.price:
                out[-1] = (o.price, out[-1][1] + o.size)
            else:
                out.append((o.price, o.size))
        return out

    def find(self, order_id: int) -> ModelOrder | None:
        for o in self.orders:
            if o.order_id == order_id:
                return o
        return None

    def add(self, order_id: int, account: bytes, side: int, price: int, size: int) -> None:
        self.arrivals += 1
        self.orders.append(ModelOrder(order_id, account, side, price, size, self.arrivals))

    def remove(self, order_id: int) -> bool:
        found = self.find(order_id)
        if found is None:
            return False
        self.orders.remove(found)
        return True

    def match(
        self, taker: bytes, side: int, limit: int, size: int, verdicts: dict[int, FillVerdict]
    ) -> tuple[list[tuple[int, int, int, int]], list[int], list[int], int]:
        fills: list[tuple[int, int, int, int]] = []
        expired: list[int] = []
        cancelled: list[int] = []
        remaining = size
        for maker in self.priority(SELL if side == BUY else BUY):
            if remaining == 0:
                break
            if (side == BUY and maker.price > limit) or (side == SELL and maker.price < limit):
                break
            if maker.account == taker:
                expired.append(maker.order_id)
                self.orders.remove(maker)
                continue
            verdict = verdicts.get(maker.order_id, FillVerdict.ACCEPT)
            if verdict == FillVerdict.STOP:
                break
            if verdict == FillVerdict.CANCEL_MAKER:
                cancelled.append(maker.order_id)
                self.orders.remove(maker)
                continue
            quantity = min(maker.size, remaining)
            maker.size -= quantity
            remaining -= quantity
            fills.append((maker.order_id, maker.price, quantity, maker.size))
            if maker.size == 0:
                self.orders.remove(maker)
        return fills, expired, cancelled, remaining


prices = st.integers(min_value=95, max_value=105)
sizes = st.integers(min_value=1, max_value=12)
order_ids = st.integers(min_value=0, max_value=15)
accounts = st.sampled_from(ACCOUNTS)
sides = st.sampled_from([BUY, SELL])
verdict_tables = st.dictionaries(
    order_ids, st.sampled_from([FillVerdict.CANCEL_MAKER, FillVerdict.STOP]), max_size=4
)

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), order_ids, accounts, sides, prices, sizes),
        st.tuples(st.just("add"), order_ids, accounts, sides, prices, sizes),
        st.tuples(st.just("add"), order_ids, accounts, sides, prices, sizes),
        st.tuples(st.just("remove"), order_ids),
        st.tuples(st.just("reduce"), order_ids, sizes),
        st.tuples(st.just("move"), order_ids, prices, sizes),
        st.tuples(st.just("readd"), order_ids, prices, sizes),
        st.tuples(st.just("match"), accounts, sides, prices, st.integers(min_value=1, max_value=40), verdict_tables),
        st.tuples(st.just("match"), accounts, sides, prices, st.integers(min_value=1, max_value=40), verdict_tables),
        st.tuples(st.just("begin")),
        st.tuples(st.just("commit")),
        st.tuples(st.just("rollback")),
    ),
    min_size=20,
    max_size=80,
)


def check_same(book: OrderBook, model: ModelBook) -> None:
    assert [(o.order_id, o.account, o.side, o.price, o.size) for o in book.orders()] == model.listing()
    bids, asks = book.depth(1_000)
    assert bids == model.depth(BUY) and asks == model.depth(SELL)
    assert book.best_bid() == (bids[0][0] if bids else None)
    assert book.best_ask() == (asks[0][0] if asks else None)
    assert len(book) == len(model.orders)
    # Time priority is the seq order, so the book rebuilds from its order records alone.
    copies = [
        RestingOrder(o.order_id, o.account, o.side, o.price, o.size, o.client_order_id, o.reduce_only, o.seq)
        for o in book.orders()
    ]
    copies.reverse()
    rebuilt = OrderBook.from_orders(book.market_id, copies)
    assert [(o.order_id, o.size, o.seq) for o in rebuilt.orders()] == [
        (o.order_id, o.size, o.seq) for o in book.orders()
    ]


@settings(max_examples=150, deadline=None)
@given(operations)
def test_book_matches_the_reference_model(ops: list[tuple]) -> None:
    book = OrderBook(market_id=1)
    model = ModelBook()
    saved: list[ModelBook] = []
    for op in ops:
        kind = op[0]
        if kind == "add":
            _, order_id, account, side, price, size = op
            if model.find(order_id) is not None:
                continue  # duplicate ids are a caller error, covered by the unit tests
            book.add(RestingOrder(order_id, account, side, price, size, 0, False, model.arrivals + 1))
            model.add(order_id, account, side, price, size)
        elif kind == "remove":
            removed = book.remove(op[1])
            assert (removed is not None) == model.remove(op[1])
        elif kind == "reduce":
            _, order_id, new_size = op
            target = model.find(order_id)
            if target is None or new_size > target.size:
                continue
            book.reduce(order_id, new_size)
            target.size = new_size
        elif kind == "move":
            _, order_id, price, size = op
            target = model.find(order_id)
            if target is None:
                continue
            book.move(order_id, price, size, seq=model.arrivals + 1)
            model.remove(order_id)
            model.add(order_id, target.account, target.side, price, size)
        elif kind == "readd":
            # A modify done as remove, change of the same object, add (the object is reused).
            _, order_id, price, size = op
            target = model.find(order_id)
            if target is None:
                continue
            reused = book.remove(order_id)
            assert reused is not None
            reused.price, reused.size, reused.seq = price, size, model.arrivals + 1
            book.add(reused)
            model.remove(order_id)
            model.add(order_id, target.account, target.side, price, size)
        elif kind == "match":
            _, taker, side, limit, size, verdicts = op

            def try_fill(maker: RestingOrder, price: int, quantity: int, verdicts=verdicts) -> FillVerdict:
                assert price == maker.price and 0 < quantity <= maker.size
                return verdicts.get(maker.order_id, FillVerdict.ACCEPT)

            result = book.match(taker, side, limit, size, try_fill)
            want = model.match(taker, side, limit, size, verdicts)
            got = (
                [(f.maker_order_id, f.price, f.size, f.maker_remaining) for f in result.fills],
                [o.order_id for o in result.expired],
                [o.order_id for o in result.cancelled],
                result.remaining,
            )
            assert got == want
        elif kind == "begin":
            book.begin_transaction()
            saved.append(copy.deepcopy(model))
        elif kind == "commit":
            if not saved:
                continue
            book.commit_transaction()
            saved.pop()
        else:
            if not saved:
                continue
            book.rollback_transaction()
            model = saved.pop()
        check_same(book, model)
    while saved:
        book.rollback_transaction()
        model = saved.pop()
    check_same(book, model)
