"""The devnet demo: an oracle, a market maker and two takers trading on the devnet markets.

It exists so that a newcomer who runs ``make run`` sees blocks of matched trades and batches
landing on the EVM chain within seconds. Every action is a real signed TradeZone transaction
from a devnet key (accounts 5-8 of docs/interfaces.md), admitted through the same path as
``tz_sendTransaction``; collateral arrives by real USDT deposits on the EVM chain's bridge.

Prices follow a seeded random walk (integer ticks), so two runs look alike.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence

from eth_abi import encode as abi_encode
from eth_utils import keccak

from node.config import BRIDGE_ADDRESS, USDT_ADDRESS, DevAccount, dev_accounts
from node.evm.l1 import L1Client, L1Error, send_transaction
from node.sequencer.sequencer import Sequencer
from node.tradezone.accounts import next_nonce
from node.tradezone.signing import Signer
from node.tradezone.state import MARKET_OUTCOME, MARKET_PERP
from node.tradezone.transactions import (
    TIF_IOC,
    TIF_POST_ONLY,
    Action,
    CancelAll,
    OracleUpdate,
    PlaceOrder,
    PlaceOrders,
)
from node.tradezone.venues import NO_SIDE_FLAG

log = logging.getLogger(__name__)

USDT = 1
WCP = 1000
MAKER_DEPOSIT = 500_000 * 10**6  # USDT units
TAKER_DEPOSIT = 100_000 * 10**6
LEVELS = 5


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


class DemoTrader:
    """A devnet key that signs and submits actions with its own nonce sequence."""

    def __init__(self, sequencer: Sequencer, account: DevAccount) -> None:
        self.sequencer = sequencer
        self.signer = Signer(account.private_key)
        self.key = account.private_key
        self.address = self.signer.address

    async def send(self, actions: Sequence[Action], *, wait: bool = False) -> None:
        seq = self.sequencer
        txs = []
        nonce = seq.mempool.next_nonce(self.address, next_nonce(seq.state, self.address))
        for action in actions:
            txs.append(self.signer.sign(action, nonce, domain=seq.domain))
            nonce += 1
        results = await seq.submit_transactions(txs)
        hashes = [r for r in results if isinstance(r, bytes)]
        for result in results:
            if not isinstance(result, bytes):
                log.debug("demo action refused: %s", result)
        if wait and hashes:
            await asyncio.wait_for(seq.waiters.wait(hashes[-1]), timeout=10)

    def free(self, asset_id: int) -> int:
        balance, reserved = self.sequencer.state.balances.get((self.address, asset_id), (0, 0))
        return balance - reserved


class Demo:
    """Runs the demo traders as asyncio tasks next to the sequencer."""

    def __init__(self, sequencer: Sequencer, l1: L1Client, *, seed: int = 2026) -> None:
        accounts = dev_accounts()
        self.sequencer = sequencer
        self.l1 = l1
        self.maker = DemoTrader(sequencer, accounts[5])
        self.takers = [DemoTrader(sequencer, accounts[6]), DemoTrader(sequencer, accounts[7])]
        self.oracle = DemoTrader(sequencer, accounts[8])
        self.rng = random.Random(seed)
        self._tasks: list[asyncio.Task[None]] = []

    async def fund(self) -> None:
        """Deposit USDT on the bridge for each demo trader whose TradeZone balance is low."""
        for trader, amount in ((self.maker, MAKER_DEPOSIT), *((t, TAKER_DEPOSIT) for t in self.takers)):
            if trader.free(USDT) >= amount // 2:
                continue
            approve = _selector("approve(address,uint256)") + abi_encode(["address", "uint256"], [BRIDGE_ADDRESS, amount])
            deposit = _selector("deposit(address,address,uint256)") + abi_encode(
                ["address", "address", "uint256"], [USDT_ADDRESS, trader.address, amount])
            await send_transaction(self.l1, trader.key, USDT_ADDRESS, approve)
            await send_transaction(self.l1, trader.key, BRIDGE_ADDRESS, deposit)
        for _ in range(100):  # the inbox includes the deposits within a few blocks
            if all(t.free(USDT) > 0 for t in (self.maker, *self.takers)):
                return
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="demo")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    async def _run(self) -> None:
        while True:
            try:
                await self.fund()
                break
            except L1Error as err:
                log.warning("demo: funding failed (%s); retrying", err)
                await asyncio.sleep(2)
        markets = sorted(self.sequencer.state.markets.values(), key=lambda m: m.market_id)
        perps = [m for m in markets if m.kind == MARKET_PERP]
        outcomes = [m for m in markets if m.kind == MARKET_OUTCOME and m.resolution == 0]
        fair = {m.market_id: self.rng.randint(20, 80) for m in outcomes}
        tick = 0
        while True:
            try:
                if tick % 5 == 0:
                    await self._oracle(perps)
                    await self._quote(perps, outcomes, fair)
                await self._take(perps, outcomes, fair)
            except Exception:  # the demo must never take the node down
                log.exception("demo step failed")
            tick += 1
            await asyncio.sleep(0.2)

    async def _oracle(self, perps: Sequence) -> None:  # type: ignore[type-arg]
        now = int(time.time() * 1000)
        updates = []
        for market in perps:
            mark = self.sequencer.state.markets[market.market_id].mark_price or market.mark_price
            step = max(1, mark // 2000)
            price = min(market.max_price, max(market.min_price, mark + self.rng.randint(-step, step)))
            updates.append(OracleUpdate(market.market_id, price, now))
        await self.oracle.send(updates)

    async def _quote(self, perps: Sequence, outcomes: Sequence, fair: dict[int, int]) -> None:  # type: ignore[type-arg]
        state = self.sequencer.state
        # Cancels apply after post-only placements inside a block (maker-first), so the maker
        # waits for its cancels to land before it quotes again.
        await self.maker.send([CancelAll(0xFFFFFFFF)], wait=True)
        orders: list[PlaceOrder] = []
        for market in perps:
            mark = state.markets[market.market_id].mark_price
            spread = max(1, mark // 5000)
            for level in range(1, LEVELS + 1):
                size = self.rng.randint(2, 8)
                orders.append(PlaceOrder(market.market_id, 0, mark - spread * level, size, TIF_POST_ONLY, False, 0))
                orders.append(PlaceOrder(market.market_id, 1, mark + spread * level, size, TIF_POST_ONLY, False, 0))
        for market in outcomes:
            p = fair[market.market_id] = min(90, max(10, fair[market.market_id] + self.rng.randint(-1, 1)))
            for level in range(1, 3):
                size = self.rng.randint(5, 20)
                orders.append(PlaceOrder(market.market_id, 0, p - level, size, TIF_POST_ONLY, False, 0))
                no_price = market.max_price - p - level
                orders.append(PlaceOrder(market.market_id | NO_SIDE_FLAG, 0, no_price, size, TIF_POST_ONLY, False, 0))
        for start in range(0, len(orders), 64):
            await self.maker.send([PlaceOrders(tuple(orders[start:start + 64]))])

    async def _take(self, perps: Sequence, outcomes: Sequence, fair: dict[int, int]) -> None:  # type: ignore[type-arg]
        state = self.sequencer.state
        for taker in self.takers:
            if self.rng.random() < 0.5:
                continue
            if outcomes and self.rng.random() < 0.3:
                market = self.rng.choice(list(outcomes))
                p = fair[market.market_id]
                if self.rng.random() < 0.5:
                    action = PlaceOrder(market.market_id, 0, p + 2, self.rng.randint(1, 5), TIF_IOC, False, 0)
                else:
                    action = PlaceOrder(market.market_id | NO_SIDE_FLAG, 0, market.max_price - p + 2,
                                        self.rng.randint(1, 5), TIF_IOC, False, 0)
            else:
                market = self.rng.choice(list(perps))
                mark = state.markets[market.market_id].mark_price
                side = self.rng.randint(0, 1)
                limit = mark + mark // 100 if side == 0 else mark - mark // 100  # 1% protective limit
                action = PlaceOrder(market.market_id, side, limit, self.rng.randint(1, 3), TIF_IOC, False, 0)
            await taker.send([action])
