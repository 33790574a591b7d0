"""The L1Client interface: JsonRpcL1Client against the project's own eth_* server gives the same
answers as EmbeddedL1Client on the same chain, and both raise the same exceptions."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, keccak

from node.config import address_of
from node.evm.chain import EmbeddedChain
from node.evm.l1 import (
    BlockNotFoundError,
    CallRequest,
    EmbeddedL1Client,
    ExecutionReverted,
    JsonRpcL1Client,
    L1Client,
    L1Unavailable,
    NonceTooLow,
    TransactionFailed,
    send_transaction,
    sign_transaction,
)
from tests.evm.conftest import FUNDED_KEYS, DevnetThread, plain_genesis

KEY = FUNDED_KEYS[0]
PING = function_signature_to_4byte_selector("ping(uint256)")
COUNTER = function_signature_to_4byte_selector("counter()")
PING_TOPIC = keccak(b"Ping(address,uint256,uint256)")


def ping(n: int) -> bytes:
    return PING + encode(["uint256"], [n])


async def exercise(client: L1Client, contract: bytes) -> dict[str, Any]:
    """Drive one client through the interface; return what it saw."""
    receipt = await send_transaction(client, KEY, contract, ping(3))
    seen: dict[str, Any] = {"receipt": receipt}
    seen["chain_id"] = await client.chain_id()
    seen["block"] = await client.get_block(receipt.block_number)
    seen["block_by_hash"] = await client.get_block(receipt.block_hash)
    seen["counter"] = await client.call(contract, COUNTER, receipt.block_number)
    seen["logs"] = await client.get_logs(0, receipt.block_number, contract, [PING_TOPIC])
    seen["logs_or"] = await client.get_logs(
        0, receipt.block_number, None, [None, [b"\x00" * 12 + address_of(KEY), b"\x11" * 32]]
    )
    seen["proof"] = await client.get_proof(contract, [0], receipt.block_number)
    seen["balance"] = await client.get_balance(address_of(KEY), receipt.block_number)
    seen["nonce"] = await client.get_transaction_count(address_of(KEY), receipt.block_number)
    seen["code"] = await client.get_code(contract, receipt.block_number)
    seen["slot0"] = await client.get_storage_at(contract, 0, receipt.block_number)
    seen["estimate"] = await client.estimate_gas(
        CallRequest(to=contract, data=ping(1), sender=address_of(KEY)), receipt.block_number
    )
    with pytest.raises(ExecutionReverted) as reverted:
        await client.call(contract, ping(0))
    seen["revert"] = (reverted.value.data, reverted.value.reason)
    with pytest.raises(ExecutionReverted):
        await send_transaction(client, KEY, contract, ping(0))
    with pytest.raises(TransactionFailed):
        await send_transaction(client, KEY, contract, ping(0), gas=100_000)
    with pytest.raises(BlockNotFoundError):
        await client.get_block(10**9)
    stale = sign_transaction(
        KEY, chain_id=seen["chain_id"], nonce=0, to=contract, gas=100_000,
        max_fee_per_gas=10**11, max_priority_fee_per_gas=10**9, data=ping(5),
    )
    with pytest.raises(NonceTooLow):
        await client.send_raw_transaction(stale)
    return seen


def test_json_rpc_client_matches_embedded_client(devnet_thread: DevnetThread, ping_artifact: dict[str, Any]) -> None:
    embedded = EmbeddedL1Client(devnet_thread.chain)
    deployed = devnet_thread.run(send_transaction(embedded, KEY, None, ping_artifact["bytecode"]))
    contract = deployed.contract_address
    assert contract is not None
    via_embedded = devnet_thread.run(exercise(embedded, contract))

    async def remote() -> dict[str, Any]:
        async with JsonRpcL1Client(devnet_thread.url) as client:
            return await exercise(client, contract)

    via_rpc = asyncio.run(remote())
    assert via_embedded["counter"] == (3).to_bytes(32, "big")
    assert via_rpc["counter"] == (6).to_bytes(32, "big")
    assert via_rpc["revert"] == via_embedded["revert"] and via_rpc["revert"][1] == "zero ping"
    for key in ("chain_id", "code", "estimate"):
        assert via_rpc[key] == via_embedded[key], key
    assert via_rpc["block"] == via_rpc["block_by_hash"]
    assert len(via_rpc["logs"]) == 2 and len(via_embedded["logs"]) == 1
    assert via_rpc["logs"][0] == via_embedded["logs"][0]
    assert via_rpc["logs_or"][-1] == via_rpc["logs"][-1]
    assert via_rpc["proof"].storage_proof[0].value == 6

    # the same block read through both clients is the same object
    number = via_rpc["receipt"].block_number
    from_rpc = asyncio.run(_read_block_and_receipt(devnet_thread.url, number, via_rpc["receipt"].transaction_hash))
    from_embedded = devnet_thread.run(_read_embedded(embedded, number, via_rpc["receipt"].transaction_hash))
    assert from_rpc == from_embedded


async def _read_block_and_receipt(url: str, number: int, tx_hash: bytes) -> tuple[Any, ...]:
    async with JsonRpcL1Client(url) as client:
        return (
            await client.get_block(number),
            await client.get_transaction_receipt(tx_hash),
            await client.get_proof(address_of(KEY), [1], number),
        )


async def _read_embedded(client: EmbeddedL1Client, number: int, tx_hash: bytes) -> tuple[Any, ...]:
    return (
        await client.get_block(number),
        await client.get_transaction_receipt(tx_hash),
        await client.get_proof(address_of(KEY), [1], number),
    )


def test_json_rpc_client_reports_an_unreachable_node() -> None:
    async def main() -> None:
        async with JsonRpcL1Client("http://127.0.0.1:9", retries=1, timeout=2) as client:
            with pytest.raises(L1Unavailable):
                await client.block_number()

    asyncio.run(main())


def test_embedded_client_auto_mine_mines_each_transaction(tmp_path: Any) -> None:
    chain = EmbeddedChain.open(tmp_path / "c", plain_genesis())

    async def main() -> None:
        client = EmbeddedL1Client(chain, auto_mine=True)
        receipt = await send_transaction(client, KEY, b"\x22" * 20, value=5, gas=21_000)
        assert receipt.status == 1 and await client.block_number() == 1
        assert await client.get_balance(b"\x22" * 20) == 5

    try:
        asyncio.run(main())
    finally:
        chain.close()
