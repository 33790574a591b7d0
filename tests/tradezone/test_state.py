"""State, accounts and the state root: deposits, withdrawals, transfers, agents, nonces,
snapshots, and the root against a from-scratch py-trie rebuild."""

from __future__ import annotations

import msgspec
import pytest
from trie import HexaryTrie

from node.tradezone import state as state_module
from node.tradezone.blocks import header_hash
from node.tradezone.errors import L1MessageOutOfOrder
from node.tradezone.genesis import build_genesis_state, genesis_header, load_genesis_spec
from node.tradezone.state import (
    TAG_BALANCE,
    State,
    all_leaves,
    balance_key,
    begin_transaction,
    compute_state_root,
    rlp_list,
    rollback_transaction,
    set_balance,
    unzigzag,
    zigzag,
)
from node.tradezone.state_transition import seal_block
from node.tradezone.transactions import (
    ApproveAgent,
    DepositMessage,
    PlaceOrder,
    RevokeAgent,
    StakeMessage,
    Transfer,
    Withdraw,
)
from tests.vectors.harness import SPOT, USDT, WBTC, WCP, Harness


def rebuilt_root(h: Harness) -> bytes:
    reference = HexaryTrie({})
    for key, value in all_leaves(h.state):
        reference[key] = value
    return reference.root_hash


def test_rlp_list_matches_the_rlp_package() -> None:
    import rlp

    items = [0, 1, 127, 128, 255, 2**64, b"", b"\x01", b"\x7f", b"\x80", b"x" * 60, "WC26"]
    assert rlp_list(items) == rlp.encode([i.encode() if isinstance(i, str) else i for i in items])


def test_zigzag_round_trips_signed_integers() -> None:
    for value in (0, 1, -1, 2, -2, 10**30, -(10**30)):
        assert unzigzag(zigzag(value)) == value
        assert zigzag(value) >= 0


def test_genesis_root_equals_a_py_trie_rebuild_of_every_leaf() -> None:
    h = Harness()
    assert h.head.state_root == rebuilt_root(h)


def test_deposit_credits_once_and_advances_the_queue_cursor_and_rolling_hash() -> None:
    h = Harness()
    alice = h.addr(1)
    h.fund(1, USDT, 5_000_000)
    assert h.balance(1, USDT) == (5_000_000, 0)
    assert h.state.system.l1_next_index == 1
    assert h.state.system.l1_rolling_hash != b"\x00" * 32
    # The same message again is out of order: the block is invalid, nothing is credited twice.
    with pytest.raises(L1MessageOutOfOrder):
        seal_block(h.state, h.head, [DepositMessage(0, alice, alice, USDT, 5_000_000)], h.head.timestamp_ms + 1, 0)


def test_deposit_of_unknown_asset_is_consumed_with_a_rejected_receipt() -> None:
    h = Harness()
    receipts = h.block([h.deposit(h.addr(1), 77, 10)])
    assert not receipts[0].ok and receipts[0].reason == "invalid_action"
    assert h.state.system.l1_next_index == 1
    assert h.balance(1, 77) == (0, 0)


def test_stake_message_records_the_stake() -> None:
    h = Harness()
    staker = h.addr(4)
    h.block([StakeMessage(0, staker, 1000)])
    h.l1_index = 1
    h.block([StakeMessage(1, staker, 400)])
    assert h.state.stakes[staker] == 400 and h.state.system.stakes_total == 400


def test_withdraw_debits_free_balance_and_writes_a_sequential_record() -> None:
    h = Harness()
    h.fund(1, USDT, 1_000)
    r = h.block([h.sign(1, Withdraw(USDT, 300, h.addr(2))), h.sign(1, Withdraw(USDT, 200, h.addr(1)))])
    assert [x.withdrawal_id for x in r] == [0, 1]
    assert h.balance(1, USDT) == (500, 0)
    w = h.state.withdrawals[0]
    assert (w.account, w.recipient, w.asset_id, w.amount) == (h.addr(1), h.addr(2), USDT, 300)


def test_withdraw_more_than_free_is_rejected_and_changes_nothing_but_the_nonce() -> None:
    h = Harness()
    h.fund(1, WBTC, 100_000)
    h.block([h.sign(1, PlaceOrder(SPOT, 1, 1_000_000, 5))])  # reserves 5 lots = 50_000 sats
    before = dict(h.state.balances)
    r = h.block([h.sign(1, Withdraw(WBTC, 60_000, h.addr(1)))])
    assert r[0].reason == "insufficient_balance"
    assert h.state.balances == before and not h.state.withdrawals
    assert h.state.nonces[h.addr(1)] == 2


def test_simulated_assets_cannot_be_withdrawn() -> None:
    h = Harness()
    h.block([h.sign(1, Transfer(h.addr(2), WCP, 1))])  # key 1 holds no WCP
    r = h.block([h.sign(5, Withdraw(WCP, 1, h.addr(5)))])
    assert r[0].reason in ("invalid_action", "insufficient_balance")


def test_transfer_moves_free_balance() -> None:
    h = Harness()
    h.fund(1, USDT, 1_000)
    r = h.block([h.sign(1, Transfer(h.addr(2), USDT, 400))])
    assert r[0].ok
    assert h.balance(1, USDT) == (600, 0) and h.balance(2, USDT) == (400, 0)
    bad = h.block([h.sign(1, Transfer(h.addr(2), USDT, 601)), h.sign(1, Transfer(h.addr(1), USDT, 1))])
    assert [x.reason for x in bad] == ["insufficient_balance", "invalid_action"]


def test_agent_may_trade_but_never_withdraw_or_transfer_and_revocation_ends_it() -> None:
    h = Harness()
    h.fund(1, WBTC, 100_000)
    account = h.addr(1)
    h.block([h.sign(1, ApproveAgent(h.addr(3), 0))])
    r = h.block([
        h.sign(3, PlaceOrder(SPOT, 1, 1_000_000, 1), account),
        h.sign(3, Withdraw(WBTC, 1, h.addr(3)), account),
        h.sign(3, Transfer(h.addr(3), WBTC, 1), account),
    ])
    assert r[0].ok
    assert r[1].reason == "unauthorized_signer" and r[2].reason == "unauthorized_signer"
    # the agent's nonces are consumed in block order even though its actions were refused
    assert h.state.nonces[h.addr(3)] == 3
    h.block([h.sign(1, RevokeAgent(h.addr(3)))])
    r = h.block([h.sign(3, PlaceOrder(SPOT, 1, 1_000_000, 1), account)])
    assert r[0].reason == "unauthorized_signer"


def test_expired_agent_is_refused() -> None:
    h = Harness()
    h.fund(1, WBTC, 100_000)
    h.block([h.sign(1, ApproveAgent(h.addr(3), h.head.timestamp_ms + 150))])
    h.block([])
    r = h.block([h.sign(3, PlaceOrder(SPOT, 1, 1_000_000, 1), h.addr(1))])
    assert r[0].reason == "agent_expired"


def test_replayed_and_future_nonces_are_rejected() -> None:
    h = Harness()
    h.fund(1, USDT, 1_000)
    tx = h.sign(1, Transfer(h.addr(2), USDT, 1))
    assert h.block([tx])[0].ok
    assert h.block([tx])[0].reason == "nonce_mismatch"
    future = h.signer(1).sign(Transfer(h.addr(2), USDT, 1), 5)
    assert h.block([future])[0].reason == "nonce_mismatch"
    assert h.balance(2, USDT) == (1, 0)


def test_rollback_restores_tables_and_leaves_the_root_unchanged() -> None:
    h = Harness()
    h.fund(1, USDT, 1_000)
    root = h.head.state_root
    balances = dict(h.state.balances)
    begin_transaction(h.state)
    set_balance(h.state, h.addr(1), USDT, 5, 0)
    set_balance(h.state, h.addr(9), USDT, 7, 0)
    rollback_transaction(h.state)
    assert h.state.balances == balances
    assert compute_state_root(h.state) == root


def test_state_root_tracks_every_block_and_equals_a_rebuild() -> None:
    h = Harness()
    h.fund(1, USDT, 1_000)
    h.block([h.sign(1, Transfer(h.addr(2), USDT, 10)), h.sign(1, Withdraw(USDT, 5, h.addr(1)))])
    assert h.head.state_root == rebuilt_root(h)
    assert h.head.parent_hash == header_hash(h.blocks[-2].header)


def test_balance_leaf_key_and_value_follow_the_interface() -> None:
    from eth_hash.auto import keccak

    h = Harness()
    h.fund(1, USDT, 1_000)
    key = balance_key(h.addr(1), USDT)
    assert key == keccak(b"\x01" + h.addr(1) + (1).to_bytes(4, "big"))
    import rlp

    assert h.state.trie.get(key) == rlp.encode([1_000, 0])


def test_devnet_genesis_lists_the_required_assets_venues_and_markets() -> None:
    from node.tradezone.genesis import load_devnet
    from node.tradezone.state import MARKET_OUTCOME, MARKET_PERP, MARKET_SPOT

    state, header = load_devnet()
    assert {a: state.assets[a].symbol for a in (0, 1, 2, 1000)} == {0: "OKB", 1: "USDT", 2: "WBTC", 1000: "WCP"}
    assert not state.assets[1000].l1_backed
    kinds = {m.symbol: m.kind for m in state.markets.values()}
    assert kinds["BTC/USDT"] == MARKET_SPOT and kinds["BTC-PERP"] == kinds["ETH-PERP"] == MARKET_PERP
    outcome = [m for m in state.markets.values() if m.kind == MARKET_OUTCOME]
    assert len(outcome) >= 3 and all(state.venues[m.venue_id].simulated for m in outcome)
    oracle = bytes.fromhex("23618e81e3f5cdf7f54c3d65f7fbc0abf5b21e8f")
    assert all(m.resolver == oracle for m in outcome)
    assert all(m.oracle == oracle for m in state.markets.values() if m.kind == MARKET_PERP)
    assert header.number == 0 and header.state_root == state.trie.root


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s["assets"].append(dict(s["assets"][0])),
        lambda s: s["markets"][0].update(maker_fee_ppm=-600),
        lambda s: s["markets"][3].update(tick_size=7),
        lambda s: s["markets"][1].update(max_leverage=500),
        lambda s: s["markets"][0].update(venue_id=9),
        lambda s: s["balances"].append({"account": "0x" + "11" * 20, "asset_id": 5, "amount": 1}),
        lambda s: s["markets"][0].pop("lot_size"),
    ],
    ids=["duplicate-asset", "rebate-above-taker-fee", "outcome-tick", "leverage-cap", "unknown-venue",
         "unknown-asset-balance", "missing-field"],
)
def test_bad_genesis_is_refused_with_a_named_error(mutate) -> None:  # type: ignore[no-untyped-def]
    import copy

    from node.tradezone.genesis import GenesisError, build_genesis_state, load_genesis_spec

    spec = copy.deepcopy(load_genesis_spec())
    mutate(spec)
    with pytest.raises(GenesisError):
        build_genesis_state(spec)


def test_forced_withdrawal_cancels_orders_holding_the_asset_and_withdraws_all_free_balance() -> None:
    from node.tradezone.receipts import REMOVED_FORCED

    h = Harness()
    h.fund(1, USDT, 1_000_000_000)
    h.block([h.sign(1, PlaceOrder(SPOT, 0, 1_000_000, 3))])  # a bid reserving USDT
    r = h.block([h.forced_withdrawal(h.addr(1), USDT)])
    assert r[0].ok and r[0].removed[0].why == REMOVED_FORCED
    w = h.state.withdrawals[r[0].withdrawal_id]
    assert (w.account, w.recipient, w.asset_id, w.amount) == (h.addr(1), h.addr(1), USDT, 1_000_000_000)
    assert h.balance(1, USDT) == (0, 0) and len(h.state.books[SPOT]) == 0
    # nothing left: the message is consumed with a rejected receipt
    r = h.block([h.forced_withdrawal(h.addr(1), USDT)])
    assert r[0].reason == "invalid_action" and h.state.system.l1_next_index == h.l1_index


def test_forced_withdrawal_cancels_only_the_orders_that_hold_or_are_margined_in_its_asset() -> None:
    from node.tradezone.receipts import REMOVED_FORCED

    h = Harness()
    h.block([h.deposit(h.addr(1), USDT, 10**9), h.deposit(h.addr(1), WBTC, 10**8)])
    placed = h.block([
        h.sign(1, PlaceOrder(SPOT, 0, 990_000, 3)),  # bid: reserves USDT
        h.sign(1, PlaceOrder(SPOT, 1, 1_010_000, 3)),  # ask: reserves WBTC, quoted in USDT
        h.sign(1, PlaceOrder(2, 0, 990_000, 3)),  # BTC-PERP bid: margined in USDT
    ])
    bid, ask, perp = (r.orders[0].order_id for r in placed)
    wbtc_held = h.balance(1, WBTC)
    r = h.block([h.forced_withdrawal(h.addr(1), USDT)])
    assert r[0].ok
    assert sorted((x.order_id, x.why) for x in r[0].removed) == [(bid, REMOVED_FORCED), (perp, REMOVED_FORCED)]
    assert ask in h.state.orders and h.balance(1, WBTC) == wbtc_held and h.balance(1, USDT) == (0, 0)
    r = h.block([h.forced_withdrawal(h.addr(1), WBTC)])
    assert r[0].ok and [(x.order_id, x.why) for x in r[0].removed] == [(ask, REMOVED_FORCED)]
    assert h.balance(1, WBTC) == (0, 0) and not h.state.orders


def test_forced_withdrawal_leaves_the_initial_margin_of_open_positions() -> None:
    from node.tradezone.margin import margin_summary
    from node.tradezone.transactions import TIF_IOC

    h = Harness()
    h.block([h.deposit(h.addr(i), USDT, 100 * 10**6) for i in (1, 2)])
    h.block([h.sign(1, PlaceOrder(2, 1, 1_000_000, 100))])
    h.block([h.sign(2, PlaceOrder(2, 0, 1_000_000, 100, TIF_IOC))])  # 1,000 USDT long: 50 USDT IM
    r = h.block([h.forced_withdrawal(h.addr(2), USDT)])
    assert r[0].ok
    summary = margin_summary(h.state, h.addr(2), USDT)
    assert summary.equity == summary.initial == 50 * 10**6


def _reference_hot_leaves(state: State) -> dict[bytes, bytes]:
    """The balance, nonce, position and order leaves of docs/state.md, encoded with the rlp
    package and hashed with eth-hash: an independent reading of the layout."""
    import rlp
    from eth_hash.auto import keccak

    leaves: dict[bytes, bytes] = {}
    for (account, asset_id), (balance, reserved) in state.balances.items():
        leaves[keccak(b"\x01" + account + asset_id.to_bytes(4, "big"))] = rlp.encode([balance, reserved])
    for signer, nonce in state.nonces.items():
        if nonce:
            leaves[keccak(b"\x02" + signer)] = rlp.encode([nonce])
    for (account, market_id), p in state.positions.items():
        leaves[keccak(b"\x04" + account + market_id.to_bytes(4, "big"))] = rlp.encode(
            [zigzag(p.size), zigzag(p.cost), zigzag(p.funding_index), p.margin_mode, p.isolated_margin]
        )
    for order_id, meta in state.orders.items():
        o = state.books[meta.market_id].get(order_id)
        assert o is not None
        leaves[keccak(b"\x05" + order_id.to_bytes(8, "big"))] = rlp.encode(
            [meta.market_id, meta.account, o.side, o.price, o.size, o.seq, o.client_order_id,
             int(o.reduce_only), meta.outcome, meta.reserved_asset, meta.reserved]
        )
    return leaves


def test_hot_leaves_follow_the_layout_and_the_key_cache_is_exact_when_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.bench_state_transition import Generator, fund

    # A tiny cache limit makes every commit drop and refill the caches of trie keys.
    monkeypatch.setattr(state_module, "_KEY_CACHE_LIMIT", 40)
    spec = load_genesis_spec()
    state = build_genesis_state(spec)
    fund(state, 200)
    parent = msgspec.structs.replace(genesis_header(state, spec), state_root=compute_state_root(state))
    generator = Generator(state, 200, seed=5)
    for _ in range(3):
        block, receipts = seal_block(state, parent, generator.block(400), parent.timestamp_ms + 100, 0)
        assert any(r.fills for r in receipts) and state.positions and state.orders
        reference = HexaryTrie({})
        leaves = dict(all_leaves(state))
        for key, value in leaves.items():
            reference[key] = value
        assert block.header.state_root == reference.root_hash
        hot = _reference_hot_leaves(state)
        assert {key: leaves[key] for key in hot} == hot
        parent = block.header
    # A cache past the limit is dropped on its next use.
    cache = state_module._key_cache(state, TAG_BALANCE)
    cache.update({("x", i): b"" for i in range(41)})
    assert state_module._key_cache(state, TAG_BALANCE) == {}


def test_snapshots_open_book_transactions_only_on_the_books_an_action_touches() -> None:
    from node.tradezone.matching import OrderBook
    from node.tradezone.transactions import BUY, SELL, TIF_POST_ONLY, PlaceOrders

    opened: dict[int, int] = {}

    class CountingBook(OrderBook):
        def begin_transaction(self) -> None:
            opened[self.market_id] = opened.get(self.market_id, 0) + 1
            super().begin_transaction()

    h = Harness()
    h.state = build_genesis_state(h.spec, book_factory=CountingBook)
    h.head = genesis_header(h.state, h.spec)
    h.fund(1, USDT, 10**10)
    h.fund(1, WBTC, 10**8)
    opened.clear()
    # One batch: a resting bid, an order off the lot/tick rules (rejected alone), a resting ask.
    receipts = h.block([h.sign(1, PlaceOrders((
        PlaceOrder(SPOT, BUY, 900_000, 2, TIF_POST_ONLY),
        PlaceOrder(SPOT, SELL, 0, 2, TIF_POST_ONLY),
        PlaceOrder(SPOT, SELL, 1_100_000, 3, TIF_POST_ONLY),
    )))])
    assert [o.status for o in receipts[0].orders] == [0, 3, 0]
    assert set(opened) == {SPOT}  # no other market's book joined any snapshot
    assert [(o.side, o.price, o.size) for o in h.state.books[SPOT].orders()] == [
        (BUY, 900_000, 2), (SELL, 1_100_000, 3)]
    assert h.head.state_root == rebuilt_root(h)
