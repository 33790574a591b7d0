"""Bridge: deposits, the L1 message queue, batch commits and withdrawal claims on a real py-evm chain."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from genesis.builder import L1Genesis, build_l1_genesis, load_genesis_spec
from node.evm.contracts import (
    BRIDGE_ADDRESS,
    EMPTY_TRIE_ROOT,
    GOVERNANCE_ADDRESS,
    KIND_DEPOSIT,
    KIND_FORCED_WITHDRAWAL,
    MAX_BATCH_DATA,
    NATIVE_TOKEN,
    USDT_ADDRESS,
    WBTC_ADDRESS,
)
from tests.contracts.harness import Contract, Harness, TxFailed, TxResult, message_hash, next_rolling_hash

OKB = 10**18
USDT = 10**6
ROOT_1 = keccak(b"root 1")
ROOT_2 = keccak(b"root 2")
ZERO32 = b"\x00" * 32


@pytest.fixture
def bridge(evm: Harness) -> Contract:
    return evm.contract("Bridge", BRIDGE_ADDRESS)


@pytest.fixture
def usdt(evm: Harness) -> Contract:
    return evm.contract("ERC20", USDT_ADDRESS)


def rolling_hashes(bridge: Contract) -> list[bytes]:
    return [bridge.call("rollingHashAt", i) for i in range(bridge.call("messageCount"))]


def commit(bridge: Contract, evm: Harness, **fields: Any) -> TxResult:
    """commitBatch with sensible defaults: from the last root, consuming the whole queue."""
    cursor = fields.pop("newCursor", bridge.call("messageCount"))
    if "rollingHash" in fields:
        rolling = fields.pop("rollingHash")
    else:
        rolling = bridge.call("rollingHashAt", cursor - 1) if cursor else ZERO32
    args = [
        fields.pop("prevRoot", bridge.call("lastCommittedRoot")),
        fields.pop("newRoot", ROOT_1),
        fields.pop("tzBlock", 10 * (bridge.call("batchCount") + 1)),
        cursor,
        rolling,
        fields.pop("withdrawals", []),
        fields.pop("data", b"batch"),
    ]
    sender = fields.pop("sender", evm.accounts[9])
    assert not fields
    return bridge.transact("commitBatch", *args, sender=sender)


# ------------------------------------------------------------------ deposits and the queue


def test_native_deposit_queues_a_deposit_of_asset_0(evm: Harness, bridge: Contract) -> None:
    trader, other = evm.accounts[5], evm.accounts[6]
    result = bridge.transact("depositNative", other, sender=trader, value=3 * OKB)
    (event,) = bridge.logs(result, "MessageQueued")
    payload = abi_encode(["address", "address", "uint32", "uint256"], [trader, other, 0, 3 * OKB])
    assert (event["index"], event["kind"], event["payload"]) == (0, KIND_DEPOSIT, payload)
    result = bridge.transact("deposit", NATIVE_TOKEN, trader, OKB, sender=trader, value=OKB)
    (event,) = bridge.logs(result, "MessageQueued")
    assert event["index"] == 1
    assert evm.balance(BRIDGE_ADDRESS) == 4 * OKB


def test_queue_indexes_deadlines_and_rolling_hashes_follow_the_spec(evm: Harness, bridge: Contract) -> None:
    usdt = evm.contract("ERC20", USDT_ADDRESS)
    wbtc = evm.contract("ERC20", WBTC_ADDRESS)
    a, b = evm.accounts[5], evm.accounts[6]
    usdt.transact("approve", BRIDGE_ADDRESS, 10**30, sender=a)
    wbtc.transact("approve", BRIDGE_ADDRESS, 10**30, sender=b)
    fee = bridge.call("forcedWithdrawalFee")
    calls = [
        (a, BRIDGE_ADDRESS, bridge.calldata("deposit", USDT_ADDRESS, b, 7 * USDT), 0, 500_000),
        (b, BRIDGE_ADDRESS, bridge.calldata("deposit", WBTC_ADDRESS, a, 5), 0, 500_000),
        (a, BRIDGE_ADDRESS, bridge.calldata("depositNative", a), 2, 500_000),
        (b, BRIDGE_ADDRESS, bridge.calldata("requestForcedWithdrawal", 1), fee, 500_000),
    ]
    results = evm.send_many(calls)
    assert all(r.ok for r in results)
    events = [e for r in results for e in bridge.logs(r, "MessageQueued")]
    expected_payloads = [
        (KIND_DEPOSIT, abi_encode(["address", "address", "uint32", "uint256"], [a, b, 1, 7 * USDT])),
        (KIND_DEPOSIT, abi_encode(["address", "address", "uint32", "uint256"], [b, a, 2, 5])),
        (KIND_DEPOSIT, abi_encode(["address", "address", "uint32", "uint256"], [a, a, 0, 2])),
        (KIND_FORCED_WITHDRAWAL, abi_encode(["address", "uint32"], [b, 1])),
    ]
    rolling = ZERO32
    block = results[0].block_number
    for index, (event, (kind, payload)) in enumerate(zip(events, expected_payloads, strict=True)):
        rolling = next_rolling_hash(rolling, message_hash(index, kind, payload))
        assert event == {
            "index": index,
            "kind": kind,
            "payload": payload,
            "l1Block": block,
            "deadline": block + 20,
            "rollingHash": rolling,
        }
        assert bridge.call("rollingHashAt", index) == rolling
        assert bridge.call("messageDeadline", index) == block + 20
    assert bridge.call("messageCount") == 4
    with pytest.raises(TxFailed, match="no such message"):
        bridge.call("rollingHashAt", 4)


@pytest.mark.parametrize(
    ("token", "amount", "value", "reason"),
    [
        (USDT_ADDRESS, 0, 0, "Bridge: zero amount"),
        (NATIVE_TOKEN, 0, 0, "Bridge: zero amount"),
        (NATIVE_TOKEN, 5, 4, "Bridge: value does not match amount"),
        (USDT_ADDRESS, 5, 5, "Bridge: value sent with a token deposit"),
        (GOVERNANCE_ADDRESS, 5, 0, "Bridge: token not listed"),
        (USDT_ADDRESS, 10**30, 0, "ERC20: insufficient allowance"),
    ],
)
def test_bad_deposits_revert_and_queue_nothing(
    evm: Harness, bridge: Contract, token: str, amount: int, value: int, reason: str
) -> None:
    trader = evm.accounts[5]
    evm.contract("ERC20", USDT_ADDRESS).transact("approve", BRIDGE_ADDRESS, 100, sender=trader)
    with pytest.raises(TxFailed, match=reason):
        bridge.transact("deposit", token, trader, amount, sender=trader, value=value)
    assert bridge.call("messageCount") == 0


def test_zero_native_deposit_and_zero_recipient_revert(evm: Harness, bridge: Contract) -> None:
    trader = evm.accounts[5]
    with pytest.raises(TxFailed, match="Bridge: zero amount"):
        bridge.transact("depositNative", trader, sender=trader, value=0)
    with pytest.raises(TxFailed, match="Bridge: zero recipient"):
        bridge.transact("depositNative", NATIVE_TOKEN, sender=trader, value=1)


def test_unlisted_erc20_reverts(evm: Harness, bridge: Contract) -> None:
    owner = evm.accounts[0]
    token = evm.deploy("ERC20", ["string", "string", "uint8", "address"], ["Other", "OTH", 18, owner])
    token.transact("mint", owner, 1000, sender=owner)
    token.transact("approve", BRIDGE_ADDRESS, 1000, sender=owner)
    with pytest.raises(TxFailed, match="Bridge: token not listed"):
        bridge.transact("deposit", token.address, owner, 1000, sender=owner)


def test_only_staking_queues_stake_changes(evm: Harness, bridge: Contract) -> None:
    with pytest.raises(TxFailed, match="Bridge: caller is not staking"):
        bridge.transact("queueStakeChange", evm.accounts[4], 5, sender=evm.accounts[4])


def test_forced_withdrawal_request_charges_the_exact_fee_to_the_treasury(
    evm: Harness, bridge: Contract
) -> None:
    trader = evm.accounts[5]
    fee = bridge.call("forcedWithdrawalFee")
    assert fee > 0
    with pytest.raises(TxFailed, match="wrong forced withdrawal fee"):
        bridge.transact("requestForcedWithdrawal", 1, sender=trader, value=fee - 1)
    with pytest.raises(TxFailed, match="asset not listed"):
        bridge.transact("requestForcedWithdrawal", 1000, sender=trader, value=fee)
    result = bridge.transact("requestForcedWithdrawal", 1, sender=trader, value=fee)
    (event,) = bridge.logs(result, "MessageQueued")
    assert event["kind"] == KIND_FORCED_WITHDRAWAL
    assert event["payload"] == abi_encode(["address", "uint32"], [trader, 1])
    assert evm.balance(GOVERNANCE_ADDRESS) == fee
    assert evm.balance(BRIDGE_ADDRESS) == 0


# ------------------------------------------------------------------ batches


def test_commit_records_the_batch_and_advances_root_and_cursor(evm: Harness, bridge: Contract) -> None:
    trader = evm.accounts[5]
    bridge.transact("depositNative", trader, sender=trader, value=OKB)
    bridge.transact("depositNative", trader, sender=trader, value=OKB)
    assert bridge.call("lastCommittedRoot") == EMPTY_TRIE_ROOT
    result = commit(bridge, evm, newCursor=1, data=b"\x01\x02\x03")
    (event,) = bridge.logs(result, "BatchCommitted")
    assert event == {
        "batchIndex": 0,
        "stateRoot": ROOT_1,
        "tzBlock": 10,
        "messageCursor": 1,
        "dataHash": keccak(b"\x01\x02\x03"),
        "withdrawalCount": 0,
    }
    assert bridge.call("batches", 0) == (ROOT_1, 10, result.block_number, 1, keccak(b"\x01\x02\x03"))
    assert (bridge.call("batchCount"), bridge.call("lastCommittedRoot"), bridge.call("committedCursor")) == (
        1,
        ROOT_1,
        1,
    )
    commit(bridge, evm, newRoot=ROOT_2)
    assert (bridge.call("batchCount"), bridge.call("lastCommittedRoot"), bridge.call("committedCursor")) == (
        2,
        ROOT_2,
        2,
    )
    commit(bridge, evm, newRoot=ROOT_1)  # an empty batch (same cursor) is allowed
    assert bridge.call("committedCursor") == 2


def test_commit_guards(evm: Harness, bridge: Contract) -> None:
    trader = evm.accounts[5]
    bridge.transact("depositNative", trader, sender=trader, value=OKB)
    bridge.transact("depositNative", trader, sender=trader, value=OKB)
    with pytest.raises(TxFailed, match="caller is not the sequencer"):
        commit(bridge, evm, sender=evm.accounts[1])
    with pytest.raises(TxFailed, match="prevRoot is not the last committed root"):
        commit(bridge, evm, prevRoot=ROOT_2)
    with pytest.raises(TxFailed, match="cursor past the queue"):
        commit(bridge, evm, newCursor=3, rollingHash=ZERO32)
    with pytest.raises(TxFailed, match="rolling hash mismatch"):
        commit(bridge, evm, newCursor=2, rollingHash=bridge.call("rollingHashAt", 0))
    commit(bridge, evm, newCursor=2)
    with pytest.raises(TxFailed, match="cursor goes back"):
        commit(bridge, evm, newCursor=1)
    with pytest.raises(TxFailed, match="tzBlock does not advance"):
        commit(bridge, evm, tzBlock=10)
    assert bridge.call("batchCount") == 1


def test_batch_data_is_bounded_and_a_100kb_batch_is_affordable(evm: Harness, bridge: Contract) -> None:
    """Execution gas of commitBatch with 100 KB of (incompressible) data against an empty batch.

    The transaction itself pays the Prague calldata floor (EIP-7623: 40 gas per non-zero byte),
    under which the execution cost of copying and hashing the data disappears."""
    import random

    data = random.Random(7).randbytes(100 * 1024)
    small = commit(bridge, evm, data=b"")
    big = commit(bridge, evm, newRoot=ROOT_2, data=data)
    assert bridge.call("batches", 1)[4] == keccak(data)
    execution_small = small.computation.get_gas_used()
    execution_big = big.computation.get_gas_used()
    floor = 21_000 + 10 * sum(4 if byte else 1 for byte in data)
    print(
        f"\ncommitBatch: empty data tx {small.gas_used} (execution {execution_small}); 100 KB data tx "
        f"{big.gas_used} (execution {execution_big}, calldata floor {floor})"
    )
    assert execution_big - execution_small < 100_000
    assert big.gas_used <= max(floor, 21_000 + 16 * len(data) + execution_big) + 10_000
    with pytest.raises(TxFailed):
        commit(bridge, evm, newRoot=ROOT_1, data=b"\x01" * (MAX_BATCH_DATA + 1))
    commit(bridge, evm, newRoot=ROOT_1, data=b"\x01" * MAX_BATCH_DATA)


# ------------------------------------------------------------------ withdrawals and claims


def withdrawal(wid: int, recipient: str, asset: int, amount: int) -> tuple[int, str, int, int]:
    return (wid, recipient, asset, amount)


def fund_bridge(evm: Harness, bridge: Contract, usdt: Contract) -> None:
    trader = evm.accounts[5]
    usdt.transact("approve", BRIDGE_ADDRESS, 1000 * USDT, sender=trader)
    bridge.transact("deposit", USDT_ADDRESS, trader, 1000 * USDT, sender=trader)
    bridge.transact("depositNative", trader, sender=trader, value=10 * OKB)


def test_claims_pay_exactly_once(evm: Harness, bridge: Contract, usdt: Contract) -> None:
    fund_bridge(evm, bridge, usdt)
    alice, bob = evm.accounts[6], evm.accounts[7]
    w1, w2 = withdrawal(1, alice, 1, 400 * USDT), withdrawal(2, bob, 0, 3 * OKB)
    commit(bridge, evm, withdrawals=[w1, w2])
    assert bridge.call("withdrawalState", *w1) == (2, 0)
    usdt_before, okb_before = usdt.call("balanceOf", alice), evm.balance(bob)
    result = bridge.transact("claim", *w1, sender=evm.accounts[0])  # anyone may relay the claim
    assert bridge.logs(result, "WithdrawalClaimed") == [
        {"withdrawalId": 1, "recipient": alice, "assetId": 1, "amount": 400 * USDT}
    ]
    bridge.transact("claim", *w2, sender=evm.accounts[0])
    assert usdt.call("balanceOf", alice) == usdt_before + 400 * USDT
    assert evm.balance(bob) == okb_before + 3 * OKB
    assert bridge.call("withdrawalState", *w1) == (3, 0)
    with pytest.raises(TxFailed, match="already claimed"):
        bridge.transact("claim", *w1, sender=alice)
    with pytest.raises(TxFailed, match="unknown withdrawal"):
        bridge.transact("claim", 1, alice, 1, 401 * USDT, sender=alice)
    with pytest.raises(TxFailed, match="unknown withdrawal"):
        bridge.transact("claim", 3, alice, 1, 400 * USDT, sender=alice)


def test_bad_withdrawal_lists_revert_the_whole_commit(evm: Harness, bridge: Contract) -> None:
    alice = evm.accounts[6]
    w = withdrawal(1, alice, 1, 5)
    for bad, reason in [
        ([w, w], "duplicate withdrawal"),
        ([withdrawal(1, alice, 1000, 5)], "unlisted asset"),
        ([withdrawal(1, alice, 1, 0)], "zero withdrawal"),
        ([withdrawal(1, NATIVE_TOKEN, 1, 5)], "zero address"),
    ]:
        with pytest.raises(TxFailed, match=reason):
            commit(bridge, evm, withdrawals=bad)
    assert bridge.call("batchCount") == 0
    commit(bridge, evm, withdrawals=[w])
    with pytest.raises(TxFailed, match="duplicate withdrawal"):
        commit(bridge, evm, newRoot=ROOT_2, withdrawals=[w])


@pytest.fixture(scope="module")
def slow_finality_genesis() -> L1Genesis:
    spec = copy.deepcopy(load_genesis_spec())
    spec["bridge"]["finalizationDelay"] = 5
    return build_l1_genesis(spec)


def test_claim_waits_for_finality(slow_finality_genesis: L1Genesis) -> None:
    evm = Harness(slow_finality_genesis)
    bridge = evm.contract("Bridge", BRIDGE_ADDRESS)
    usdt = evm.contract("ERC20", USDT_ADDRESS)
    fund_bridge(evm, bridge, usdt)
    alice = evm.accounts[6]
    w = withdrawal(9, alice, 1, 10 * USDT)
    committed = commit(bridge, evm, withdrawals=[w])
    assert bridge.call("withdrawalState", *w) == (1, 0)
    evm.mine(3)  # the claim below lands in block committed + 4
    with pytest.raises(TxFailed, match="batch not final"):
        bridge.transact("claim", *w, sender=alice)
    assert evm.block_number == committed.block_number + 4
    bridge.transact("claim", *w, sender=alice)  # mined in block committed + 5
    assert bridge.call("withdrawalState", *w) == (3, 0)


def test_set_sequencer_and_list_asset_are_governance_only(evm: Harness, bridge: Contract) -> None:
    with pytest.raises(TxFailed, match="caller is not governance"):
        bridge.transact("setSequencer", evm.accounts[1], sender=evm.accounts[9])
    with pytest.raises(TxFailed, match="caller is not governance"):
        bridge.transact("listAsset", GOVERNANCE_ADDRESS, 7, sender=evm.accounts[0])


def test_bridge_constructor_guards(evm: Harness) -> None:
    zero = "0x" + "00" * 20
    types = [
        "address",
        "address",
        "address",
        "uint256",
        "uint256",
        "uint256",
        "bytes32",
        "address[]",
        "uint32[]",
    ]
    good = [
        evm.accounts[9],
        GOVERNANCE_ADDRESS,
        BRIDGE_ADDRESS,
        20,
        0,
        0,
        EMPTY_TRIE_ROOT,
        [USDT_ADDRESS],
        [1],
    ]
    for index, value, reason in [
        (0, zero, "zero sequencer"),
        (1, zero, "zero governance"),
        (2, zero, "zero staking"),
        (3, 0, "zero forced inclusion delay"),
        (8, [1, 2], "listing length mismatch"),
        (7, [USDT_ADDRESS, USDT_ADDRESS], "token already listed"),
    ]:
        args = list(good)
        args[index] = value
        if index == 7:
            args[8] = [1, 2]
        with pytest.raises(TxFailed, match=reason):
            evm.deploy("Bridge", types, args)
    with pytest.raises(TxFailed, match="asset id already used"):
        evm.deploy("Bridge", types, [*good[:7], [USDT_ADDRESS, WBTC_ADDRESS], [1, 1]])
    evm.deploy("Bridge", types, good)
