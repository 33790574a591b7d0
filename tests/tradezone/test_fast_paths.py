"""The shortcuts of the state transition compute exactly what the plain rules compute.

Each test pins one shortcut against the straightforward reading of its rule: roots of a busy
workload fixed before the shortcuts existed, the collector pause, the balance leaf encoder at
every RLP length boundary, the system record and book snapshots at two nesting levels, one-read
balance updates, and variation margin that skips positions already at the mark.
"""

from __future__ import annotations

import gc

import msgspec
import pytest
import rlp
from eth_hash.auto import keccak

from bench.bench_state_transition import Generator, fund
from node.tradezone import state_transition as state_transition_module
from node.tradezone.genesis import build_genesis_state, genesis_header, load_genesis_spec
from node.tradezone.matching import RestingOrder
from node.tradezone.settlement import settle_position_to_mark
from node.tradezone.state import (
    MARGIN_ISOLATED,
    TAG_BALANCE,
    TAG_POSITION,
    Position,
    State,
    add_to_balance,
    begin_transaction,
    book_add,
    commit_transaction,
    compute_state_root,
    dirty_leaves,
    new_order_id,
    rollback_transaction,
    set_balance,
    set_entry,
    zigzag,
)
from node.tradezone.state_transition import apply_block, collector_paused, seal_block

SPOT = 1
ALICE = b"\xaa" * 20

# Roots of three blocks of the benchmark's action mix (300 accounts, seed 3, 1,500 actions per
# block), computed by the state transition as it was before these shortcuts: (state root,
# receipts root, transactions root, fills, rejected transactions).
PINNED = [
    ("5d3ba3bc5df1ea8f3bfe19340249fb837ceb2277925f4b887a88b0249f87b2f6",
     "a65530c90957a826e98632455feb24a3b2bac4f5730f8f7e01718eb9649135c9",
     "20c6514a120e30143d4c344a91d509eb65914807a67de4c26dd9f9e6a09f0a69", 725, 0),
    ("a44bcb57800c1d3d92ffe217c8e90fcd7e4c5d944cf4283cfa75797764214680",
     "9546ae9aca699145a483d53b531c1c5123f3951bb31723b6e6d21649bb2f7b59",
     "cfc527d9bc245995ba5fe968ae66dc98538ad1515c9ae3763e76a7bf6f0fe449", 790, 12),
    ("14ff71a096a090f23ceb5dfb622d7eeba4b8b24e8f80f4013eb38d186f400596",
     "44db59f1ca9c5295e88472954c6d4ce7315d8af29a3a541e3b83f84a84565bb2",
     "c68cc2f0068b5acceca6f607d310a7ab98c92e03a4d2ee29daae4a2a27860a31", 742, 8),
]


def funded_state(accounts: int) -> State:
    state = build_genesis_state(load_genesis_spec())
    fund(state, accounts)
    compute_state_root(state)
    return state


def test_a_busy_workload_keeps_the_roots_it_had_before_the_shortcuts() -> None:
    state = funded_state(300)
    parent = msgspec.structs.replace(genesis_header(state, load_genesis_spec()), state_root=state.trie.root)
    generator = Generator(state, 300, seed=3)
    got = []
    for _ in PINNED:
        block, receipts = seal_block(state, parent, generator.block(1500), parent.timestamp_ms + 100, 0)
        header = block.header
        got.append((header.state_root.hex(), header.receipts_root.hex(), header.transactions_root.hex(),
                    sum(len(r.fills) for r in receipts), sum(not r.ok for r in receipts)))
        parent = header
    assert got == PINNED


@pytest.mark.parametrize("enabled", [True, False])
def test_the_collector_is_left_as_it_was_found_even_when_the_body_raises(enabled: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled() == enabled
        with pytest.raises(KeyError), collector_paused():
            raise KeyError("inside")
        assert gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_apply_block_gives_the_same_state_with_the_collector_on_or_off() -> None:
    producer = funded_state(200)
    spec = load_genesis_spec()
    parent = msgspec.structs.replace(genesis_header(producer, spec), state_root=producer.trie.root)
    block, _ = seal_block(producer, parent, Generator(producer, 200, seed=9).block(800), parent.timestamp_ms + 100, 0)
    roots = []
    was = gc.isenabled()
    try:
        for setting in (gc.enable, gc.disable):
            setting()
            follower = funded_state(200)
            apply_block(follower, block)
            assert gc.isenabled() == (setting is gc.enable)
            roots.append(compute_state_root(follower))
    finally:
        (gc.enable if was else gc.disable)()
    assert roots == [block.header.state_root] * 2


BOUNDARIES = [1, 0x7F, 0x80, 0xFF, 0x100, 10**12, 2**64, 2**255, 2**256 - 1, 2**440 - 1, 2**440, 2**448, 2**600]


@pytest.mark.parametrize("balance", BOUNDARIES)
def test_balance_leaves_encode_as_the_rlp_package_at_every_length_boundary(balance: int) -> None:
    state = build_genesis_state(load_genesis_spec())
    compute_state_root(state)
    reserves = sorted(r for r in {0, 1, 0x7F, 0x80, balance // 2, balance} if r <= balance)
    for asset_id, reserved in enumerate(reserves, start=1):
        set_balance(state, ALICE, asset_id, balance, reserved)
    leaves = dirty_leaves(state)
    for asset_id, reserved in enumerate(reserves, start=1):
        key = keccak(b"\x01" + ALICE + asset_id.to_bytes(4, "big"))
        assert leaves[key] == rlp.encode([balance, reserved])


SIGNED = [0, 1, -1, 63, -64, 64, -65, 0x7F, -0x80, 10**12, -(10**12), 2**255, -(2**255), 2**441]


@pytest.mark.parametrize("value", SIGNED)
def test_position_leaves_encode_as_the_rlp_package_for_signed_values(value: int) -> None:
    state = build_genesis_state(load_genesis_spec())
    compute_state_root(state)
    positions = {
        1: Position(value, 7, 0),
        2: Position(3, value, 0),
        3: Position(-3, -value, value),
        4: Position(value, value, -value, MARGIN_ISOLATED, abs(value)),
    }
    for market_id, position in positions.items():
        set_entry(state, TAG_POSITION, state.positions, (ALICE, market_id), position)
    leaves = dirty_leaves(state)
    for market_id, p in positions.items():
        key = keccak(b"\x04" + ALICE + market_id.to_bytes(4, "big"))
        assert leaves[key] == rlp.encode(
            [zigzag(p.size), zigzag(p.cost), zigzag(p.funding_index), p.margin_mode, p.isolated_margin]
        )


def test_the_system_record_rolls_back_level_by_level() -> None:
    state = build_genesis_state(load_genesis_spec())
    start = state.system
    begin_transaction(state)
    assert new_order_id(state)[0] == start.next_order_id
    after_outer = state.system
    begin_transaction(state)
    new_order_id(state)
    new_order_id(state)
    assert state.system.next_order_id == start.next_order_id + 3
    rollback_transaction(state)
    assert state.system == after_outer
    begin_transaction(state)
    new_order_id(state)
    commit_transaction(state)
    assert state.system.next_order_id == start.next_order_id + 2
    rollback_transaction(state)
    assert state.system == start and not state.journal


def resting(order_id: int, price: int) -> RestingOrder:
    return RestingOrder(order_id, ALICE, 0, price, 1, seq=order_id)


def test_a_book_joins_every_open_snapshot_whichever_level_changes_it_first() -> None:
    state = build_genesis_state(load_genesis_spec())
    book = state.books[SPOT]
    # Changed first in the inner snapshot: rolling back the outer one still undoes it.
    begin_transaction(state)
    begin_transaction(state)
    book_add(state, SPOT, resting(101, 900))
    commit_transaction(state)
    assert 101 in book
    rollback_transaction(state)
    assert 101 not in book and not book.in_transaction
    # Changed first in the outer snapshot, then in an inner one that rolls back alone.
    begin_transaction(state)
    book_add(state, SPOT, resting(102, 900))
    begin_transaction(state)
    book_add(state, SPOT, resting(103, 901))
    book_add(state, SPOT, resting(104, 902))
    rollback_transaction(state)
    assert 102 in book and 103 not in book and 104 not in book
    commit_transaction(state)
    assert [o.order_id for o in book.orders()] == [102] and not book.in_transaction


def test_add_to_balance_is_set_balance_of_the_sums_and_refuses_the_same_way() -> None:
    state = build_genesis_state(load_genesis_spec())
    begin_transaction(state)
    add_to_balance(state, ALICE, 1, 500, 200)
    assert state.balances[(ALICE, 1)] == (500, 200) and ALICE in state.holders[1]
    add_to_balance(state, ALICE, 1, -100, -50)
    assert state.balances[(ALICE, 1)] == (400, 150)
    with pytest.raises(ValueError):
        add_to_balance(state, ALICE, 1, -300, 0)  # reserved would exceed the balance
    assert state.balances[(ALICE, 1)] == (400, 150)
    add_to_balance(state, ALICE, 1, -400, -150)
    assert (ALICE, 1) not in state.balances and (ALICE, 1) in state.dirty[TAG_BALANCE]
    bob = b"\xbb" * 20
    with pytest.raises(ValueError):
        add_to_balance(state, bob, 1, -5)  # no leaf yet: nothing to take from
    assert (bob, 1) not in state.balances and bob not in state.holders.get(1, {})
    assert (bob, 1) not in state.dirty[TAG_BALANCE]
    rollback_transaction(state)
    assert (ALICE, 1) not in state.balances and ALICE not in state.holders.get(1, {})


def settle_every_touched_position(state: State) -> None:
    """Variation margin read plainly: every touched position of a flagged market is settled,
    whether or not it already stands at the mark."""
    flagged = {m.market_id: m.quote_asset for m in state.markets.values() if m.settle_variation_margin}
    touched: dict[int, set[bytes]] = {}
    for account, market_id in state.dirty[TAG_POSITION]:
        touched.setdefault(market_id, set()).add(account)
    for market_id in state.marked:
        touched.setdefault(market_id, set()).update(state.position_holders.get(market_id, {}))
    state.marked.clear()
    for account, asset in state.dirty[TAG_BALANCE]:
        for market_id in state.perp_markets_of.get(account, ()):
            if flagged.get(market_id) == asset:
                touched.setdefault(market_id, set()).add(account)
    for market_id in sorted(touched):
        market = state.markets[market_id]
        if market.settle_variation_margin:
            for account in sorted(touched[market_id]):
                settle_position_to_mark(state, market, account)


def test_variation_margin_that_skips_positions_at_the_mark_settles_as_settling_them_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = funded_state(150)
    spec = load_genesis_spec()
    parent = msgspec.structs.replace(genesis_header(producer, spec), state_root=producer.trie.root)
    generator = Generator(producer, 150, seed=4)
    blocks = []
    for _ in range(3):
        block, _ = seal_block(producer, parent, generator.block(600), parent.timestamp_ms + 100, 0)
        blocks.append(block)
        parent = block.header
    assert producer.positions
    monkeypatch.setattr(state_transition_module, "settle_variation_margin", settle_every_touched_position)
    plain = funded_state(150)
    for block in blocks:
        apply_block(plain, block)
        assert compute_state_root(plain) == block.header.state_root
    assert plain.positions == producer.positions and plain.balances == producer.balances


@pytest.mark.parametrize("switch", ["1", "0"])
def test_the_hot_path_keccak_is_ethereums_keccak_on_either_backend(
    switch: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from node.tradezone import hashing

    monkeypatch.setenv("EXOS_PROOFS_NATIVE", switch)
    hash_, backend = hashing._load()
    if switch == "0":
        assert backend == "pysha3"
    samples = [b"", b"\x00", b"\x01" * 65, bytes(range(256)) * 3] + [b"\xab" * n for n in (31, 32, 33, 135, 136, 137)]
    for data in samples:
        assert hash_(data) == keccak(data)
