"""The L1 genesis builder: fixed addresses, constructor state, dev accounts, working contracts."""

from __future__ import annotations

import copy

import pytest
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_typing import Address
from eth_utils import to_canonical_address

from genesis.builder import GenesisError, L1Genesis, build_l1_genesis, load_genesis_spec
from node.evm.compile import load_artifact
from node.evm.contracts import (
    BRIDGE_ADDRESS,
    GOVERNANCE_ADDRESS,
    KIND_DEPOSIT,
    STAKING_ADDRESS,
    USDT_ADDRESS,
    WBTC_ADDRESS,
)
from tests.contracts.harness import Harness, message_hash, next_rolling_hash


def test_dev_accounts_are_the_well_known_mnemonic_keys() -> None:
    spec = load_genesis_spec()
    Account.enable_unaudited_hdwallet_features()
    assert "DEVNET ONLY" in spec["_warning"]
    for entry in spec["devAccounts"]:
        derived = Account.from_mnemonic(spec["devMnemonic"], account_path=f"m/44'/60'/0'/0/{entry['index']}")
        assert derived.address == entry["address"]
        assert "0x" + derived.key.hex().removeprefix("0x") == entry["privateKey"]


def test_contracts_sit_at_fixed_addresses_with_their_runtime_code(devnet_genesis: L1Genesis) -> None:
    expected = {
        BRIDGE_ADDRESS: "Bridge",
        STAKING_ADDRESS: "Staking",
        GOVERNANCE_ADDRESS: "Governance",
        USDT_ADDRESS: "ERC20",
        WBTC_ADDRESS: "ERC20",
    }
    for address, name in expected.items():
        account = devnet_genesis.alloc[to_canonical_address(address)]
        assert account.code == load_artifact(name).runtime_bytecode
        assert account.nonce == 1
        assert account.storage
    assert devnet_genesis.chain_id == 1960
    assert devnet_genesis.asset_ids == {"OKB": 0, "USDT": 1, "WBTC": 2}


def test_constructor_state_and_cross_references(evm: Harness) -> None:
    bridge = evm.contract("Bridge", BRIDGE_ADDRESS)
    staking = evm.contract("Staking", STAKING_ADDRESS)
    council = evm.contract("Governance", GOVERNANCE_ADDRESS)
    usdt = evm.contract("ERC20", USDT_ADDRESS)
    wbtc = evm.contract("ERC20", WBTC_ADDRESS)
    accounts = evm.accounts
    assert bridge.call("sequencer") == accounts[9]
    assert bridge.call("governance") == GOVERNANCE_ADDRESS
    assert bridge.call("staking") == STAKING_ADDRESS
    assert bridge.call("forcedInclusionDelay") == 20
    assert bridge.call("tokenOf", 1) == USDT_ADDRESS
    assert bridge.call("tokenOf", 2) == WBTC_ADDRESS
    assert bridge.call("assetIdOf", WBTC_ADDRESS) == 2
    assert [bridge.call("isListed", i) for i in (0, 1, 2, 3)] == [True, True, True, False]
    assert bridge.call("frozen") is False
    assert bridge.call("messageCount") == 0
    assert staking.call("bridge") == BRIDGE_ADDRESS
    assert staking.call("governance") == GOVERNANCE_ADDRESS
    assert council.call("threshold") == 2
    assert [council.call("members", i) for i in range(3)] == accounts[1:4]
    assert (usdt.call("decimals"), usdt.call("symbol")) == (6, "USDT")
    assert (wbtc.call("decimals"), wbtc.call("symbol")) == (8, "WBTC")
    assert usdt.call("balanceOf", accounts[5]) == 1_000_000 * 10**6
    assert usdt.call("totalSupply") == sum(
        int(v) for v in load_genesis_spec()["assets"][1]["balances"].values()
    )
    assert evm.balance(accounts[5]) == 10_000 * 10**18


def test_usdt_approve_and_deposit_from_a_dev_account_queues_a_message(evm: Harness) -> None:
    bridge = evm.contract("Bridge", BRIDGE_ADDRESS)
    usdt = evm.contract("ERC20", USDT_ADDRESS)
    trader = evm.accounts[5]
    usdt.transact("approve", BRIDGE_ADDRESS, 250 * 10**6, sender=trader)
    result = bridge.transact("deposit", USDT_ADDRESS, trader, 250 * 10**6, sender=trader)
    (event,) = bridge.logs(result, "MessageQueued")
    payload = abi_encode(["address", "address", "uint32", "uint256"], [trader, trader, 1, 250 * 10**6])
    assert event["index"] == 0 and event["kind"] == KIND_DEPOSIT and event["payload"] == payload
    assert event["l1Block"] == result.block_number and event["deadline"] == result.block_number + 20
    assert event["rollingHash"] == next_rolling_hash(b"\x00" * 32, message_hash(0, KIND_DEPOSIT, payload))
    assert usdt.call("balanceOf", BRIDGE_ADDRESS) == 250 * 10**6


def test_genesis_is_deterministic(devnet_genesis: L1Genesis) -> None:
    again = build_l1_genesis(load_genesis_spec())
    assert again.state() == devnet_genesis.state()
    assert (
        Harness(again).chain.get_canonical_head().state_root
        == Harness(devnet_genesis).chain.get_canonical_head().state_root
    )


def test_tradezone_genesis_root_override_becomes_the_first_prev_root() -> None:
    root = bytes(range(32))
    genesis = build_l1_genesis(load_genesis_spec(), tradezone_genesis_root=root)
    evm = Harness(genesis)
    assert evm.contract("Bridge", BRIDGE_ADDRESS).call("lastCommittedRoot") == root


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["assets"][2].__setitem__("assetId", 1), "used twice"),
        (lambda s: s["bridge"].__setitem__("forcedInclusionDelay", 2.5), "must be an integer"),
        (lambda s: s["governance"].__setitem__("threshold", 4), "constructor of Governance failed"),
        (lambda s: s["bridge"].__setitem__("sequencer", "0x1234"), "not an address"),
        (lambda s: s.pop("bridge"), "no 'bridge' section"),
        (lambda s: s["header"].__setitem__("extraData", "0x" + "ab" * 33), "at most 32"),
        (lambda s: s["header"].__setitem__("gasLimit", 100), "protocol minimum"),
        (lambda s: s["devAccounts"][0].__setitem__("balance", -1), "must not be negative"),
        (
            lambda s: s["contracts"].__setitem__("Bridge", s["devAccounts"][0]["address"]),
            "also a funded account",
        ),
    ],
)
def test_invalid_specs_are_refused(mutate: object, message: str) -> None:
    spec = copy.deepcopy(load_genesis_spec())
    mutate(spec)  # type: ignore[operator]
    with pytest.raises(GenesisError, match=message):
        build_l1_genesis(spec)


def test_state_form_matches_alloc(devnet_genesis: L1Genesis) -> None:
    state = devnet_genesis.state()
    bridge = state[Address(to_canonical_address(BRIDGE_ADDRESS))]
    assert bridge["code"] and bridge["nonce"] == 1 and bridge["balance"] == 0


def test_extra_alloc_entries_are_funded() -> None:
    spec = copy.deepcopy(load_genesis_spec())
    spec["alloc"] = {"0x00000000000000000000000000000000000000aa": "12345"}
    genesis = build_l1_genesis(spec)
    assert genesis.alloc[bytes.fromhex("00" * 19 + "aa")].balance == 12345
    assert Harness(genesis).balance("0x00000000000000000000000000000000000000aa") == 12345
