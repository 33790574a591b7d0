"""Property tests over random order streams in every market kind (cancels, modifies,
self-trades, outcome mints and merges, oracle moves, transfers, withdrawals):

(plus forced withdrawals from the L1 queue and outcome resolutions)

* conservation of every asset: balances (+ withdrawn) == initial + deposits, where for the perp
  collateral the open positions' cost bases are subtracted (sum of sizes is zero, so that is the
  mark-independent form of "balances + unrealized PnL"); fees sit in the venue fee accounts and
  outcome collateral in the market pools, both ordinary balances;
* reserved amounts equal what the open orders hold; every order's leaf, book entry and indexes
  agree; YES supply == NO supply == pool collateral for every outcome market;
* no accepted perp fill leaves either side below initial margin unless it only reduced that
  side's position;
* a block whose transactions were all rejected changes nothing but nonces;
* replaying the same blocks into a fresh state gives the same state root.
"""

from __future__ import annotations

import copy
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import node.tradezone.trading as trading
from node.tradezone.genesis import build_genesis_state, genesis_header, load_genesis_spec
from node.tradezone.margin import isolated_summary, margin_summary
from node.tradezone.matching import FillVerdict
from node.tradezone.outcome import pool_account
from node.tradezone.state import MARGIN_ISOLATED, MARKET_OUTCOME, MARKET_PERP, State, set_balance
from node.tradezone.state_transition import state_transition
from node.tradezone.transactions import (
    ALL_MARKETS,
    AdjustIsolatedMargin,
    CancelAll,
    CancelOrder,
    ModifyOrder,
    OracleUpdate,
    PlaceOrder,
    ResolveMarket,
    SetMarginMode,
    Transfer,
    Withdraw,
)
from node.tradezone.venues import NO_SIDE_FLAG
from tests.vectors.harness import BTC_PERP, OUTCOME, SPOT, USDT, WBTC, WCP, Harness

KEYS = (1, 2, 3, 4)
BASE = {SPOT: 1_000_000, BTC_PERP: 1_000_000, OUTCOME: 50}



def place_strategy() -> st.SearchStrategy[tuple]:
    return st.tuples(
        st.just("place"), st.sampled_from(KEYS),
        st.sampled_from([SPOT, BTC_PERP, BTC_PERP, OUTCOME, OUTCOME | NO_SIDE_FLAG]),
        st.integers(0, 1), st.integers(-4, 4), st.integers(1, 30), st.sampled_from([0, 0, 1, 2]),
        st.integers(0, 4).map(lambda x: x == 0),
    )



cancel = st.tuples(st.just("cancel"), st.sampled_from(KEYS), st.integers(1, 40))
cancel_all = st.tuples(st.just("cancel_all"), st.sampled_from(KEYS), st.sampled_from([SPOT, BTC_PERP, ALL_MARKETS]))
modify = st.tuples(st.just("modify"), st.sampled_from(KEYS), st.integers(1, 40), st.integers(-3, 3), st.integers(1, 30))
oracle = st.tuples(st.just("oracle"), st.integers(-60, 60))
transfer = st.tuples(st.just("transfer"), st.sampled_from(KEYS), st.sampled_from(KEYS), st.sampled_from([USDT, WBTC, WCP]),
                     st.integers(1, 10**8))
withdraw = st.tuples(st.just("withdraw"), st.sampled_from(KEYS), st.sampled_from([USDT, WBTC]), st.integers(1, 5 * 10**7))
forced = st.tuples(st.just("forced"), st.sampled_from(KEYS), st.sampled_from([USDT, WBTC]))
resolve = st.tuples(st.just("resolve"), st.integers(0, 1))
margin_mode = st.tuples(st.just("margin_mode"), st.sampled_from(KEYS), st.booleans())
isolated_margin = st.tuples(st.just("isolated_margin"), st.sampled_from(KEYS), st.integers(1, 300 * 10**6),
                            st.integers(0, 2).map(lambda x: x > 0))
op = st.one_of(*(place_strategy() for _ in range(8)), cancel, cancel_all, modify, modify, oracle, transfer, withdraw,
               forced, resolve, margin_mode, isolated_margin, isolated_margin)
stream = st.lists(st.lists(op, min_size=2, max_size=10), min_size=4, max_size=12)


def pick_order(h: Harness, pick: int) -> int:
    """An open order id (any account's: cancelling another's order must fail) or a stale one."""
    open_ids = sorted(h.state.orders)
    return open_ids[pick % len(open_ids)] if open_ids and pick % 5 else pick


def to_tx(h: Harness, item: tuple) -> object:
    kind = item[0]
    if kind == "place":
        _, key, market, side, offset, size, tif, reduce_only = item
        base = BASE[market & ~NO_SIDE_FLAG]
        price = base + offset * (1_000 if base > 1_000 else 5)
        if market == BTC_PERP:
            size *= 20  # up to 6,000 USDT of notional against 400 USDT of collateral: margin binds
        return h.sign(key, PlaceOrder(market, side, price, size, tif, reduce_only and market == BTC_PERP))
    if kind == "cancel":
        order_id = pick_order(h, item[2])
        market = h.state.orders[order_id].market_id if order_id in h.state.orders else SPOT
        return h.sign(item[1], CancelOrder(market, order_id))
    if kind == "cancel_all":
        return h.sign(item[1], CancelAll(item[2]))
    if kind == "modify":
        _, key, pick, offset, size = item
        order_id = pick_order(h, pick)
        meta = h.state.orders.get(order_id)
        market = meta.market_id if meta else SPOT
        price = (meta.user_price if meta else 1_000_000) + offset * (1_000 if market != OUTCOME else 5)
        if meta and meta.market_id == OUTCOME and meta.outcome == 0:
            market |= NO_SIDE_FLAG
        return h.sign(key, ModifyOrder(market, order_id, max(price, 1), size))
    if kind == "oracle":
        h.oracle_ms += 1
        return h.sign(8, OracleUpdate(BTC_PERP, BASE[BTC_PERP] + item[1] * 1_000, h.oracle_ms))
    if kind == "forced":
        return h.forced_withdrawal(h.addr(item[1]), item[2])
    if kind == "resolve":
        return h.sign(8, ResolveMarket(OUTCOME, item[1]))
    if kind == "transfer":
        return h.sign(item[1], Transfer(h.addr(item[2]), item[3], item[4]))
    if kind == "margin_mode":
        return h.sign(item[1], SetMarginMode(BTC_PERP, item[2]))
    if kind == "isolated_margin":
        return h.sign(item[1], AdjustIsolatedMargin(BTC_PERP, item[2], item[3]))
    return h.sign(item[1], Withdraw(item[2], item[3], h.addr(item[1])))


def totals(h: Harness) -> Counter[int]:
    """Per asset: balances + withdrawn - perp cost bases. Outcome shares are left out: their
    supply is checked against the pool collateral in ``check_consistency``."""
    shares = {m.base_asset for m in h.state.markets.values() if m.kind == MARKET_OUTCOME}
    shares |= {m.no_asset for m in h.state.markets.values() if m.kind == MARKET_OUTCOME}
    out: Counter[int] = Counter()
    for (_, asset), (balance, _) in h.state.balances.items():
        if asset not in shares:
            out[asset] += balance
    for (_, market_id), position in h.state.positions.items():
        out[h.state.markets[market_id].quote_asset] -= position.cost
    for w in h.state.withdrawals.values():
        out[w.asset_id] += w.amount
    return out


def check_consistency(h: Harness) -> None:
    state = h.state
    held: Counter[tuple[bytes, int]] = Counter()
    for order_id, meta in state.orders.items():
        order = state.books[meta.market_id].get(order_id)
        assert order is not None and order.account == meta.account
        held[(meta.account, meta.reserved_asset)] += meta.reserved
        assert order_id in state.orders_of[meta.account]
        if order.client_order_id:
            assert state.client_ids[(meta.account, meta.market_id, order.client_order_id)] == order_id
    for (account, market_id), position in state.positions.items():
        # an isolated position's margin is held in its collateral balance's reserved part
        if position.margin_mode == MARGIN_ISOLATED:
            assert position.isolated_margin >= 0
            held[(account, state.markets[market_id].quote_asset)] += position.isolated_margin
    for market_id, book in state.books.items():
        for order in book.orders():
            assert order.order_id in state.orders and state.orders[order.order_id].market_id == market_id
    for (account, asset), (balance, reserved) in state.balances.items():
        assert 0 <= reserved <= balance
        assert reserved == held.get((account, asset), 0), (account.hex(), asset)
    for market in state.markets.values():
        if market.kind == MARKET_OUTCOME:
            yes = sum(b for (_, a), (b, _) in state.balances.items() if a == market.base_asset)
            no = sum(b for (_, a), (b, _) in state.balances.items() if a == market.no_asset)
            pool = state.balances.get((pool_account(market.market_id), market.quote_asset), (0, 0))[0]
            assert yes == no == pool
        if market.kind == MARKET_PERP:
            longs = sum(p.size for (_, m), p in state.positions.items() if m == market.market_id and p.size > 0)
            shorts = sum(p.size for (_, m), p in state.positions.items() if m == market.market_id and p.size < 0)
            assert longs == -shorts == market.open_interest


FAUCET = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")
YES, NO = 1001, 1002
SHARES = 20 * 10**6


def seed_accounts(state: State, h: Harness) -> None:
    """Hand each test key WCP from the genesis faucet and 20 minted YES/NO pairs (the pool holds
    their collateral), as genesis allocations would."""
    for key in KEYS:
        set_balance(state, h.addr(key), WCP, 500 * 10**6, 0)
        set_balance(state, h.addr(key), YES, SHARES, 0)
        set_balance(state, h.addr(key), NO, SHARES, 0)
    balance, reserved = state.balances[(FAUCET, WCP)]
    set_balance(state, FAUCET, WCP, balance - len(KEYS) * (500 * 10**6 + SHARES), reserved)
    set_balance(state, pool_account(OUTCOME), WCP, len(KEYS) * SHARES, 0)


def start_isolated(h: Harness) -> None:
    """Keys 3 and 4 trade BTC-PERP in isolated margin from the start (the streams may switch
    them back, and the others over), key 3 with 250 USDT set aside, key 4 with none."""
    receipts = h.block([h.sign(3, SetMarginMode(BTC_PERP, True)), h.sign(4, SetMarginMode(BTC_PERP, True)),
                        h.sign(3, AdjustIsolatedMargin(BTC_PERP, 250 * 10**6, True))])
    assert all(r.ok for r in receipts), receipts


@pytest.fixture
def fill_margin_observer(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Observe every perp fill the real settlement accepts and record margin violations."""
    violations: list[str] = []
    original = trading.settle_perp_fill

    def observed(state, market, maker, taker_account, taker_order_id, taker_price, taker_ro, price, size, events):  # type: ignore[no-untyped-def]
        before = {a: state.positions.get((a, market.market_id)) for a in (maker.account, taker_account)}
        verdict = original(state, market, maker, taker_account, taker_order_id, taker_price, taker_ro, price, size,
                           events)
        if verdict == FillVerdict.ACCEPT:
            for account, old in before.items():
                new = state.positions.get((account, market.market_id))
                new_size = new.size if new is not None else 0
                reduced = old is not None and abs(new_size) < abs(old.size) and (
                    new_size == 0 or (new_size > 0) == (old.size > 0))
                if new is not None and new.margin_mode == MARGIN_ISOLATED:
                    summary = isolated_summary(state.markets[market.market_id], new,
                                               state.order_notional.get((account, market.market_id), 0))
                else:
                    summary = margin_summary(state, account, market.quote_asset)
                if not reduced and not summary.meets_initial:
                    violations.append(f"{account.hex()} {summary}")
        return verdict

    monkeypatch.setattr(trading, "settle_perp_fill", observed)
    return violations


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=stream, variation_margin=st.booleans())
def test_random_streams_conserve_assets_keep_margin_and_replay_deterministically(
    blocks: list[list[tuple]], variation_margin: bool, fill_margin_observer: list[str]
) -> None:
    fill_margin_observer.clear()
    spec = copy.deepcopy(load_genesis_spec())
    for market in spec["markets"]:
        if market["kind"] == "perp":
            market["settle_variation_margin"] = variation_margin
    h = Harness(spec)
    h.oracle_ms = h.head.timestamp_ms  # type: ignore[attr-defined]
    seed_accounts(h.state, h)
    h.block([h.deposit(h.addr(k), USDT, 400 * 10**6) for k in KEYS] + [h.deposit(h.addr(k), WBTC, 10**6) for k in KEYS])
    start_isolated(h)
    start = totals(h)
    check_consistency(h)
    for items in blocks:
        txs = [to_tx(h, item) for item in items]
        snapshot = (dict(h.state.balances), dict(h.state.positions), dict(h.state.orders),
                    dict(h.state.withdrawals), dict(h.state.markets), dict(h.state.agents))
        receipts = h.block(txs)
        if not any(r.ok for r in receipts):
            assert snapshot == (h.state.balances, h.state.positions, h.state.orders, h.state.withdrawals,
                                h.state.markets, h.state.agents)
        check_consistency(h)
        assert totals(h) == start
        if variation_margin:
            # positions sit at the mark except losses the free balance (an isolated position: its
            # isolated margin) could not pay
            for (account, market_id), position in h.state.positions.items():
                market = h.state.markets[market_id]
                pnl = position.size * market.mark_price * market.tick_size - position.cost
                balance, reserved = h.state.balances.get((account, market.quote_asset), (0, 0))
                if position.margin_mode == MARGIN_ISOLATED:
                    assert pnl == 0 or (pnl < 0 and position.isolated_margin == 0)
                else:
                    assert pnl == 0 or (pnl < 0 and balance == reserved)
    assert fill_margin_observer == []
    replay = build_genesis_state(h.spec)
    seed_accounts(replay, h)
    parent = genesis_header(replay, h.spec)
    for block in h.blocks:
        state_transition(replay, parent, block)
        parent = block.header
    assert replay.trie.root == h.state.trie.root


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(op, min_size=5, max_size=40))
def test_every_rejected_action_leaves_everything_but_its_nonce_unchanged(ops: list[tuple]) -> None:
    h = Harness()
    h.oracle_ms = h.head.timestamp_ms  # type: ignore[attr-defined]
    seed_accounts(h.state, h)
    h.block([h.deposit(h.addr(k), USDT, 400 * 10**6) for k in KEYS] + [h.deposit(h.addr(k), WBTC, 10**6) for k in KEYS])
    start_isolated(h)
    rejected = 0
    for item in ops:
        tx = to_tx(h, item)
        state = h.state
        before = (dict(state.balances), dict(state.positions), dict(state.orders), dict(state.withdrawals),
                  dict(state.markets), dict(state.agents), dict(state.client_ids), dict(state.order_notional),
                  state.system.next_order_id, state.system.next_withdrawal_id,
                  {m: [(o.order_id, o.price, o.size) for o in b.orders()] for m, b in state.books.items()})
        nonces = dict(state.nonces)
        receipt = h.block([tx])[0]
        if not receipt.ok:
            rejected += 1
            after = (dict(state.balances), dict(state.positions), dict(state.orders), dict(state.withdrawals),
                     dict(state.markets), dict(state.agents), dict(state.client_ids), dict(state.order_notional),
                     state.system.next_order_id, state.system.next_withdrawal_id,
                     {m: [(o.order_id, o.price, o.size) for o in b.orders()] for m, b in state.books.items()})
            assert after == before, receipt
            changed = {k for k in set(nonces) | set(state.nonces) if nonces.get(k) != state.nonces.get(k)}
            assert len(changed) <= 1
