"""web3.py 8 (HTTPProvider, unmodified) against the project's eth_* server on a running devnet."""

from __future__ import annotations

from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_utils import keccak
from hexbytes import HexBytes
from trie import HexaryTrie
from web3 import HTTPProvider, Web3
from web3.exceptions import BlockNotFound, ContractLogicError, Web3RPCError

from node.config import L1_CHAIN_ID, address_of
from tests.evm.conftest import FUNDED_KEYS, DevnetThread

KEY = FUNDED_KEYS[0]
OTHER = FUNDED_KEYS[1]


def send(w3: Web3, key: bytes, tx: dict[str, Any]) -> Any:
    account = Account.from_key(key)
    tx.setdefault("chainId", L1_CHAIN_ID)
    tx.setdefault("from", account.address)
    tx.setdefault("nonce", w3.eth.get_transaction_count(account.address, "pending"))
    signed = account.sign_transaction(tx)
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30, poll_latency=0.05)


@pytest.fixture
def w3(devnet_thread: DevnetThread) -> Web3:
    return Web3(HTTPProvider(devnet_thread.url))


def test_web3_reads_identity_blocks_and_balances(w3: Web3, devnet_thread: DevnetThread) -> None:
    assert w3.is_connected()
    assert w3.eth.chain_id == L1_CHAIN_ID and w3.net.version == str(L1_CHAIN_ID)
    assert w3.client_version.startswith("exos-node/")
    assert w3.eth.syncing is False and w3.eth.accounts == []
    address = Account.from_key(KEY).address
    genesis = w3.eth.get_block("earliest")
    assert genesis["number"] == 0
    assert w3.eth.get_balance(address, "earliest") == 1_000 * 10**18
    latest = w3.eth.get_block("latest")
    for tag in ("safe", "finalized", "pending"):
        assert w3.eth.get_block(tag)["number"] >= latest["number"]
    assert w3.eth.get_block(latest["hash"])["number"] == latest["number"]
    assert w3.eth.get_balance(address, latest["hash"]) == w3.eth.get_balance(address, latest["number"])
    with pytest.raises(BlockNotFound):
        w3.eth.get_block(10**9)
    assert w3.eth.gas_price > 0 and w3.eth.max_priority_fee > 0
    history = w3.eth.fee_history(3, "latest", [50])
    assert len(history["baseFeePerGas"]) == len(history["gasUsedRatio"]) + 1


def test_web3_sends_all_transaction_types_and_reads_receipts(w3: Web3) -> None:
    sender = Account.from_key(KEY).address
    to = Account.from_key(OTHER).address
    before = w3.eth.get_balance(to)
    gas_price = w3.eth.gas_price
    legacy = send(w3, KEY, {"to": to, "value": 1, "gas": 21_000, "gasPrice": gas_price})
    access_list = send(w3, KEY, {"to": to, "value": 2, "gas": 21_000, "gasPrice": gas_price, "accessList": []})
    dynamic = send(w3, KEY, {"to": to, "value": 3, "gas": 21_000, "maxFeePerGas": 2 * gas_price,
                             "maxPriorityFeePerGas": 10**9})
    assert [r["type"] for r in (legacy, access_list, dynamic)] == [0, 1, 2]
    assert all(r["status"] == 1 for r in (legacy, access_list, dynamic))
    assert w3.eth.get_balance(to) == before + 6
    tx = w3.eth.get_transaction(dynamic["transactionHash"])
    assert tx["from"] == sender and tx["value"] == 3 and tx["blockNumber"] == dynamic["blockNumber"]
    block = w3.eth.get_block(dynamic["blockNumber"], full_transactions=True)
    assert dynamic["transactionHash"] in [t["hash"] for t in block["transactions"]]
    with pytest.raises(Web3RPCError, match="nonce too low"):
        w3.eth.send_raw_transaction(
            Account.from_key(KEY).sign_transaction(
                {"to": to, "value": 9, "gas": 21_000, "gasPrice": gas_price, "nonce": 0, "chainId": L1_CHAIN_ID}
            ).raw_transaction
        )


def test_web3_contract_deploy_call_revert_estimate_logs_and_proof(
    w3: Web3, ping_artifact: dict[str, Any]
) -> None:
    sender = Account.from_key(KEY).address
    factory = w3.eth.contract(abi=ping_artifact["abi"], bytecode=ping_artifact["bytecode"])
    deploy_tx = factory.constructor().build_transaction({"from": sender, "nonce": w3.eth.get_transaction_count(sender)})
    receipt = send(w3, KEY, deploy_tx)
    contract = w3.eth.contract(address=receipt["contractAddress"], abi=ping_artifact["abi"])
    assert w3.eth.get_code(contract.address) != b""
    for n in (4, 6):
        tx = contract.functions.ping(n).build_transaction({"from": sender, "nonce": w3.eth.get_transaction_count(sender, "pending")})
        assert send(w3, KEY, tx)["status"] == 1
    assert contract.functions.counter().call() == 10
    assert w3.eth.get_storage_at(contract.address, 0) == HexBytes((10).to_bytes(32, "big"))
    with pytest.raises(ContractLogicError, match="zero ping") as reverted:
        contract.functions.ping(0).call({"from": sender})
    assert reverted.value.data is not None and str(reverted.value.data).startswith("0x08c379a0")
    with pytest.raises(ContractLogicError, match="zero ping"):
        contract.functions.ping(0).estimate_gas({"from": sender})
    with pytest.raises(ContractLogicError, match="always fails"):
        contract.functions.fail_view().call()
    events = contract.events.Ping.get_logs(from_block=0)
    assert [e["args"]["n"] for e in events] == [4, 6] and events[1]["args"]["total"] == 10
    by_topic = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "address": contract.address,
                                "topics": [None, None, [Web3.to_hex((6).to_bytes(32, "big"))]]})
    assert len(by_topic) == 1 and by_topic[0]["transactionHash"] == events[1]["transactionHash"]
    block = w3.eth.get_block("latest")
    proof = w3.eth.get_proof(contract.address, [0], block["number"])
    account = HexaryTrie.get_from_proof(
        bytes(block["stateRoot"]), keccak(bytes.fromhex(contract.address[2:])), [rlp.decode(bytes(n)) for n in proof["accountProof"]]
    )
    nonce, balance, storage_root, code_hash = rlp.decode(account)
    assert storage_root == bytes(proof["storageHash"]) and code_hash == bytes(proof["codeHash"])
    assert int.from_bytes(proof["storageProof"][0]["value"], "big") == 10
    assert address_of(KEY) != bytes.fromhex(contract.address[2:])
