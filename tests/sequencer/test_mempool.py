"""The mempool's block bounds and the sequencer's collector policy."""

from __future__ import annotations

import gc
import weakref

from node.sequencer.mempool import Mempool, action_count
from node.sequencer.sequencer import CollectorPolicy
from node.tradezone.signing import Signer
from node.tradezone.transactions import (
    TIF_POST_ONLY,
    CancelOrder,
    PlaceOrder,
    PlaceOrders,
    SignedTx,
    encode_transaction,
    tx_hash,
)

SIGNER = Signer((7).to_bytes(32, "big"))


def order(price: int) -> PlaceOrder:
    return PlaceOrder(100, 0, price, 1, TIF_POST_ONLY, False, 0)


def fill(pool: Mempool, sizes: list[int]) -> list[SignedTx]:
    txs = []
    for nonce, size in enumerate(sizes):
        action = PlaceOrders(tuple(order(i + 1) for i in range(size))) if size > 1 else order(1)
        tx = SIGNER.sign(action, nonce)
        pool.add(tx_hash(tx), tx, SIGNER.address)
        txs.append(tx)
    return txs


def test_an_order_batch_counts_one_action_per_order() -> None:
    assert action_count(SIGNER.sign(PlaceOrders(tuple(order(p) for p in (1, 2, 3))), 0)) == 3
    assert action_count(SIGNER.sign(order(1), 0)) == 1
    assert action_count(SIGNER.sign(CancelOrder(100, 5), 0)) == 1


def test_take_stops_before_the_action_budget_in_arrival_order() -> None:
    pool = Mempool()
    txs = fill(pool, [16, 16, 16, 1, 16])
    taken = pool.take(100, max_actions=40)
    assert [tx for _hash, tx in taken] == txs[:2]  # a third batch of 16 would make 48 > 40
    rest = pool.take(100, max_actions=17)
    assert [tx for _hash, tx in rest] == txs[2:4]  # 16 + 1 = 17 fits exactly
    assert len(pool) == 1


def test_take_always_makes_progress_with_a_batch_larger_than_the_budget() -> None:
    pool = Mempool()
    txs = fill(pool, [32, 1])
    assert [tx for _hash, tx in pool.take(100, max_actions=10)] == txs[:1]
    assert [tx for _hash, tx in pool.take(100, max_actions=10)] == txs[1:]
    assert pool.take(100, max_actions=10) == []


def test_take_stops_before_the_byte_budget_and_can_leave_a_block_to_the_l1_messages() -> None:
    pool = Mempool()
    txs = fill(pool, [1, 1, 16, 1])
    sizes = [len(encode_transaction(tx)) for tx in txs]
    taken = pool.take(100, max_bytes=sizes[0] + sizes[1] + sizes[2] - 1)
    assert [tx for _hash, tx in taken] == txs[:2]  # the batch does not fit in what is left
    # a budget smaller than the next transaction: nothing, when the block already holds messages
    assert pool.take(100, max_bytes=sizes[2] - 1, at_least_one=False) == []
    assert [tx for _hash, tx in pool.take(100, max_bytes=1)] == txs[2:3]  # else one, whatever its size
    assert [tx for _hash, tx in pool.take(100, max_bytes=10**6)] == txs[3:]


def test_take_without_an_action_budget_counts_transactions_only() -> None:
    pool = Mempool()
    fill(pool, [16, 16, 16])
    assert len(pool.take(2)) == 2
    # The signer's pending nonce still follows what is left.
    assert pool.next_nonce(SIGNER.address, 0) == 3


def test_collector_policy_freezes_survivors_and_unfreezes_on_stop() -> None:
    policy = CollectorPolicy(full_every=3)
    try:
        policy.start()
        assert gc.get_freeze_count() > 0
        kept = [[object()] for _ in range(1000)]  # new tracked containers that survive the block
        before = gc.get_freeze_count()
        policy.after_block(1)
        assert gc.get_freeze_count() >= before + len(kept)
        policy.after_block(3)  # the full pass: everything is collected, then frozen again
        assert policy.last_full_ms > 0
        assert gc.get_freeze_count() >= len(kept)
    finally:
        policy.stop()
    assert gc.get_freeze_count() == 0


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_collector_policy_full_pass_reclaims_cycles_that_were_frozen() -> None:
    policy = CollectorPolicy(full_every=2)
    try:
        policy.start()
        a, b = Node(), Node()
        a.other, b.other = b, a
        alive = weakref.ref(a)
        policy.after_block(1)  # the cycle survives this block and is frozen with it
        del a, b
        gc.collect()
        assert alive() is not None  # frozen: even a full automatic pass leaves it
        policy.after_block(2)  # the scheduled full pass unfreezes and reclaims it
        assert alive() is None
    finally:
        policy.stop()
