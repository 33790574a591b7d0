"""Unit tests of the matching core: one test per protocol rule of the order book."""

from __future__ import annotations

import pytest

from node.tradezone.matching import (
    BUY,
    SELL,
    BookError,
    DuplicateOrderId,
    Fill,
    FillVerdict,
    InvalidOrderSize,
    InvalidSide,
    NoOpenTransaction,
    OrderBook,
    RestingOrder,
    UnknownOrderId,
)

ALICE = b"\xaa" * 20
BOB = b"\xbb" * 20
CAROL = b"\xcc" * 20
TAKER = b"\x77" * 20


def accept_all(maker: RestingOrder, price: int, size: int) -> FillVerdict:
    return FillVerdict.ACCEPT


def order(order_id: int, side: int, price: int, size: int, account: bytes = ALICE, seq: int = 0) -> RestingOrder:
    return RestingOrder(
        order_id=order_id,
        account=account,
        side=side,
        price=price,
        size=size,
        client_order_id=order_id + 1000,
        reduce_only=False,
        seq=seq or order_id,
    )


def ids(book: OrderBook) -> list[int]:
    return [o.order_id for o in book.orders()]


def book_with(*orders: RestingOrder) -> OrderBook:
    book = OrderBook(market_id=7)
    for o in orders:
        book.add(o)
    return book


# -- priority -------------------------------------------------------------------------------


def test_buy_taker_meets_lowest_ask_first_across_levels() -> None:
    book = book_with(order(1, SELL, 102, 5), order(2, SELL, 100, 5), order(3, SELL, 101, 5))
    result = book.match(TAKER, BUY, 102, 12, accept_all)
    assert [(f.maker_order_id, f.price, f.size) for f in result.fills] == [(2, 100, 5), (3, 101, 5), (1, 102, 2)]
    assert result.remaining == 0
    assert book.get(1) is not None and book.get(1).size == 3  # type: ignore[union-attr]


def test_sell_taker_meets_highest_bid_first_across_levels() -> None:
    book = book_with(order(1, BUY, 98, 5), order(2, BUY, 100, 5), order(3, BUY, 99, 5))
    result = book.match(TAKER, SELL, 98, 11, accept_all)
    assert [(f.maker_order_id, f.price) for f in result.fills] == [(2, 100), (3, 99), (1, 98)]
    assert result.fills[-1].size == 1 and result.fills[-1].maker_remaining == 4


def test_within_a_level_the_oldest_order_fills_first() -> None:
    book = book_with(order(5, SELL, 100, 3), order(2, SELL, 100, 3), order(9, SELL, 100, 3))
    result = book.match(TAKER, BUY, 100, 7, accept_all)
    assert [(f.maker_order_id, f.size) for f in result.fills] == [(5, 3), (2, 3), (9, 1)]
    assert ids(book) == [9]


def test_match_stops_at_the_limit_price() -> None:
    book = book_with(order(1, SELL, 100, 2), order(2, SELL, 101, 2), order(3, SELL, 102, 2))
    result = book.match(TAKER, BUY, 101, 10, accept_all)
    assert [f.maker_order_id for f in result.fills] == [1, 2]
    assert result.remaining == 6
    assert book.best_ask() == 102


def test_sell_limit_is_inclusive_and_stops_below() -> None:
    book = book_with(order(1, BUY, 100, 2), order(2, BUY, 99, 2))
    result = book.match(TAKER, SELL, 100, 5, accept_all)
    assert [f.maker_order_id for f in result.fills] == [1]
    assert result.remaining == 3 and book.best_bid() == 99


def test_fills_happen_at_the_makers_price_not_the_takers_limit() -> None:
    book = book_with(order(1, SELL, 95, 4))
    result = book.match(TAKER, BUY, 120, 4, accept_all)
    assert result.fills == [Fill(maker_order_id=1, maker_account=ALICE, price=95, size=4, maker_remaining=0)]


def test_partial_fill_of_maker_keeps_its_place_at_the_head() -> None:
    book = book_with(order(1, SELL, 100, 10), order(2, SELL, 100, 10))
    first = book.match(TAKER, BUY, 100, 4, accept_all)
    assert first.fills[0].maker_remaining == 6
    assert ids(book) == [1, 2]
    assert book.depth(1) == ([], [(100, 16)])
    second = book.match(TAKER, BUY, 100, 8, accept_all)
    assert [(f.maker_order_id, f.size, f.maker_remaining) for f in second.fills] == [(1, 6, 0), (2, 2, 8)]


def test_partial_fill_of_taker_reports_remaining() -> None:
    book = book_with(order(1, SELL, 100, 3))
    result = book.match(TAKER, BUY, 100, 10, accept_all)
    assert result.remaining == 7 and result.filled == 3
    assert len(book) == 0 and book.best_ask() is None


def test_match_against_an_empty_side_fills_nothing() -> None:
    book = book_with(order(1, BUY, 100, 3))
    result = book.match(TAKER, BUY, 1_000, 5, accept_all)
    assert result.fills == [] and result.remaining == 5 and len(book) == 1


# -- reduce vs re-add ---------------------------------------------------------------------


def test_reduce_keeps_time_priority() -> None:
    book = book_with(order(1, SELL, 100, 10), order(2, SELL, 100, 10))
    book.reduce(1, 4)
    assert ids(book) == [1, 2]
    assert book.get(1).size == 4  # type: ignore[union-attr]
    assert book.depth(1)[1] == [(100, 14)]
    result = book.match(TAKER, BUY, 100, 5, accept_all)
    assert [(f.maker_order_id, f.size) for f in result.fills] == [(1, 4), (2, 1)]


def test_remove_and_re_add_loses_time_priority() -> None:
    book = book_with(order(1, SELL, 100, 10), order(2, SELL, 100, 10))
    moved = book.remove(1)
    assert moved is not None
    moved.size = 12
    book.add(moved)
    assert ids(book) == [2, 1]
    result = book.match(TAKER, BUY, 100, 5, accept_all)
    assert result.fills[0].maker_order_id == 2


def test_reduce_rejects_growth_zero_and_unknown_ids_without_change() -> None:
    book = book_with(order(1, SELL, 100, 10))
    with pytest.raises(InvalidOrderSize):
        book.reduce(1, 11)
    with pytest.raises(InvalidOrderSize):
        book.reduce(1, 0)
    with pytest.raises(UnknownOrderId):
        book.reduce(99, 1)
    assert book.get(1).size == 10  # type: ignore[union-attr]
    assert book.depth(5) == ([], [(100, 10)])


def test_reduce_to_the_same_size_changes_nothing() -> None:
    book = book_with(order(1, BUY, 100, 10), order(2, BUY, 100, 1))
    book.reduce(1, 10)
    assert ids(book) == [1, 2] and book.level_size(BUY, 100) == 11


# -- self-trade prevention ----------------------------------------------------------------


def test_self_trade_prevention_expires_the_resting_maker_and_goes_on() -> None:
    book = book_with(order(1, SELL, 100, 5, account=TAKER), order(2, SELL, 100, 5, account=BOB))
    calls: list[int] = []

    def try_fill(maker: RestingOrder, price: int, size: int) -> FillVerdict:
        calls.append(maker.order_id)
        return FillVerdict.ACCEPT

    result = book.match(TAKER, BUY, 100, 5, try_fill)
    assert [o.order_id for o in result.expired] == [1]
    assert calls == [2]  # the own order is never offered as a fill
    assert [f.maker_order_id for f in result.fills] == [2]
    assert result.remaining == 0
    assert book.get(1) is None and len(book) == 0


def test_self_trade_prevention_consumes_no_taker_size() -> None:
    book = book_with(order(1, SELL, 100, 50, account=TAKER), order(2, SELL, 101, 3, account=BOB))
    result = book.match(TAKER, BUY, 101, 3, accept_all)
    assert [o.order_id for o in result.expired] == [1]
    assert result.filled == 3 and result.remaining == 0


def test_self_trade_prevention_only_expires_orders_the_taker_reaches() -> None:
    book = book_with(
        order(1, SELL, 100, 5, account=BOB),
        order(2, SELL, 100, 5, account=TAKER),
        order(3, SELL, 105, 5, account=TAKER),
    )
    result = book.match(TAKER, BUY, 104, 5, accept_all)
    assert result.expired == [] and [f.maker_order_id for f in result.fills] == [1]
    assert ids(book) == [2, 3]


# -- try_fill verdicts -----------------------------------------------------------------------


def test_try_fill_sees_the_maker_unchanged_and_the_proposed_size() -> None:
    book = book_with(order(1, SELL, 100, 8))
    seen: list[tuple[int, int, int, int]] = []

    def try_fill(maker: RestingOrder, price: int, size: int) -> FillVerdict:
        seen.append((maker.order_id, maker.size, price, size))
        return FillVerdict.ACCEPT

    book.match(TAKER, BUY, 100, 3, try_fill)
    assert seen == [(1, 8, 100, 3)]


def test_cancel_maker_removes_that_maker_and_matching_goes_on() -> None:
    book = book_with(order(1, SELL, 100, 5, account=ALICE), order(2, SELL, 100, 5, account=BOB))

    def try_fill(maker: RestingOrder, price: int, size: int) -> FillVerdict:
        return FillVerdict.CANCEL_MAKER if maker.account == ALICE else FillVerdict.ACCEPT

    result = book.match(TAKER, BUY, 100, 5, try_fill)
    assert [o.order_id for o in result.cancelled] == [1]
    assert [f.maker_order_id for f in result.fills] == [2]
    assert len(book) == 0


def test_stop_ends_matching_and_leaves_the_maker_resting() -> None:
    book = book_with(order(1, SELL, 100, 5), order(2, SELL, 100, 5), order(3, SELL, 101, 5))
    offered: list[int] = []

    def try_fill(maker: RestingOrder, price: int, size: int) -> FillVerdict:
        offered.append(maker.order_id)
        return FillVerdict.STOP if maker.order_id == 2 else FillVerdict.ACCEPT

    result = book.match(TAKER, BUY, 101, 15, try_fill)
    assert offered == [1, 2]
    assert [f.maker_order_id for f in result.fills] == [1]
    assert result.remaining == 10
    assert ids(book) == [2, 3] and book.get(2).size == 5  # type: ignore[union-attr]


def test_a_fill_callback_sees_settlement_of_earlier_fills() -> None:
    # The callback settles on ACCEPT, so a budget it tracks stops the taker exactly when spent.
    book = book_with(order(1, SELL, 100, 2), order(2, SELL, 100, 2), order(3, SELL, 100, 2))
    budget = [450]

    def try_fill(maker: RestingOrder, price: int, size: int) -> FillVerdict:
        cost = price * size
        if cost > budget[0]:
            return FillVerdict.STOP
        budget[0] -= cost
        return FillVerdict.ACCEPT

    result = book.match(TAKER, BUY, 100, 6, try_fill)
    assert result.filled == 4 and budget[0] == 50


# -- reading --------------------------------------------------------------------------------


def test_would_cross_for_both_sides() -> None:
    book = book_with(order(1, BUY, 99, 1), order(2, SELL, 101, 1))
    assert book.would_cross(BUY, 101) and book.would_cross(BUY, 150)
    assert not book.would_cross(BUY, 100)
    assert book.would_cross(SELL, 99) and not book.would_cross(SELL, 100)
    empty = OrderBook(1)
    assert not empty.would_cross(BUY, 10**9) and not empty.would_cross(SELL, 0)
    with pytest.raises(InvalidSide):
        book.would_cross(2, 100)


def test_depth_aggregates_levels_best_first() -> None:
    book = book_with(
        order(1, BUY, 99, 1),
        order(2, BUY, 99, 2),
        order(3, BUY, 97, 4),
        order(4, BUY, 98, 8),
        order(5, SELL, 101, 3),
        order(6, SELL, 103, 5),
        order(7, SELL, 101, 7),
    )
    assert book.depth(2) == ([(99, 3), (98, 8)], [(101, 10), (103, 5)])
    assert book.depth(10) == ([(99, 3), (98, 8), (97, 4)], [(101, 10), (103, 5)])
    assert book.depth(0) == ([], [])
    assert book.best_bid() == 99 and book.best_ask() == 101


def test_orders_iterate_bids_best_first_then_asks_best_first() -> None:
    book = book_with(
        order(1, SELL, 103, 1),
        order(2, BUY, 98, 1),
        order(3, SELL, 101, 1),
        order(4, BUY, 99, 1),
        order(5, BUY, 99, 1),
    )
    assert ids(book) == [4, 5, 2, 3, 1]
    assert [o.order_id for o in book.orders_of(ALICE)] == [4, 5, 2, 3, 1]
    assert [o.order_id for o in book.orders_at(BUY, 99)] == [4, 5]


def test_remove_of_unknown_id_returns_none_and_changes_nothing() -> None:
    book = book_with(order(1, BUY, 99, 1))
    assert book.remove(42) is None
    assert ids(book) == [1]


def test_remove_of_last_order_deletes_its_level() -> None:
    book = book_with(order(1, BUY, 99, 1), order(2, BUY, 98, 1), order(3, BUY, 97, 1))
    removed = book.remove(2)
    assert removed is not None and removed.order_id == 2
    assert book.depth(5)[0] == [(99, 1), (97, 1)]
    book.remove(1)
    assert book.best_bid() == 97
    book.remove(3)
    assert book.best_bid() is None and len(book) == 0


def test_add_rejects_duplicate_ids_bad_sizes_and_sides() -> None:
    book = book_with(order(1, BUY, 99, 1))
    with pytest.raises(DuplicateOrderId):
        book.add(order(1, SELL, 120, 1))
    with pytest.raises(InvalidOrderSize):
        book.add(order(2, SELL, 120, 0))
    with pytest.raises(InvalidSide):
        book.add(order(3, 5, 120, 1))
    with pytest.raises(InvalidSide):
        book.match(TAKER, 3, 100, 1, accept_all)
    assert ids(book) == [1] and book.best_ask() is None


# -- transactions ---------------------------------------------------------------------------


def snapshot(book: OrderBook) -> list[tuple[int, int, int, int]]:
    return [(o.order_id, o.side, o.price, o.size) for o in book.orders()]


def test_rollback_restores_orders_sizes_levels_and_time_priority() -> None:
    book = book_with(
        order(1, SELL, 100, 5),
        order(2, SELL, 100, 5),
        order(3, SELL, 101, 5),
        order(4, BUY, 99, 5),
    )
    before = snapshot(book)
    book.begin_transaction()
    book.match(TAKER, BUY, 101, 12, accept_all)  # removes 1, 2 and part of 3
    book.reduce(4, 1)
    book.add(order(5, BUY, 99, 3))
    book.remove(4)
    book.rollback_transaction()
    assert snapshot(book) == before
    assert book.depth(5) == ([(99, 5)], [(100, 10), (101, 5)])
    # Priority inside the restored level is the original one.
    result = book.match(TAKER, BUY, 100, 6, accept_all)
    assert [f.maker_order_id for f in result.fills] == [1, 2]


def test_commit_keeps_changes_and_nested_rollback_undoes_only_the_inner_part() -> None:
    book = book_with(order(1, SELL, 100, 5))
    book.begin_transaction()
    book.add(order(2, SELL, 100, 5))
    book.begin_transaction()
    book.remove(1)
    book.rollback_transaction()
    assert ids(book) == [1, 2]
    book.begin_transaction()
    book.reduce(2, 1)
    book.commit_transaction()
    assert book.in_transaction
    book.rollback_transaction()  # the outer one undoes the committed inner change too
    assert snapshot(book) == [(1, SELL, 100, 5)]
    assert not book.in_transaction


def test_commit_or_rollback_without_begin_raises() -> None:
    book = OrderBook(1)
    with pytest.raises(NoOpenTransaction):
        book.commit_transaction()
    with pytest.raises(NoOpenTransaction):
        book.rollback_transaction()


def test_changes_outside_a_transaction_are_not_journaled() -> None:
    book = book_with(order(1, SELL, 100, 5))
    book.begin_transaction()
    book.commit_transaction()
    book.remove(1)
    book.begin_transaction()
    book.rollback_transaction()
    assert len(book) == 0


def test_rollback_restores_an_order_object_reused_for_its_replacement() -> None:
    book = book_with(order(1, SELL, 100, 5), order(2, SELL, 100, 5), order(3, SELL, 101, 5))
    before = snapshot(book)
    book.begin_transaction()
    reused = book.remove(1)
    assert reused is not None
    reused.price, reused.size, reused.seq = 105, 9, 77
    book.add(reused)
    book.rollback_transaction()
    assert snapshot(book) == before
    restored = book.get(1)
    assert restored is not None and (restored.price, restored.size, restored.seq) == (100, 5, 1)
    assert book.level_size(SELL, 105) == 0 and book.depth(5)[1] == [(100, 10), (101, 5)]


# -- move (cancel-replace) ------------------------------------------------------------------


def test_move_re_rests_the_order_at_the_back_of_its_new_level() -> None:
    book = book_with(order(1, BUY, 99, 5), order(2, BUY, 98, 5), order(3, BUY, 98, 5))
    moved = book.move(1, 98, 7, seq=50)
    assert (moved.price, moved.size, moved.seq) == (98, 7, 50)
    assert ids(book) == [2, 3, 1]
    assert book.depth(5)[0] == [(98, 17)] and book.best_bid() == 98


def test_move_at_the_same_price_loses_time_priority() -> None:
    book = book_with(order(1, SELL, 100, 5), order(2, SELL, 100, 5))
    book.move(1, 100, 6, seq=9)
    assert ids(book) == [2, 1]


def test_move_rejects_unknown_ids_and_bad_sizes_without_change() -> None:
    book = book_with(order(1, SELL, 100, 5))
    with pytest.raises(UnknownOrderId):
        book.move(2, 100, 5, seq=3)
    with pytest.raises(InvalidOrderSize):
        book.move(1, 101, 0, seq=3)
    assert snapshot(book) == [(1, SELL, 100, 5)]


def test_rollback_undoes_a_move() -> None:
    book = book_with(order(1, SELL, 100, 5), order(2, SELL, 100, 5), order(3, SELL, 102, 1))
    before = snapshot(book)
    book.begin_transaction()
    book.move(1, 102, 3, seq=10)
    book.move(3, 103, 1, seq=11)
    book.rollback_transaction()
    assert snapshot(book) == before
    assert book.get(1).seq == 1  # type: ignore[union-attr]


class _Refused(Exception):
    pass


def test_an_exception_from_try_fill_leaves_the_book_consistent_and_rollback_restores_it() -> None:
    book = book_with(
        order(1, SELL, 100, 5, account=BOB),
        order(2, SELL, 100, 5, account=TAKER),
        order(3, SELL, 101, 5, account=CAROL),
        order(4, SELL, 102, 5, account=BOB),
    )
    before = snapshot(book)

    def try_fill(maker: RestingOrder, price: int, size: int) -> FillVerdict:
        if maker.order_id == 3:
            raise _Refused()
        return FillVerdict.ACCEPT

    book.begin_transaction()
    with pytest.raises(_Refused):
        book.match(TAKER, BUY, 102, 20, try_fill)
    # Consistent at the point of the exception: 1 filled, 2 expired, 3 untouched.
    assert snapshot(book) == [(3, SELL, 101, 5), (4, SELL, 102, 5)]
    assert book.depth(5) == ([], [(101, 5), (102, 5)])
    book.rollback_transaction()
    assert snapshot(book) == before
    assert [o.order_id for o in book.orders_at(SELL, 100)] == [1, 2]


def test_from_orders_rebuilds_levels_in_seq_order_whatever_the_input_order() -> None:
    orders = [
        order(3, SELL, 100, 1, seq=30),
        order(1, SELL, 100, 2, seq=10),
        order(2, BUY, 99, 3, seq=20),
        order(4, SELL, 100, 4, seq=10),  # same seq as order 1: the lower id first
    ]
    book = OrderBook.from_orders(9, orders)
    assert book.market_id == 9
    assert ids(book) == [2, 1, 4, 3]
    assert book.depth(5) == ([(99, 3)], [(100, 7)])
    with pytest.raises(DuplicateOrderId):
        OrderBook.from_orders(9, [order(1, SELL, 100, 1), order(1, BUY, 90, 1)])


# -- copies -----------------------------------------------------------------------------------


def test_a_pickled_or_deep_copied_book_is_the_same_book_and_independent() -> None:
    import copy
    import pickle

    # One long level: copying must not recurse along the links.
    book = book_with(*(order(i, SELL, 100, 1 + i % 7, account=BOB) for i in range(1, 5_001)))
    book.add(order(9_000, BUY, 90, 4))
    book.reduce(1, 1)
    for copied in (pickle.loads(pickle.dumps(book)), copy.deepcopy(book)):
        assert copied.market_id == book.market_id
        assert snapshot(copied) == snapshot(book)
        assert copied.depth(3) == book.depth(3)
        copied.match(TAKER, BUY, 100, 3, accept_all)
        assert book.get(1) is not None and copied.get(1) is None
    single = pickle.loads(pickle.dumps(book.get(2)))
    assert single == book.get(2) and single is not book.get(2)
    fresh = OrderBook(2)
    fresh.add(single)  # a copied order is detached: it can rest in another book
    assert snapshot(fresh) == [(2, SELL, 100, 3)]


def test_copying_a_book_inside_a_transaction_is_refused() -> None:
    import copy

    book = book_with(order(1, SELL, 100, 5))
    book.begin_transaction()
    with pytest.raises(BookError):
        copy.deepcopy(book)
    book.rollback_transaction()
    assert snapshot(copy.deepcopy(book)) == [(1, SELL, 100, 5)]
