"""Property: whatever the order of deposits, batches, withdrawals and claims, the bridge's custody of
each asset covers everything owed (committed balances, claimable withdrawals, unconsumed deposits),
and after a freeze every owed amount is paid out exactly, leaving nothing behind."""

from __future__ import annotations

import rlp
from eth_utils import keccak, to_canonical_address
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genesis.builder import L1Genesis
from node.evm.contracts import BRIDGE_ADDRESS, NATIVE_TOKEN, USDT_ADDRESS
from proofs.engine import CommitEngine
from proofs.store import MemoryStore
from tests.contracts.harness import Harness

ASSETS = (0, 1)
ZERO32 = b"\x00" * 32

deposit_op = st.tuples(
    st.just("deposit"), st.integers(5, 7), st.integers(5, 7), st.sampled_from(ASSETS), st.integers(1, 10**6)
)
commit_op = st.tuples(
    st.just("commit"),
    st.integers(0, 100),
    st.lists(st.tuples(st.integers(5, 7), st.sampled_from(ASSETS), st.integers(1, 100)), max_size=3),
)
claim_op = st.tuples(st.just("claim"), st.integers(0, 50))
operations = st.lists(st.one_of(deposit_op, commit_op, claim_op), min_size=1, max_size=12)


def balance_key(account: str, asset: int) -> bytes:
    return keccak(b"\x01" + to_canonical_address(account) + asset.to_bytes(4, "big"))


class Model:
    """The chain under test plus a minimal TradeZone: it credits consumed deposits and debits
    withdrawals, committing its balances as balance leaves."""

    def __init__(self, genesis: L1Genesis) -> None:
        self.evm = Harness(genesis)
        self.bridge = self.evm.contract("Bridge", BRIDGE_ADDRESS)
        self.usdt = self.evm.contract("ERC20", USDT_ADDRESS)
        self.engine = CommitEngine(MemoryStore())
        self.balances: dict[tuple[str, int], int] = {}
        self.queue: list[tuple[str, str, int, int]] = []  # every deposit, by queue index
        self.cursor = 0
        self.pending: list[tuple[int, str, int, int]] = []  # committed, unclaimed withdrawals
        self.next_withdrawal = 0
        for user in self.evm.accounts[5:8]:
            self.usdt.transact("approve", BRIDGE_ADDRESS, 2**255, sender=user)

    def custody(self, asset: int) -> int:
        if asset == 0:
            return self.evm.balance(BRIDGE_ADDRESS)
        return int(self.usdt.call("balanceOf", BRIDGE_ADDRESS))

    def owed(self, asset: int) -> int:
        committed = sum(v for (_, a), v in self.balances.items() if a == asset)
        claimable = sum(w[3] for w in self.pending if w[2] == asset)
        unconsumed = sum(d[3] for d in self.queue[self.cursor :] if d[2] == asset)
        return committed + claimable + unconsumed

    def deposit(self, depositor: str, recipient: str, asset: int, amount: int) -> None:
        if asset == 0:
            self.bridge.transact("depositNative", recipient, sender=depositor, value=amount)
        else:
            self.bridge.transact("deposit", USDT_ADDRESS, recipient, amount, sender=depositor)
        self.queue.append((depositor, recipient, asset, amount))

    def commit(self, consume_percent: int, requests: list[tuple[str, int, int]]) -> None:
        new_cursor = self.cursor + (len(self.queue) - self.cursor) * consume_percent // 100
        for _, recipient, asset, amount in self.queue[self.cursor : new_cursor]:
            self.balances[(recipient, asset)] = self.balances.get((recipient, asset), 0) + amount
        withdrawals = []
        for user, asset, percent in requests:
            amount = self.balances.get((user, asset), 0) * percent // 100
            if amount == 0:
                continue
            self.balances[(user, asset)] -= amount
            withdrawals.append((self.next_withdrawal, user, asset, amount))
            self.next_withdrawal += 1
        root = self.engine.commit(
            {balance_key(u, a): rlp.encode([v, 0]) if v else b"" for (u, a), v in self.balances.items()}
        )
        rolling = self.bridge.call("rollingHashAt", new_cursor - 1) if new_cursor else ZERO32
        prev = self.bridge.call("lastCommittedRoot")
        tz_block = self.bridge.call("batchCount") + 1
        self.bridge.transact(
            "commitBatch",
            prev,
            root,
            tz_block,
            new_cursor,
            rolling,
            withdrawals,
            b"",
            sender=self.evm.accounts[9],
        )
        self.cursor = new_cursor
        self.pending.extend(withdrawals)

    def claim(self, pick: int) -> None:
        if self.pending:
            withdrawal = self.pending.pop(pick % len(self.pending))
            self.bridge.transact("claim", *withdrawal, sender=self.evm.accounts[0])

    def check_covered(self) -> None:
        for asset in ASSETS:
            assert self.custody(asset) >= self.owed(asset)

    def freeze_and_pay_everyone(self) -> None:
        fee = self.bridge.call("forcedWithdrawalFee")
        self.bridge.transact("requestForcedWithdrawal", 1, sender=self.evm.accounts[8], value=fee)
        self.queue.append((NATIVE_TOKEN, NATIVE_TOKEN, 0, 0))  # not a deposit: never refunded
        self.evm.mine(self.bridge.call("forcedInclusionDelay"))
        self.bridge.transact("freeze", sender=self.evm.accounts[8])
        while self.pending:
            self.claim(0)
        for (user, asset), value in sorted(self.balances.items()):
            if value:
                proof = self.engine.prove(balance_key(user, asset))
                self.bridge.transact("escapeWithdraw", asset, rlp.encode([value, 0]), proof, sender=user)
        for index in range(self.cursor, len(self.queue)):
            depositor, recipient, asset, amount = self.queue[index]
            if amount:
                self.bridge.transact(
                    "refundDeposit", index, depositor, recipient, asset, amount, sender=depositor
                )


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_custody_always_covers_what_is_owed_and_empties_exactly(devnet_genesis: L1Genesis, ops: list) -> None:
    model = Model(devnet_genesis)
    accounts = model.evm.accounts
    for op in ops:
        if op[0] == "deposit":
            _, depositor, recipient, asset, amount = op
            model.deposit(accounts[depositor], accounts[recipient], asset, amount)
        elif op[0] == "commit":
            _, percent, requests = op
            model.commit(percent, [(accounts[u], a, p) for u, a, p in requests])
        else:
            model.claim(op[1])
        model.check_covered()
    model.freeze_and_pay_everyone()
    assert model.custody(0) == 0 and model.custody(1) == 0
