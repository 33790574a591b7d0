"""End to end: `exos devnet` as a real process, driven by web3.py as a real client.

Reads the chain id, deposits OKB and USDT (approve + deposit) to the bridge from a dev key,
reads the bridge's MessageQueued events with eth_getLogs (checking payloads and the rolling
hash of docs/interfaces.md), and verifies an eth_getProof account proof of the bridge against
the block's state root with trie/rlp.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import rlp
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_utils import keccak
from trie import HexaryTrie
from web3 import HTTPProvider, Web3

pytestmark = pytest.mark.slow

URL_LINE = re.compile(r"eth_\* JSON-RPC on (http://\S+),")
TRADER = 5  # dev account index (docs/interfaces.md: accounts 5-7 are traders)
KIND_DEPOSIT = 1
OKB_ID, USDT_ID = 0, 1


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Web3, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("e2e") / "devnet"
    process = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "devnet", "--data-dir", str(data_dir), "--eth-port", "0",
         "--tz-port", "0", "--l1-block-time", "0.2", "--no-demo"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    lines: list[str] = []
    url = None
    for line in process.stdout:
        lines.append(line)
        found = URL_LINE.search(line)
        if found:
            url = found.group(1)
            break
    assert url, "devnet did not start:\n" + "".join(lines)
    threading.Thread(target=lambda: [lines.append(x) for x in process.stdout or []], daemon=True).start()
    deployment = json.loads((data_dir / "deployment.json").read_text())
    try:
        yield Web3(HTTPProvider(url)), deployment
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def transact(w3: Web3, key: str, call: Any, value: int = 0) -> Any:
    account = Account.from_key(key)
    tx = call.build_transaction(
        {"from": account.address, "value": value, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    )
    tx_hash = w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05)
    assert receipt["status"] == 1
    return receipt


def test_deposits_queue_messages_and_the_bridge_account_proof_verifies(devnet: tuple[Web3, dict[str, Any]]) -> None:
    w3, deployment = devnet
    assert w3.eth.chain_id == deployment["l1"]["chainId"] == 1960
    trader = deployment["devAccounts"][TRADER]
    contracts = deployment["contracts"]
    bridge = w3.eth.contract(address=contracts["Bridge"]["address"], abi=contracts["Bridge"]["abi"])
    usdt = w3.eth.contract(address=contracts["USDT"]["address"], abi=contracts["USDT"]["abi"])
    recipient = Account.create().address
    okb_amount, usdt_amount = 3 * 10**17, 250 * 10**6
    queued_before = bridge.functions.messageCount().call()
    bridge_okb_before = w3.eth.get_balance(bridge.address)

    okb_receipt = transact(w3, trader["privateKey"], bridge.functions.depositNative(recipient), okb_amount)
    transact(w3, trader["privateKey"], usdt.functions.approve(bridge.address, usdt_amount))
    usdt_receipt = transact(w3, trader["privateKey"], bridge.functions.deposit(usdt.address, recipient, usdt_amount))

    assert bridge.functions.messageCount().call() >= queued_before + 2
    assert usdt.functions.balanceOf(bridge.address).call() >= usdt_amount
    assert w3.eth.get_balance(bridge.address) == bridge_okb_before + okb_amount

    # the queue's events, through eth_getLogs with an address and topic filter
    topic = Web3.to_hex(keccak(text="MessageQueued(uint256,uint8,bytes,uint256,uint256,bytes32)"))
    raw_logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "address": bridge.address, "topics": [topic]})
    events = [bridge.events.MessageQueued().process_log(entry)["args"] for entry in raw_logs]
    mine = {okb_receipt["transactionHash"], usdt_receipt["transactionHash"]}
    assert [e["index"] for e in events] == list(range(len(events)))
    rolling = b"\x00" * 32
    for e in events:
        message_hash = keccak(abi_encode(["uint256", "uint8"], [e["index"], e["kind"]]) + e["payload"])
        rolling = keccak(rolling + message_hash)
        assert e["rollingHash"] == rolling
        assert bridge.functions.rollingHashAt(e["index"]).call() == rolling
    ours = [e for e, entry in zip(events, raw_logs, strict=True) if entry["transactionHash"] in mine]
    payloads = [abi_decode(["address", "address", "uint32", "uint256"], e["payload"]) for e in ours]
    assert [e["kind"] for e in ours] == [KIND_DEPOSIT, KIND_DEPOSIT]
    assert [(p[0].lower(), p[1].lower(), p[2], p[3]) for p in payloads] == [
        (trader["address"].lower(), recipient.lower(), OKB_ID, okb_amount),
        (trader["address"].lower(), recipient.lower(), USDT_ID, usdt_amount),
    ]
    assert ours[0]["l1Block"] == okb_receipt["blockNumber"] and ours[1]["l1Block"] == usdt_receipt["blockNumber"]
    by_index = w3.eth.get_logs({"fromBlock": usdt_receipt["blockNumber"], "toBlock": usdt_receipt["blockNumber"],
                                "address": bridge.address,
                                "topics": [topic, Web3.to_hex(ours[1]["index"].to_bytes(32, "big"))]})
    assert len(by_index) == 1 and by_index[0]["transactionHash"] == usdt_receipt["transactionHash"]

    # the bridge's account, proven against the state root of the deposit block
    block = w3.eth.get_block(usdt_receipt["blockNumber"])
    proof = w3.eth.get_proof(bridge.address, [], block["number"])
    account_rlp = HexaryTrie.get_from_proof(
        bytes(block["stateRoot"]),
        keccak(bytes.fromhex(bridge.address[2:])),
        [rlp.decode(bytes(node)) for node in proof["accountProof"]],
    )
    nonce, balance, storage_root, code_hash = rlp.decode(account_rlp)
    assert int.from_bytes(balance, "big") == w3.eth.get_balance(bridge.address, block["number"]) == proof["balance"]
    assert code_hash == keccak(bytes(w3.eth.get_code(bridge.address))) == bytes(proof["codeHash"])
    assert storage_root == bytes(proof["storageHash"])
