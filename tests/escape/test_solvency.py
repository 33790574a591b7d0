"""Solvency of the escape hatch over random TradeZone histories run through the real VM.

For every L1-backed asset the bridge holds ``custody = deposits - claimed withdrawals``; once
frozen it owes the pending (committed, unclaimed) withdrawals plus what ``escapeWithdraw`` pays,
the ``balance`` of each balance leaf under the committed root (read here through a proof of each
leaf checked exactly as the client checks it before sending).

* Histories of deposits, spot trading, transfers, withdrawals, claims, forced withdrawals and
  cancels: escape values plus pending withdrawals never exceed custody (they equal it); on the
  real bridge (embedded chain, real sequencer and batcher), after a freeze every committed
  balance escapes in full and the bridge keeps exactly what keyless accounts own.
* Histories with perpetuals: ``balances - position costs`` is what custody backs, exactly, so
  the balance rule over-pays by ``sum(costs)`` whenever a closed position realized a gain
  against a position that is still open at a loss; valuing each account at the committed mark
  (``balance + unrealized PnL``) is exactly solvent. With the VM's variation-margin settlement
  switched on, the balance rule over-pays exactly the losses nobody's free balance could pay.
  docs/escape.md explains the consequence. The devnet genesis switches variation margin on for
  its perpetuals; with it, every account escapes its committed balance on the real bridge after
  a realized gain against a still-open loss (the case that over-pays with it off).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.config import BRIDGE_ADDRESS, dev_accounts
from node.escape.client import EscapeClient
from node.escape.proof import EscapeProof, check_escape_proof, proof_from_replay, proof_from_state
from node.evm.bridge import BridgeClient
from node.sequencer.batcher import Batcher
from node.tradezone.margin import unrealized_pnl
from node.tradezone.signing import Signer
from node.tradezone.state import balance_key
from node.tradezone.transactions import (
    BUY,
    SELL,
    TIF_IOC,
    TIF_POST_ONLY,
    AdjustIsolatedMargin,
    CancelAll,
    OracleUpdate,
    PlaceOrder,
    SetMarginMode,
    Transfer,
    Withdraw,
    encode_transaction,
)
from tests.sequencer.conftest import L1, TRADERS, open_sequencer
from tests.vectors.harness import BTC_PERP, ETH_PERP, SPOT, USDT, WBTC, Harness

L1_BACKED = (USDT, WBTC)
USERS = (1, 2, 3, 4)
MARKS = {BTC_PERP: 1_000_000, ETH_PERP: 350_000}
SPOT_PRICE = 1_000_000


class History:
    """A TradeZone chain from the devnet genesis with the bridge's books kept beside it."""

    def __init__(self, funded: bool = False, spec: dict | None = None) -> None:  # type: ignore[type-arg]
        self.h = Harness(spec)
        self.deposited: dict[int, int] = defaultdict(int)
        self.claimed: dict[int, int] = defaultdict(int)
        self.claimed_ids: set[int] = set()
        if funded:  # every user starts with USDT and WBTC, so that random orders can match
            for user in USERS:
                self.apply(("deposit", user, USDT, 10**10))
                self.apply(("deposit", user, WBTC, 10**8))
            # users 3 and 4 trade BTC-PERP in isolated margin, with 20% and 5% of their USDT set
            # aside (the streams may switch them back)
            self.apply(("isolate", 3, BTC_PERP, 20))
            self.apply(("isolate", 4, BTC_PERP, 5))

    def apply(self, op: tuple) -> None:  # type: ignore[type-arg]
        h = self.h
        kind = op[0]
        if kind == "deposit":
            _, user, asset, amount = op
            receipts = h.block([h.deposit(h.addr(user), asset, amount)])
            assert receipts[0].ok
            self.deposited[asset] += amount
        elif kind == "order":
            _, user, market, side, offset, size, tif, reduce_only = op
            base = MARKS.get(market, SPOT_PRICE)
            price = base + offset * base // 100
            h.block([h.sign(user, PlaceOrder(market, side, price, size, tif, reduce_only, 0))])
        elif kind == "trade":  # a resting maker order, then a taker that crosses it
            _, maker, taker, market, side, offset, size, reduce_only = op
            self.apply(("order", maker, market, side, offset, size, TIF_POST_ONLY, False))
            self.apply(("order", taker, market, 1 - side, offset, size, TIF_IOC, reduce_only))
        elif kind == "cancel":
            h.block([h.sign(op[1], CancelAll())])
        elif kind == "transfer":
            _, user, to, asset, part = op
            amount = h.balance(user, asset)[0] * part // 100
            if amount:
                h.block([h.sign(user, Transfer(h.addr(to), asset, amount))])
        elif kind == "withdraw":
            _, user, asset, part = op
            amount = h.balance(user, asset)[0] * part // 100
            if amount:
                h.block([h.sign(user, Withdraw(asset, amount, h.addr(user)))])
        elif kind == "forced":
            _, user, asset = op
            h.block([h.forced_withdrawal(h.addr(user), asset)])  # applied (or void, when there is nothing to withdraw)
        elif kind == "claim":
            unclaimed = sorted(set(h.state.withdrawals) - self.claimed_ids)
            if unclaimed:
                wid = unclaimed[op[1] % len(unclaimed)]
                record = h.state.withdrawals[wid]
                self.claimed_ids.add(wid)
                self.claimed[record.asset_id] += record.amount
        elif kind == "isolate":  # isolated margin in a market, with a part of the free USDT set aside
            _, user, market, part = op
            balance, reserved = h.balance(user, USDT)
            txs = [h.sign(user, SetMarginMode(market, True))]
            if (balance - reserved) * part // 100:
                txs.append(h.sign(user, AdjustIsolatedMargin(market, (balance - reserved) * part // 100, True)))
            h.block(txs)
        elif kind == "cross":
            _, user, market = op
            h.block([h.sign(user, SetMarginMode(market, False))])
        elif kind == "isolated_margin":  # a part of the free USDT in, or of the isolated margin out
            _, user, market, part, add = op
            position = h.state.positions.get((h.addr(user), market))
            balance, reserved = h.balance(user, USDT)
            held = position.isolated_margin if position is not None else 0
            amount = (balance - reserved if add else held) * part // 100
            if amount:
                h.block([h.sign(user, AdjustIsolatedMargin(market, amount, add))])
        elif kind == "oracle":
            _, market, offset = op
            price = MARKS[market] + offset * MARKS[market] // 100
            h.block([h.sign(8, OracleUpdate(market, price, h.head.timestamp_ms))])

    def custody(self, asset: int) -> int:
        return self.deposited[asset] - self.claimed[asset]

    def pending(self, asset: int) -> int:
        return sum(w.amount for i, w in self.h.state.withdrawals.items()
                   if w.asset_id == asset and i not in self.claimed_ids)

    def escape_values(self, asset: int) -> int:
        """What escapeWithdraw pays, summed over every balance leaf of ``asset`` under the
        current root, each leaf proved and checked as the client does before sending."""
        state, root = self.h.state, self.h.head.state_root
        total = 0
        for (account, leaf_asset), (balance, _reserved) in sorted(state.balances.items()):
            if leaf_asset != asset or balance == 0:
                continue
            key = balance_key(account, asset)
            proof = EscapeProof(account, asset, state.trie.get(key), tuple(state.trie.prove(key)), root)  # type: ignore[attr-defined]
            total += check_escape_proof(proof, root).balance
        return total

    def position_costs(self, collateral: int) -> int:
        markets = self.h.state.markets
        return sum(p.cost for (_, m), p in self.h.state.positions.items() if markets[m].quote_asset == collateral)

    def unsettled_losses(self, collateral: int) -> int:
        """Losses at the mark that positions still carry in their cost basis (with variation
        margin on: what an account's free balance could not pay)."""
        markets = self.h.state.markets
        return sum(max(0, -unrealized_pnl(markets[m], p)) for (_, m), p in self.h.state.positions.items()
                   if markets[m].quote_asset == collateral)

    def unrealized(self, collateral: int) -> int:
        markets = self.h.state.markets
        return sum(unrealized_pnl(markets[m], p) for (_, m), p in self.h.state.positions.items()
                   if markets[m].quote_asset == collateral)


def variation_margin_spec(on: bool = True) -> dict:  # type: ignore[type-arg]
    """The devnet genesis with variation-margin settlement switched on (or off) for every
    perpetual (the devnet genesis itself has it on)."""
    import copy

    from node.tradezone.genesis import load_genesis_spec

    spec = copy.deepcopy(load_genesis_spec())
    for market in spec["markets"]:
        if market["kind"] == "perp":
            market["settle_variation_margin"] = on
    return spec


users = st.sampled_from(USERS)
deposits = st.tuples(st.just("deposit"), users, st.sampled_from(L1_BACKED), st.integers(1, 5 * 10**9))
spot_orders = st.tuples(st.just("order"), users, st.just(SPOT), st.sampled_from((BUY, SELL)), st.integers(-2, 2),
                        st.integers(1, 40), st.sampled_from((0, TIF_IOC, TIF_POST_ONLY)), st.just(False))
perp_orders = st.tuples(st.just("order"), users, st.sampled_from((BTC_PERP, ETH_PERP)), st.sampled_from((BUY, SELL)),
                        st.integers(-2, 2), st.integers(1, 60), st.sampled_from((0, TIF_IOC, TIF_POST_ONLY)),
                        st.sampled_from((False, False, True)))
spot_trades = st.tuples(st.just("trade"), users, users, st.just(SPOT), st.sampled_from((BUY, SELL)),
                        st.integers(-2, 2), st.integers(1, 40), st.just(False))
perp_trades = st.tuples(st.just("trade"), users, users, st.sampled_from((BTC_PERP, ETH_PERP)),
                        st.sampled_from((BUY, SELL)), st.integers(-5, 5), st.integers(1, 200),
                        st.sampled_from((False, False, True)))
common = st.one_of(
    deposits, spot_orders, spot_trades, spot_trades,
    st.tuples(st.just("cancel"), users),
    st.tuples(st.just("transfer"), users, users, st.sampled_from(L1_BACKED), st.integers(1, 100)),
    st.tuples(st.just("withdraw"), users, st.sampled_from(L1_BACKED), st.integers(1, 100)),
    st.tuples(st.just("forced"), users, st.sampled_from(L1_BACKED)),
    st.tuples(st.just("claim"), st.integers(0, 1000)),
)
perp_markets = st.sampled_from((BTC_PERP, ETH_PERP))
with_perps = st.one_of(
    common, perp_orders, perp_trades, perp_trades, perp_trades,
    st.tuples(st.just("isolate"), users, perp_markets, st.integers(5, 60)),
    st.tuples(st.just("isolate"), users, perp_markets, st.integers(5, 60)),
    st.tuples(st.just("cross"), users, perp_markets),
    st.tuples(st.just("isolated_margin"), users, perp_markets, st.integers(1, 100), st.booleans()),
    st.tuples(st.just("oracle"), st.sampled_from((BTC_PERP, ETH_PERP)), st.integers(-10, 10)),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(common, min_size=1, max_size=25))
def test_escape_values_and_pending_withdrawals_never_exceed_custody(ops: list) -> None:  # type: ignore[type-arg]
    history = History(funded=True)
    for op in ops:
        history.apply(op)
        for asset in L1_BACKED:
            owed = history.escape_values(asset) + history.pending(asset)
            assert owed <= history.custody(asset)
            assert owed == history.custody(asset)  # nothing is created or lost either


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(with_perps, min_size=1, max_size=30))
def test_with_perpetuals_custody_backs_balances_minus_costs_and_mark_valued_escapes(ops: list) -> None:  # type: ignore[type-arg]
    history = History(funded=True, spec=variation_margin_spec(on=False))
    for op in ops:
        history.apply(op)
        assert history.escape_values(WBTC) + history.pending(WBTC) <= history.custody(WBTC)
        balances = history.escape_values(USDT)
        pending = history.pending(USDT)
        custody = history.custody(USDT)
        # exact: what custody backs is the balances minus the open positions' cost bases ...
        assert balances - history.position_costs(USDT) + pending == custody
        # ... which is the accounts' equity at the mark (open interest nets to zero), so paying
        # every account balance + unrealized PnL at the committed mark is exactly solvent
        assert balances + history.unrealized(USDT) + pending == custody
        # the balance rule over-pays by exactly the net cost basis when it is positive
        assert max(0, balances + pending - custody) == max(0, history.position_costs(USDT))


GAIN_SCENARIO = [("deposit", u, USDT, 10**9) for u in (1, 2, 3)] + [
    ("order", 1, BTC_PERP, SELL, 0, 10, TIF_POST_ONLY, False),  # 1 goes short 10 at the mark
    ("order", 2, BTC_PERP, BUY, 0, 10, TIF_IOC, False),  # 2 goes long
    ("oracle", BTC_PERP, 10),  # the mark rises 10%
    ("order", 3, BTC_PERP, BUY, 10, 10, TIF_POST_ONLY, False),  # 3 bids at the new mark
    ("order", 2, BTC_PERP, SELL, 10, 10, TIF_IOC, True),  # 2 closes: realizes the gain
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(with_perps, min_size=1, max_size=30))
def test_with_variation_margin_the_balance_rule_over_pays_only_losses_nobody_could_pay(ops: list) -> None:  # type: ignore[type-arg]
    history = History(funded=True, spec=variation_margin_spec())
    for op in ops:
        history.apply(op)
        assert history.escape_values(WBTC) + history.pending(WBTC) <= history.custody(WBTC)
        owed = history.escape_values(USDT) + history.pending(USDT)
        # every position is settled to the mark at block ends, except a loss the account's free
        # balance could not pay: that, and only that, is what the balance rule over-pays
        assert owed - history.custody(USDT) == history.unsettled_losses(USDT)
        if history.unsettled_losses(USDT) == 0:
            assert owed <= history.custody(USDT)


def test_with_variation_margin_a_realized_gain_against_an_open_loss_stays_solvent() -> None:
    history = History(spec=variation_margin_spec())
    for op in GAIN_SCENARIO:
        history.apply(op)
    assert history.position_costs(USDT) == 0 and history.unsettled_losses(USDT) == 0
    assert history.escape_values(USDT) + history.pending(USDT) == history.custody(USDT)


def test_a_realized_gain_against_a_still_open_loss_makes_the_balance_rule_owe_more_than_custody() -> None:
    history = History(spec=variation_margin_spec(on=False))
    for op in GAIN_SCENARIO:
        history.apply(op)
    gain = 10 * (MARKS[BTC_PERP] // 10) * 10
    assert history.position_costs(USDT) == gain  # 1 short at the old mark, 3 long at the new one
    assert history.escape_values(USDT) + history.pending(USDT) == history.custody(USDT) + gain
    assert history.unrealized(USDT) == -gain  # 1's open loss is the other side of 2's gain


def test_on_the_real_bridge_with_variation_margin_every_account_escapes_after_perp_gains(
        tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), dev_accounts()[9].private_key)
    client = EscapeClient(l1.client, BRIDGE_ADDRESS)
    keys = [t.private_key for t in TRADERS]
    signers = [Signer(k) for k in keys]
    oracle = Signer(dev_accounts()[8].private_key)
    mark = MARKS[BTC_PERP]

    async def step(*txs: object) -> None:
        out = await seq.submit([encode_transaction(tx) for tx in txs])  # type: ignore[arg-type]
        assert all(isinstance(h, bytes) for h in out), out
        seq.produce_block(seq.head.timestamp_ms + 100)

    async def main() -> None:
        for key, signer in zip(keys, signers, strict=True):
            await l1.deposit_usdt(key, signer.address, 1_000_000_000)
        while await seq.inbox.poll():
            pass
        seq.produce_block(seq.head.timestamp_ms + 100)
        a, b, c = signers
        await step(a.sign(PlaceOrder(BTC_PERP, SELL, mark, 10, TIF_POST_ONLY, False, 0), 0))
        await step(b.sign(PlaceOrder(BTC_PERP, BUY, mark, 10, TIF_IOC, False, 0), 0))
        await step(oracle.sign(OracleUpdate(BTC_PERP, mark * 11 // 10, seq.head.timestamp_ms), 0))
        await step(c.sign(PlaceOrder(BTC_PERP, BUY, mark * 11 // 10, 10, TIF_POST_ONLY, False, 0), 0))
        await step(b.sign(PlaceOrder(BTC_PERP, SELL, mark * 11 // 10, 10, TIF_IOC, True, 0), 1))
        assert await batcher.step()
        # the sequencer halts with a forced withdrawal queued; anyone freezes after the deadline
        request = await client.request_forced_withdrawal(keys[0], USDT)
        while await l1.client.block_number() < request.deadline:
            l1.mine()
        await client.freeze(dev_accounts()[4].private_key)
        for key, signer in zip(keys, signers, strict=True):
            proof = await proof_from_replay(l1.client, BRIDGE_ADDRESS, signer.address, USDT)
            leaf = check_escape_proof(proof, await client.bridge.last_committed_root())
            escaped = await client.withdraw(key, USDT, proof)
            assert escaped.amount == leaf.balance

    try:
        asyncio.run(main())
    finally:
        seq.store.kv.close()


# --- the same property on the real bridge ---------------------------------------------------------

TOKENS = {USDT: bytes.fromhex("4200000000000000000000000000000000000020"),
          WBTC: bytes.fromhex("4200000000000000000000000000000000000021")}
bridge_ops = st.one_of(
    st.tuples(st.just("deposit"), st.integers(0, 2), st.sampled_from(L1_BACKED), st.integers(1, 10**9)),
    st.tuples(st.just("trade"), st.integers(0, 2), st.integers(0, 2), st.sampled_from((BUY, SELL)),
              st.integers(-2, 2), st.integers(1, 40)),
    st.tuples(st.just("withdraw"), st.integers(0, 2), st.sampled_from(L1_BACKED), st.integers(1, 100)),
    st.tuples(st.just("forced"), st.integers(0, 2), st.sampled_from(L1_BACKED)),
    st.tuples(st.just("batch")),
    st.tuples(st.just("claim"), st.integers(0, 1000)),
)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.lists(bridge_ops, min_size=3, max_size=10))
def test_on_the_real_bridge_every_committed_balance_escapes_in_full_and_custody_ends_exact(
        tmp_path_factory: pytest.TempPathFactory, ops: list) -> None:  # type: ignore[type-arg]
    from node.evm.l1 import send_transaction
    from tests.sequencer.conftest import selector

    base = tmp_path_factory.mktemp("bridge")
    l1 = L1(base / "l1")
    seq = open_sequencer(base / "tz", l1)
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), dev_accounts()[9].private_key)
    client = EscapeClient(l1.client, BRIDGE_ADDRESS)
    keys = [t.private_key for t in TRADERS]
    signers = [Signer(k) for k in keys]
    fund = {USDT: (1, 4, 10**10), WBTC: (1, 4, 10**8)}
    claimed: set[int] = set()

    async def block(*txs: object) -> None:
        while await seq.inbox.poll():
            pass
        if txs:
            await seq.submit([encode_transaction(tx) for tx in txs])  # type: ignore[arg-type]
        seq.produce_block(seq.head.timestamp_ms + 100)

    def sign(user: int, action: object) -> object:
        signer = signers[user]
        return signer.sign(action, seq.state.nonces.get(signer.address, 0))  # type: ignore[arg-type]

    async def deposit(user: int, asset: int, amount: int) -> None:
        token = TOKENS[asset]
        # fixed gas limits: no estimate, the test is about the bridge's books, not gas
        await send_transaction(l1.client, keys[user], token, selector("approve(address,uint256)") + abi_encode(
            ["address", "uint256"], [BRIDGE_ADDRESS, amount]), gas=100_000)
        await send_transaction(l1.client, keys[user], BRIDGE_ADDRESS, selector("deposit(address,address,uint256)")
                               + abi_encode(["address", "address", "uint256"], [token, signers[user].address, amount]),
                               gas=300_000)
        await block()

    async def committed_withdrawals() -> list[tuple[int, bytes, int, int]]:
        out = []
        for wid, w in sorted(seq.state.withdrawals.items()):
            raw = await l1.client.call(BRIDGE_ADDRESS, selector("withdrawalState(uint64,address,uint32,uint256)")
                                       + abi_encode(["uint64", "address", "uint32", "uint256"],
                                                    [wid, w.recipient, w.asset_id, w.amount]))
            if int.from_bytes(raw[:32], "big") == 2 and wid not in claimed:  # claimable
                out.append((wid, w.recipient, w.asset_id, w.amount))
        return out

    async def claim(entry: tuple[int, bytes, int, int]) -> None:
        await send_transaction(l1.client, keys[0], BRIDGE_ADDRESS, selector("claim(uint64,address,uint32,uint256)")
                               + abi_encode(["uint64", "address", "uint32", "uint256"], list(entry)), gas=200_000)
        claimed.add(entry[0])

    async def main() -> None:
        for asset, (_, _, amount) in fund.items():
            for user in range(3):
                await deposit(user, asset, amount)
        for op in ops:
            kind = op[0]
            if kind == "deposit":
                await deposit(op[1], op[2], op[3])
            elif kind == "trade":
                _, maker, taker, side, offset, size = op
                price = SPOT_PRICE + offset * SPOT_PRICE // 100
                await block(sign(maker, PlaceOrder(SPOT, side, price, size, TIF_POST_ONLY, False, 0)))
                await block(sign(taker, PlaceOrder(SPOT, 1 - side, price, size, TIF_IOC, False, 0)))
            elif kind == "withdraw":
                _, user, asset, part = op
                amount = seq.state.balances.get((signers[user].address, asset), (0, 0))[0] * part // 100
                if amount:
                    await block(sign(user, Withdraw(asset, amount, signers[user].address)))
            elif kind == "forced":
                await client.request_forced_withdrawal(keys[op[1]], op[2])
                await block()
            elif kind == "batch":
                await block()
                await batcher.step()
            elif kind == "claim":
                ready = await committed_withdrawals()
                if ready:
                    await claim(ready[op[1] % len(ready)])
        await block()
        await batcher.step()
        # the sequencer halts with a request queued; after the deadline anyone freezes
        request = await client.request_forced_withdrawal(keys[0], USDT)
        while await l1.client.block_number() < request.deadline:
            l1.mine()
        await client.freeze(dev_accounts()[4].private_key)
        root = await client.bridge.last_committed_root()
        assert root == seq.head.state_root
        committed = dict(seq.state.balances)
        for user, signer in enumerate(signers):
            for asset in L1_BACKED:
                balance = committed.get((signer.address, asset), (0, 0))[0]
                if balance:
                    proof = proof_from_state(seq.state, signer.address, asset, root)
                    assert (await client.withdraw(keys[user], asset, proof)).amount == balance
        for entry in await committed_withdrawals():
            await claim(entry)
        for asset in L1_BACKED:  # what is left is exactly what accounts without keys own
            left = sum(b for (account, a), (b, _) in committed.items()
                       if a == asset and account not in {s.address for s in signers})
            assert await client.holdings(asset) == left

    try:
        asyncio.run(main())
    finally:
        seq.store.kv.close()
        l1.chain.close()
