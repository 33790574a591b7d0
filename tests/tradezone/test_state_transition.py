"""state_transition: header validation, roots checked with got/expected, maker-first order,
and determinism (the same blocks replayed from bytes into fresh states give the same roots)."""

from __future__ import annotations

import msgspec
import pytest

from node.tradezone.blocks import Block, decode_block, encode_block
from node.tradezone.errors import ParentHashMismatch, RootMismatch
from node.tradezone.genesis import build_genesis_state, genesis_header
from node.tradezone.state_transition import (
    GROUP_CANCEL,
    GROUP_NON_TAKING,
    GROUP_TAKING,
    maker_first_order,
    state_transition,
    transaction_group,
)
from node.tradezone.transactions import (
    BUY,
    SELL,
    TIF_IOC,
    TIF_POST_ONLY,
    CancelAll,
    ModifyOrder,
    OracleUpdate,
    PlaceOrder,
    Transfer,
    Withdraw,
)
from tests.vectors.harness import BTC_PERP, OUTCOME, SPOT, USDT, WBTC, Harness


def busy_chain() -> Harness:
    h = Harness()
    h.block([h.deposit(h.addr(i), USDT, 10**12) for i in (1, 2, 3)] + [h.deposit(h.addr(2), WBTC, 10**8)])
    h.block([
        h.sign(2, PlaceOrder(SPOT, SELL, 1_000_000, 10)),
        h.sign(1, PlaceOrder(SPOT, BUY, 1_000_000, 4, TIF_IOC)),
        h.sign(1, PlaceOrder(BTC_PERP, BUY, 1_000_000, 50)),
        h.sign(3, PlaceOrder(BTC_PERP, SELL, 999_000, 20, TIF_IOC)),
        h.sign(8, OracleUpdate(BTC_PERP, 1_010_000, h.head.timestamp_ms)),
    ])
    h.block([
        h.sign(3, Transfer(h.addr(4), USDT, 5)),
        h.sign(2, ModifyOrder(SPOT, 1, 1_000_000, 3)),
        h.sign(1, CancelAll(BTC_PERP)),
        h.sign(3, Withdraw(USDT, 7, h.addr(3))),
        h.sign(1, PlaceOrder(OUTCOME, BUY, 50, 1)),
    ])
    return h


def test_replaying_blocks_from_bytes_into_fresh_states_gives_the_same_roots() -> None:
    h = busy_chain()
    for _ in range(2):
        state = build_genesis_state(h.spec)
        parent = genesis_header(state, h.spec)
        for block in h.blocks:
            decoded = decode_block(encode_block(block))  # signers recovered again, not cached
            state_transition(state, parent, decoded)
            assert state.trie.root == block.header.state_root
            parent = decoded.header
        assert state.balances == h.state.balances
        assert state.positions == h.state.positions


def test_a_wrong_state_root_is_reported_with_got_and_expected() -> None:
    h = busy_chain()
    state = build_genesis_state(h.spec)
    parent = genesis_header(state, h.spec)
    block = h.blocks[0]
    forged = Block(msgspec.structs.replace(block.header, state_root=b"\x11" * 32), block.transactions)
    with pytest.raises(RootMismatch) as info:
        state_transition(state, parent, forged)
    assert info.value.which == "state"
    assert info.value.got == block.header.state_root and info.value.expected == b"\x11" * 32


def test_a_block_on_the_wrong_parent_is_rejected_before_anything_is_applied() -> None:
    h = busy_chain()
    state = build_genesis_state(h.spec)
    parent = genesis_header(state, h.spec)
    root = state.trie.root
    block = h.blocks[0]
    orphan = Block(msgspec.structs.replace(block.header, parent_hash=b"\x33" * 32), block.transactions)
    with pytest.raises(ParentHashMismatch):
        state_transition(state, parent, orphan)
    assert state.trie.root == root and state.system.l1_next_index == 0


def test_receipts_root_is_checked() -> None:
    h = busy_chain()
    state = build_genesis_state(h.spec)
    parent = genesis_header(state, h.spec)
    block = h.blocks[0]
    forged = Block(msgspec.structs.replace(block.header, receipts_root=b"\x22" * 32), block.transactions)
    with pytest.raises(RootMismatch) as info:
        state_transition(state, parent, forged)
    assert info.value.which == "receipts"


def test_maker_first_groups_and_stable_order() -> None:
    h = Harness()
    txs = [
        h.sign(1, PlaceOrder(SPOT, BUY, 1, 1, TIF_IOC)),
        h.sign(1, CancelAll(SPOT)),
        h.sign(1, PlaceOrder(SPOT, BUY, 1, 1, TIF_POST_ONLY)),
        h.deposit(h.addr(1), USDT, 1),
        h.sign(1, ModifyOrder(SPOT, 1, 1, 1)),
        h.sign(1, Transfer(h.addr(2), USDT, 1)),
    ]
    assert [transaction_group(t) for t in txs] == [
        GROUP_TAKING, GROUP_CANCEL, GROUP_NON_TAKING, GROUP_NON_TAKING, GROUP_TAKING, GROUP_NON_TAKING
    ]
    assert maker_first_order(txs) == [2, 3, 5, 1, 0, 4]


def test_nonces_follow_block_order_even_when_application_order_differs() -> None:
    h = Harness()
    h.fund(1, USDT, 10**9)
    h.fund(2, WBTC, 10**8)
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, 1_000_000, 1))])
    # nonce 0 takes liquidity, nonce 1 is a post-only applied before it: both are valid
    r = h.block([h.sign(1, PlaceOrder(SPOT, BUY, 1_000_000, 1, TIF_IOC)),
                 h.sign(1, PlaceOrder(SPOT, BUY, 900_000, 1, TIF_POST_ONLY))])
    assert r[0].ok and r[0].fills and r[1].ok


def test_root_after_trading_equals_a_py_trie_rebuild_of_every_leaf() -> None:
    from trie import HexaryTrie

    from node.tradezone.state import all_leaves

    h = busy_chain()
    # orders created and filled or cancelled within one block never reach the trie
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, 1_000_000, 1, TIF_POST_ONLY)),
             h.sign(1, PlaceOrder(SPOT, BUY, 1_000_000, 1, TIF_IOC))])
    reference = HexaryTrie({})
    for key, value in all_leaves(h.state):
        reference[key] = value
    assert reference.root_hash == h.head.state_root
