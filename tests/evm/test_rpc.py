"""eth_* handlers through the JSON-RPC layer (no HTTP): params decoding, EIP-1898 block ids,
null answers, and the error codes of docs/evm.md."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from node.config import address_of
from node.evm.chain import EmbeddedChain
from node.evm.rpc import EthRpc
from tests.evm.conftest import FUNDED_KEYS, deploy, sign

KEY = FUNDED_KEYS[0]
ADDRESS = "0x" + address_of(KEY).hex()


def ask(rpc: EthRpc, method: str, *params: Any) -> dict[str, Any]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    answer = asyncio.run(rpc.server.handle_body(body))
    assert answer.status == 200 and answer.body is not None
    return json.loads(answer.body)


@pytest.fixture
def rpc(chain: EmbeddedChain) -> EthRpc:
    chain.mine_pending(chain.head.timestamp + 1)
    return EthRpc(chain)


def test_block_ids_by_tag_number_hash_and_eip1898_object(rpc: EthRpc) -> None:
    genesis_balance = ask(rpc, "eth_getBalance", ADDRESS, "earliest")["result"]
    block1 = ask(rpc, "eth_getBlockByNumber", "0x1", False)["result"]
    for block_id in ("latest", "0x1", block1["hash"], {"blockHash": block1["hash"]},
                     {"blockNumber": "0x1"}, {"blockHash": block1["hash"], "requireCanonical": True}):
        assert ask(rpc, "eth_getBalance", ADDRESS, block_id)["result"] == genesis_balance
    assert ask(rpc, "eth_getBlockByHash", block1["hash"], True)["result"]["number"] == "0x1"
    assert ask(rpc, "eth_getBlockByNumber", "0x99", False)["result"] is None
    assert ask(rpc, "eth_getBlockByHash", "0x" + "00" * 32, False)["result"] is None
    assert ask(rpc, "eth_getTransactionByHash", "0x" + "00" * 32)["result"] is None
    assert ask(rpc, "eth_getTransactionReceipt", "0x" + "00" * 32)["result"] is None
    assert ask(rpc, "eth_getBlockTransactionCountByNumber", "latest")["result"] == "0x0"


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("eth_getBalance", ["0x1234", "latest"]),
        ("eth_getBalance", [ADDRESS, "newest"]),
        ("eth_getBalance", [ADDRESS, {"foo": 1}]),
        ("eth_getBlockByNumber", ["0x1", "yes"]),
        ("eth_getStorageAt", [ADDRESS, "zz", "latest"]),
        ("eth_call", ["not an object"]),
        ("eth_call", [{"to": ADDRESS}, "latest", {ADDRESS: {"balance": "0x1"}}]),
        ("eth_getLogs", [{"blockHash": "0x" + "00" * 32, "fromBlock": "0x0"}]),
        ("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x0"}]),
        ("eth_getLogs", [{"topics": "nope"}]),
        ("eth_feeHistory", ["0x0", "latest", []]),
        ("eth_getProof", [ADDRESS, "0x0", "latest"]),
        ("eth_chainId", [1]),
    ],
)
def test_bad_params_are_invalid_params(rpc: EthRpc, method: str, params: list[Any]) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).encode()
    answer = json.loads(asyncio.run(rpc.server.handle_body(body)).body or b"")
    assert answer["error"]["code"] == -32602, answer


def test_state_query_on_a_missing_block_is_header_not_found(rpc: EthRpc) -> None:
    error = ask(rpc, "eth_getBalance", ADDRESS, "0x99")["error"]
    assert error == {"code": -32000, "message": "header not found"}


def test_rejected_transaction_and_reverted_call_codes(rpc: EthRpc, ping_artifact: dict[str, Any]) -> None:
    error = ask(rpc, "eth_sendRawTransaction", "0xdeadbeef")["error"]
    assert error["code"] == -32000 and "decode" in error["message"]
    contract = deploy(rpc.chain, KEY, ping_artifact["bytecode"])
    data = function_signature_to_4byte_selector("ping(uint256)") + encode(["uint256"], [0])
    call = {"to": "0x" + contract.hex(), "data": "0x" + data.hex()}
    for method in ("eth_call", "eth_estimateGas"):
        error = ask(rpc, method, call, "latest")["error"]
        assert error["code"] == 3 and error["message"] == "execution reverted: zero ping"
        assert error["data"].startswith("0x08c379a0")
    raw = sign(KEY, nonce=1, to=contract, gas=100_000, data=data)
    sent = ask(rpc, "eth_sendRawTransaction", "0x" + raw.hex())["result"]
    pending = ask(rpc, "eth_getTransactionByHash", sent)["result"]
    assert pending["blockNumber"] is None and pending["type"] == "0x2"
    assert ask(rpc, "eth_getTransactionCount", ADDRESS, "pending")["result"] == "0x2"
    assert ask(rpc, "eth_getTransactionCount", ADDRESS, "latest")["result"] == "0x1"


def test_fee_history_rewards_and_block_receipts(rpc: EthRpc) -> None:
    chain = rpc.chain
    for n in range(3):
        chain.submit(sign(KEY, nonce=n, to=b"\x33" * 20, value=1, maxPriorityFeePerGas=(n + 1) * 10**9))
    chain.mine_pending(chain.head.timestamp + 1)
    history = ask(rpc, "eth_feeHistory", "0x2", "latest", [0, 50, 100])["result"]
    assert len(history["baseFeePerGas"]) == 3 and len(history["reward"]) == 2
    assert [int(r, 16) for r in history["reward"][-1]] == [10**9, 2 * 10**9, 3 * 10**9]
    receipts = ask(rpc, "eth_getBlockReceipts", "latest")["result"]
    assert [r["transactionIndex"] for r in receipts] == ["0x0", "0x1", "0x2"]
