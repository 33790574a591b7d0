"""Staking, the council (Governance) and the devnet ERC-20 on a real py-evm chain."""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode

from node.evm.contracts import (
    BRIDGE_ADDRESS,
    GOVERNANCE_ADDRESS,
    KIND_STAKE,
    STAKING_ADDRESS,
    USDT_ADDRESS,
)
from tests.contracts.harness import Contract, Harness, TxFailed, TxResult

OKB = 10**18


@pytest.fixture
def staking(evm: Harness) -> Contract:
    return evm.contract("Staking", STAKING_ADDRESS)


@pytest.fixture
def council(evm: Harness) -> Contract:
    return evm.contract("Governance", GOVERNANCE_ADDRESS)


@pytest.fixture
def bridge(evm: Harness) -> Contract:
    return evm.contract("Bridge", BRIDGE_ADDRESS)


def stake_messages(bridge: Contract, result: TxResult) -> list[bytes]:
    events = bridge.logs(result, "MessageQueued")
    assert all(e["kind"] == KIND_STAKE for e in events)
    return [e["payload"] for e in events]


def pass_proposal(evm: Harness, council: Contract, target: str, data: bytes, value: int = 0) -> TxResult:
    """Propose with member 1, approve with member 2 (threshold 2), execute with member 3."""
    m1, m2, m3 = evm.accounts[1:4]
    result = council.transact("propose", target, value, data, sender=m1)
    (proposed,) = council.logs(result, "Proposed")
    council.transact("approve", proposed["id"], sender=m2)
    return council.transact("execute", proposed["id"], sender=m3)


# ------------------------------------------------------------------ staking


def test_stake_unstake_withdraw_queue_every_change(evm: Harness, staking: Contract, bridge: Contract) -> None:
    staker = evm.accounts[4]
    result = staking.transact("stake", sender=staker, value=100 * OKB)
    assert stake_messages(bridge, result) == [abi_encode(["address", "uint256"], [staker, 100 * OKB])]
    assert evm.balance(STAKING_ADDRESS) == 100 * OKB
    result = staking.transact("requestUnstake", 30 * OKB, sender=staker)
    assert stake_messages(bridge, result) == [abi_encode(["address", "uint256"], [staker, 70 * OKB])]
    release = result.block_number + 20
    assert (staking.call("stakeOf", staker), staking.call("unbondingOf", staker)) == (70 * OKB, 30 * OKB)
    assert staking.call("releaseBlockOf", staker) == release
    with pytest.raises(TxFailed, match="Staking: still unbonding"):
        staking.transact("withdraw", sender=staker)
    evm.mine(release - evm.block_number - 1)
    before = evm.balance(staker)
    result = staking.transact("withdraw", sender=staker, gas=200_000)
    assert result.block_number == release
    assert evm.balance(staker) == before + 30 * OKB - result.gas_used * result.receipt_gas_price
    with pytest.raises(TxFailed, match="Staking: nothing unbonding"):
        staking.transact("withdraw", sender=staker)
    assert bridge.call("messageCount") == 2


def test_staking_guards(evm: Harness, staking: Contract) -> None:
    staker = evm.accounts[4]
    with pytest.raises(TxFailed, match="Staking: zero amount"):
        staking.transact("stake", sender=staker, value=0)
    with pytest.raises(TxFailed, match="Staking: zero amount"):
        staking.transact("requestUnstake", 0, sender=staker)
    staking.transact("stake", sender=staker, value=OKB)
    with pytest.raises(TxFailed, match="Staking: amount exceeds stake"):
        staking.transact("requestUnstake", OKB + 1, sender=staker)
    with pytest.raises(TxFailed, match="Staking: caller is not governance"):
        staking.transact("slash", staker, 1, sender=evm.accounts[1])


def test_council_slashes_active_then_unbonding_stake_into_the_treasury(
    evm: Harness, staking: Contract, council: Contract, bridge: Contract
) -> None:
    staker = evm.accounts[4]
    staking.transact("stake", sender=staker, value=10 * OKB)
    staking.transact("requestUnstake", 4 * OKB, sender=staker)
    count = bridge.call("messageCount")
    result = pass_proposal(evm, council, STAKING_ADDRESS, staking.calldata("slash", staker, 8 * OKB))
    assert (staking.call("stakeOf", staker), staking.call("unbondingOf", staker)) == (0, 2 * OKB)
    assert evm.balance(GOVERNANCE_ADDRESS) == 8 * OKB
    assert evm.balance(STAKING_ADDRESS) == 2 * OKB
    assert stake_messages(bridge, result) == [abi_encode(["address", "uint256"], [staker, 0])]
    assert bridge.call("messageCount") == count + 1


def test_slashing_more_than_staked_reverts_and_the_proposal_stays_unexecuted(
    evm: Harness, staking: Contract, council: Contract
) -> None:
    staker = evm.accounts[4]
    staking.transact("stake", sender=staker, value=OKB)
    m1, m2, m3 = evm.accounts[1:4]
    council.transact("propose", STAKING_ADDRESS, 0, staking.calldata("slash", staker, OKB + 1), sender=m1)
    council.transact("approve", 0, sender=m2)
    with pytest.raises(TxFailed, match="Staking: slash exceeds stake"):
        council.transact("execute", 0, sender=m3)
    assert council.call("proposals", 0)[5] is False
    assert staking.call("stakeOf", staker) == OKB


# ------------------------------------------------------------------ governance


def test_council_threshold_double_execution_and_non_members(
    evm: Harness, council: Contract, bridge: Contract
) -> None:
    m1, m2, m3 = evm.accounts[1:4]
    outsider = evm.accounts[5]
    data = bridge.calldata("setSequencer", outsider)
    with pytest.raises(TxFailed, match="caller is not a member"):
        council.transact("propose", BRIDGE_ADDRESS, 0, data, sender=outsider)
    result = council.transact("propose", BRIDGE_ADDRESS, 0, data, sender=m1)
    assert council.logs(result, "Proposed")[0]["id"] == 0
    with pytest.raises(TxFailed, match="not enough approvals"):
        council.transact("execute", 0, sender=m1)
    with pytest.raises(TxFailed, match="already approved"):
        council.transact("approve", 0, sender=m1)
    with pytest.raises(TxFailed, match="caller is not a member"):
        council.transact("approve", 0, sender=outsider)
    with pytest.raises(TxFailed, match="unknown proposal"):
        council.transact("approve", 1, sender=m2)
    council.transact("approve", 0, sender=m2)
    with pytest.raises(TxFailed, match="caller is not a member"):
        council.transact("execute", 0, sender=outsider)
    result = council.transact("execute", 0, sender=m3)
    assert bridge.logs(result, "SequencerChanged") == [{"previous": evm.accounts[9], "sequencer": outsider}]
    assert bridge.call("sequencer") == outsider
    with pytest.raises(TxFailed, match="already executed"):
        council.transact("execute", 0, sender=m1)
    with pytest.raises(TxFailed, match="already executed"):
        council.transact("approve", 0, sender=m3)


def test_council_lists_a_new_asset_and_spends_the_treasury(
    evm: Harness, council: Contract, bridge: Contract
) -> None:
    owner = evm.accounts[0]
    token = evm.deploy("ERC20", ["string", "string", "uint8", "address"], ["Other", "OTH", 18, owner])
    pass_proposal(evm, council, BRIDGE_ADDRESS, bridge.calldata("listAsset", token.address, 7))
    assert bridge.call("tokenOf", 7) == token.address and bridge.call("assetIdOf", token.address) == 7
    with pytest.raises(TxFailed, match="token already listed"):
        pass_proposal(evm, council, BRIDGE_ADDRESS, bridge.calldata("listAsset", token.address, 8))
    evm.send(owner, GOVERNANCE_ADDRESS, b"", value=5 * OKB)
    assert evm.balance(GOVERNANCE_ADDRESS) == 5 * OKB
    receiver = evm.accounts[8]
    before = evm.balance(receiver)
    pass_proposal(evm, council, receiver, b"", value=2 * OKB)
    assert evm.balance(receiver) == before + 2 * OKB
    assert evm.balance(GOVERNANCE_ADDRESS) == 3 * OKB


def test_council_constructor_rejects_bad_membership(evm: Harness) -> None:
    m = evm.accounts[1]
    for members, threshold, reason in [
        ([m], 0, "zero threshold"),
        ([m], 2, "threshold above member count"),
        ([m, m], 1, "duplicate member"),
    ]:
        with pytest.raises(TxFailed, match=reason):
            evm.deploy("Governance", ["address[]", "uint256"], [members, threshold])


# ------------------------------------------------------------------ devnet ERC-20


def test_erc20_transfer_allowance_mint(evm: Harness) -> None:
    usdt = evm.contract("ERC20", USDT_ADDRESS)
    owner, a, b = evm.accounts[0], evm.accounts[5], evm.accounts[6]
    result = usdt.transact("transfer", b, 5, sender=a)
    assert usdt.logs(result, "Transfer") == [{"sender": a, "receiver": b, "value": 5}]
    with pytest.raises(TxFailed, match="exceeds balance"):
        usdt.transact("transfer", b, 10**30, sender=a)
    with pytest.raises(TxFailed, match="insufficient allowance"):
        usdt.transact("transferFrom", a, b, 1, sender=b)
    usdt.transact("approve", b, 3, sender=a)
    usdt.transact("transferFrom", a, b, 3, sender=b)
    assert usdt.call("allowance", a, b) == 0
    with pytest.raises(TxFailed, match="caller is not the owner"):
        usdt.transact("mint", a, 1, sender=a)
    supply = usdt.call("totalSupply")
    usdt.transact("mint", a, 7, sender=owner)
    assert usdt.call("totalSupply") == supply + 7
    with pytest.raises(TxFailed, match="zero amount"):
        usdt.transact("mint", a, 0, sender=owner)
    usdt.transact("transferOwnership", a, sender=owner)
    with pytest.raises(TxFailed, match="caller is not the owner"):
        usdt.transact("mint", a, 1, sender=owner)


def test_erc20_zero_address_guards(evm: Harness) -> None:
    usdt = evm.contract("ERC20", USDT_ADDRESS)
    owner, a = evm.accounts[0], evm.accounts[5]
    zero = "0x" + "00" * 20
    for name, args, sender, reason in [
        ("transfer", (zero, 1), a, "transfer to the zero address"),
        ("approve", (zero, 1), a, "approve to the zero address"),
        ("mint", (zero, 1), owner, "mint to the zero address"),
        ("transferOwnership", (zero,), owner, "zero owner"),
    ]:
        with pytest.raises(TxFailed, match=reason):
            usdt.transact(name, *args, sender=sender)
    with pytest.raises(TxFailed, match="zero owner"):
        evm.deploy("ERC20", ["string", "string", "uint8", "address"], ["X", "X", 6, zero])


def test_constructor_guards_of_staking_and_council(evm: Harness) -> None:
    zero = "0x" + "00" * 20
    with pytest.raises(TxFailed, match="Staking: zero bridge"):
        evm.deploy("Staking", ["address", "address", "uint256"], [zero, GOVERNANCE_ADDRESS, 1])
    with pytest.raises(TxFailed, match="Staking: zero governance"):
        evm.deploy("Staking", ["address", "address", "uint256"], [BRIDGE_ADDRESS, zero, 1])
    with pytest.raises(TxFailed, match="zero member"):
        evm.deploy("Governance", ["address[]", "uint256"], [[zero], 1])
    council = evm.contract("Governance", GOVERNANCE_ADDRESS)
    with pytest.raises(TxFailed, match="zero target"):
        council.transact("propose", zero, 0, b"", sender=evm.accounts[1])


def test_staking_keeps_working_after_the_bridge_froze(
    evm: Harness, staking: Contract, bridge: Contract
) -> None:
    """A frozen bridge never blocks stakers' OKB: stake changes are still queued (and never consumed)."""
    staker = evm.accounts[4]
    staking.transact("stake", sender=staker, value=OKB)
    evm.mine(25)
    bridge.transact("freeze", sender=staker)
    staking.transact("requestUnstake", OKB, sender=staker)
    evm.mine(20)
    staking.transact("withdraw", sender=staker)
    assert evm.balance(STAKING_ADDRESS) == 0
