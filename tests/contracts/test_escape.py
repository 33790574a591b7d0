"""The escape hatch on a real py-evm chain: forced withdrawals, freeze, escapeWithdraw, refunds."""

from __future__ import annotations

import random

import pytest
import rlp
from eth_utils import keccak, to_canonical_address

from node.evm.contracts import BRIDGE_ADDRESS, GOVERNANCE_ADDRESS, USDT_ADDRESS
from proofs.engine import CommitEngine
from proofs.store import MemoryStore
from tests.contracts.harness import Harness, TxFailed, TxResult

OKB = 10**18
USDT = 10**6
ZERO32 = b"\x00" * 32


def balance_key(account: str, asset_id: int) -> bytes:
    """keccak256(0x01 ++ account ++ assetId as 4 bytes big-endian) (docs/interfaces.md)."""
    return keccak(b"\x01" + to_canonical_address(account) + asset_id.to_bytes(4, "big"))


def balance_leaf(balance: int, reserved: int = 0) -> bytes:
    return rlp.encode([balance, reserved])


class Escape:
    """A devnet chain whose bridge committed a TradeZone state trie, then froze."""

    def __init__(self, evm: Harness, leaves: dict[tuple[str, int], bytes], fillers: int = 200) -> None:
        self.evm = evm
        self.bridge = evm.contract("Bridge", BRIDGE_ADDRESS)
        self.usdt = evm.contract("ERC20", USDT_ADDRESS)
        self.engine = CommitEngine(MemoryStore())
        rnd = random.Random(3)
        dirty = {keccak(rnd.randbytes(24)): balance_leaf(rnd.randrange(1, 10**9)) for _ in range(fillers)}
        dirty.update({balance_key(account, asset): value for (account, asset), value in leaves.items()})
        self.root = self.engine.commit(dirty)

    def fund(self, depositor: str, okb: int, usdt: int) -> None:
        self.usdt.transact("approve", BRIDGE_ADDRESS, usdt, sender=depositor)
        self.bridge.transact("deposit", USDT_ADDRESS, depositor, usdt, sender=depositor)
        self.bridge.transact("depositNative", depositor, sender=depositor, value=okb)

    def commit_root(self) -> None:
        cursor = self.bridge.call("messageCount")
        rolling = self.bridge.call("rollingHashAt", cursor - 1) if cursor else ZERO32
        prev = self.bridge.call("lastCommittedRoot")
        tz_block = 10 * (self.bridge.call("batchCount") + 1)
        self.bridge.transact(
            "commitBatch", prev, self.root, tz_block, cursor, rolling, [], b"", sender=self.evm.accounts[9]
        )

    def force_and_freeze(self, requester: str) -> None:
        fee = self.bridge.call("forcedWithdrawalFee")
        self.bridge.transact("requestForcedWithdrawal", 1, sender=requester, value=fee)
        deadline = self.bridge.call("messageDeadline", self.bridge.call("messageCount") - 1)
        self.evm.mine(deadline - self.evm.block_number)
        self.bridge.transact("freeze", sender=self.evm.accounts[0])

    def proof(self, account: str, asset: int) -> list[bytes]:
        return self.engine.prove(balance_key(account, asset))

    def escape(self, account: str, asset: int, value: bytes, proof: list[bytes] | None = None) -> TxResult:
        proof = self.proof(account, asset) if proof is None else proof
        return self.bridge.transact("escapeWithdraw", asset, value, proof, sender=account, gas=2_000_000)


def test_balance_leaf_key_matches_the_interface(evm: Harness) -> None:
    bridge = evm.contract("Bridge", BRIDGE_ADDRESS)
    account = evm.accounts[5]
    assert bridge.call("balanceLeafKey", account, 2) == balance_key(account, 2)


def test_freeze_needs_a_message_past_its_deadline(evm: Harness) -> None:
    bridge = evm.contract("Bridge", BRIDGE_ADDRESS)
    trader = evm.accounts[5]
    with pytest.raises(TxFailed, match="no pending message"):
        bridge.transact("freeze", sender=trader)
    fee = bridge.call("forcedWithdrawalFee")
    queued = bridge.transact("requestForcedWithdrawal", 1, sender=trader, value=fee)
    deadline = queued.block_number + 20
    evm.mine(deadline - evm.block_number - 1)
    assert bridge.call("canFreeze") is False
    with pytest.raises(TxFailed, match="deadline not passed"):
        bridge.transact("freeze", sender=trader)  # mined at the deadline block itself
    assert bridge.call("canFreeze") is True
    result = bridge.transact("freeze", sender=trader)
    assert result.block_number == deadline + 1
    assert bridge.logs(result, "Frozen")[0]["messageIndex"] == 0
    assert bridge.call("frozen") is True
    with pytest.raises(TxFailed, match="already frozen"):
        bridge.transact("freeze", sender=trader)


def test_a_consumed_request_prevents_freezing(evm: Harness) -> None:
    bridge = evm.contract("Bridge", BRIDGE_ADDRESS)
    trader = evm.accounts[5]
    bridge.transact("requestForcedWithdrawal", 1, sender=trader, value=bridge.call("forcedWithdrawalFee"))
    rolling = bridge.call("rollingHashAt", 0)
    bridge.transact(
        "commitBatch",
        bridge.call("lastCommittedRoot"),
        keccak(b"r"),
        1,
        1,
        rolling,
        [],
        b"",
        sender=evm.accounts[9],
    )
    evm.mine(25)
    with pytest.raises(TxFailed, match="no pending message"):
        bridge.transact("freeze", sender=trader)


def test_frozen_bridge_accepts_no_batch_deposit_or_request(evm: Harness) -> None:
    alice = evm.accounts[5]
    escape = Escape(evm, {(alice, 0): balance_leaf(OKB)})
    escape.force_and_freeze(alice)
    bridge = escape.bridge
    with pytest.raises(TxFailed, match="Bridge: frozen"):
        escape.commit_root()
    with pytest.raises(TxFailed, match="Bridge: frozen"):
        bridge.transact("depositNative", alice, sender=alice, value=1)
    with pytest.raises(TxFailed, match="Bridge: frozen"):
        bridge.transact("requestForcedWithdrawal", 1, sender=alice, value=bridge.call("forcedWithdrawalFee"))


def test_escape_pays_each_committed_balance_once(evm: Harness) -> None:
    alice, bob, carol = evm.accounts[5], evm.accounts[6], evm.accounts[7]
    leaves = {
        (alice, 0): balance_leaf(3 * OKB, OKB),
        (alice, 1): balance_leaf(700 * USDT),
        (bob, 1): balance_leaf(250 * USDT, 250 * USDT),
        (carol, 1): balance_leaf(0),
    }
    escape = Escape(evm, leaves)
    escape.fund(alice, 3 * OKB, 500 * USDT)
    escape.fund(bob, OKB, 500 * USDT)
    escape.commit_root()
    with pytest.raises(TxFailed, match="Bridge: not frozen"):
        escape.escape(alice, 1, leaves[(alice, 1)])
    escape.force_and_freeze(carol)

    usdt_before = escape.usdt.call("balanceOf", alice)
    result = escape.escape(alice, 1, leaves[(alice, 1)])
    assert escape.bridge.logs(result, "EscapeWithdrawn") == [
        {"account": alice, "assetId": 1, "amount": 700 * USDT}
    ]
    assert escape.usdt.call("balanceOf", alice) == usdt_before + 700 * USDT
    okb_before = evm.balance(alice)
    result = escape.escape(alice, 0, leaves[(alice, 0)])
    assert evm.balance(alice) == okb_before + 3 * OKB - result.gas_used * result.receipt_gas_price
    bob_before = escape.usdt.call("balanceOf", bob)
    escape.escape(bob, 1, leaves[(bob, 1)])  # balance includes the reserved part
    assert escape.usdt.call("balanceOf", bob) == bob_before + 250 * USDT
    assert escape.bridge.call("escaped", alice, 1) is True

    with pytest.raises(TxFailed, match="already escaped"):
        escape.escape(alice, 1, leaves[(alice, 1)])
    with pytest.raises(TxFailed, match="nothing to withdraw"):
        escape.escape(carol, 1, leaves[(carol, 1)])
    with pytest.raises(TxFailed, match="asset not listed"):
        escape.escape(carol, 1000, leaves[(carol, 1)])


def test_escape_refuses_other_accounts_leaves_and_bad_proofs(evm: Harness) -> None:
    alice, bob, mallory = evm.accounts[5], evm.accounts[6], evm.accounts[7]
    leaves = {(alice, 1): balance_leaf(600 * USDT), (bob, 1): balance_leaf(400 * USDT)}
    escape = Escape(evm, leaves)
    escape.fund(alice, OKB, 1000 * USDT)
    escape.commit_root()
    escape.force_and_freeze(bob)
    alice_proof = escape.proof(alice, 1)
    # Mallory presents Alice's leaf and proof: the key is Mallory's, so the walk fails or finds nothing.
    with pytest.raises(TxFailed, match="MPT|no balance leaf"):
        escape.escape(mallory, 1, leaves[(alice, 1)], alice_proof)
    with pytest.raises(TxFailed, match="MPT|no balance leaf"):
        escape.escape(bob, 1, leaves[(alice, 1)], alice_proof)
    with pytest.raises(TxFailed, match="leaf value does not match"):
        escape.escape(alice, 1, balance_leaf(6000 * USDT), alice_proof)
    with pytest.raises(TxFailed, match="proof too short"):
        escape.escape(alice, 1, leaves[(alice, 1)], alice_proof[:-1])
    with pytest.raises(TxFailed, match="proof has extra nodes"):
        escape.escape(alice, 1, leaves[(alice, 1)], alice_proof + [alice_proof[-1]])
    forged = rlp.encode([rlp.decode(alice_proof[-1])[0], balance_leaf(6000 * USDT)])
    with pytest.raises(TxFailed, match="node hash does not match"):
        escape.escape(alice, 1, balance_leaf(6000 * USDT), alice_proof[:-1] + [forged])
    other = CommitEngine(MemoryStore())
    other.commit({balance_key(alice, 1): balance_leaf(6000 * USDT)})
    with pytest.raises(TxFailed, match="node hash does not match"):  # a proof against another root
        escape.escape(alice, 1, balance_leaf(6000 * USDT), other.prove(balance_key(alice, 1)))
    escape.escape(alice, 1, leaves[(alice, 1)], alice_proof)
    escape.escape(bob, 1, leaves[(bob, 1)])


def test_unconsumed_deposits_are_refunded_once(evm: Harness) -> None:
    alice, bob = evm.accounts[5], evm.accounts[6]
    escape = Escape(evm, {})
    bridge = escape.bridge
    escape.fund(alice, 2 * OKB, 100 * USDT)  # messages 0 (USDT) and 1 (OKB)
    escape.commit_root()  # consumes 0 and 1
    escape.usdt.transact("approve", BRIDGE_ADDRESS, 40 * USDT, sender=bob)
    bridge.transact("deposit", USDT_ADDRESS, alice, 40 * USDT, sender=bob)  # message 2, never consumed
    with pytest.raises(TxFailed, match="Bridge: not frozen"):
        bridge.transact("refundDeposit", 2, bob, alice, 1, 40 * USDT, sender=bob)
    escape.force_and_freeze(alice)  # message 3
    with pytest.raises(TxFailed, match="consumed by a batch"):
        bridge.transact("refundDeposit", 0, alice, alice, 1, 100 * USDT, sender=alice)
    with pytest.raises(TxFailed, match="not this deposit"):
        bridge.transact("refundDeposit", 2, alice, alice, 1, 40 * USDT, sender=alice)
    with pytest.raises(TxFailed, match="not this deposit"):
        bridge.transact("refundDeposit", 3, alice, alice, 1, 0, sender=alice)
    with pytest.raises(TxFailed, match="no such message"):
        bridge.transact("refundDeposit", 4, bob, alice, 1, 40 * USDT, sender=bob)
    before = escape.usdt.call("balanceOf", bob)
    bridge.transact("refundDeposit", 2, bob, alice, 1, 40 * USDT, sender=alice)
    assert escape.usdt.call("balanceOf", bob) == before + 40 * USDT
    with pytest.raises(TxFailed, match="already refunded"):
        bridge.transact("refundDeposit", 2, bob, alice, 1, 40 * USDT, sender=bob)
    assert evm.balance(GOVERNANCE_ADDRESS) == bridge.call("forcedWithdrawalFee")


def test_escape_gas_for_a_100k_account_trie(evm: Harness) -> None:
    """Target: escapeWithdraw under 500,000 gas against a trie of 100,000 balance leaves."""
    alice = evm.accounts[5]
    leaves = {(alice, 1): balance_leaf(123 * USDT, 5 * USDT)}
    escape = Escape(evm, leaves, fillers=100_000)
    escape.fund(alice, OKB, 123 * USDT)
    escape.commit_root()
    escape.force_and_freeze(alice)
    proof = escape.proof(alice, 1)
    result = escape.escape(alice, 1, leaves[(alice, 1)], proof)
    print(
        f"\nescapeWithdraw gas, 100,000-leaf trie: {result.gas_used} ({len(proof)} proof nodes, "
        f"{sum(len(n) for n in proof)} bytes)"
    )
    assert result.gas_used < 500_000
