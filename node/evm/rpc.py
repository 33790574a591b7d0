"""The Ethereum JSON-RPC server (eth_*, net_*, web3_*) over an `EmbeddedChain`, port 8545.

Each handler decodes its params (bad ones: -32602), calls one `EmbeddedChain` method and encodes
the result the way geth does (quantities as 0x-hex without leading zeros, data as 0x-hex,
missing blocks/transactions/receipts as null). Chain errors map to codes:

| error | code | message |
|---|---|---|
| call/estimate reverted | 3 | `execution reverted: <reason>`, data = revert data (0x-hex) |
| call failed otherwise | -32000 | `execution failed: ...` |
| transaction rejected at submission | -32000 | e.g. `nonce too low: ...`, `insufficient funds ...` |
| block not found (state queries) | -32000 | `header not found` |
| malformed block id / range | -32602 | `invalid params: ...` |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eth_utils import keccak

from node.config import CLIENT_VERSION
from node.evm.chain import EmbeddedChain
from node.evm.l1 import (
    BLOCK_TAGS,
    AccountProof,
    BlockId,
    BlockNotFoundError,
    CallRequest,
    ExecutionFailed,
    ExecutionReverted,
    InvalidBlockIdError,
    L1Block,
    L1Log,
    L1Receipt,
    L1Transaction,
    LogFilter,
    TransactionRejected,
)
from node.jsonrpc import (
    EXECUTION_REVERTED,
    INVALID_PARAMS,
    SERVER_ERROR,
    InvalidParams,
    Params,
    RpcError,
    RpcServer,
    decode_address,
    decode_bytes,
    decode_hash,
    positional,
)

DEFAULT_PRIORITY_FEE = 10**9  # 1 gwei, suggested tip
MAX_FEE_HISTORY_BLOCKS = 1024


# ---------------------------------------------------------------------------------------------
# decoding


def decode_quantity(value: Any, what: str = "quantity") -> int:
    """A 0x-prefixed hex quantity (plain ints are accepted too) -> int."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str) or value[:2] not in ("0x", "0X") or len(value) < 3:
        raise InvalidParams(f"{what} must be a 0x-prefixed hex number, got {value!r}")
    try:
        return int(value[2:], 16)
    except ValueError as exc:
        raise InvalidParams(f"{what} must be a 0x-prefixed hex number, got {value!r}") from exc


def decode_data(value: Any, what: str = "data", length: int | None = None) -> bytes:
    """0x-prefixed hex bytes (of exactly `length` bytes if given) -> bytes."""
    return decode_bytes(value, what, length)


def decode_block_id(value: Any, default: BlockId = "latest") -> BlockId:
    """A block tag, a hex number, a 32-byte hash, or an EIP-1898 object -> BlockId."""
    if value is None:
        return default
    if isinstance(value, dict):
        if "blockHash" in value:
            return decode_hash(value["blockHash"], "blockHash")
        if "blockNumber" in value:
            return decode_block_id(value["blockNumber"])
        raise InvalidParams("a block object needs blockHash or blockNumber")
    if isinstance(value, str):
        if value in BLOCK_TAGS:
            return value
        if len(value) == 66:
            return decode_hash(value, "block hash")
    return decode_quantity(value, "block number")


def decode_call(value: Any) -> CallRequest:
    """An eth_call / eth_estimateGas transaction object -> CallRequest."""
    if not isinstance(value, dict):
        raise InvalidParams("the call must be a transaction object")
    data = value.get("input", value.get("data"))

    def quantity(key: str) -> int | None:
        return None if value.get(key) is None else decode_quantity(value[key], key)

    return CallRequest(
        to=None if value.get("to") is None else decode_address(value["to"], "to"),
        data=b"" if data is None else decode_data(data, "input"),
        sender=None if value.get("from") is None else decode_address(value["from"], "from"),
        value=quantity("value") or 0,
        gas=quantity("gas"),
        gas_price=quantity("gasPrice"),
        max_fee_per_gas=quantity("maxFeePerGas"),
        max_priority_fee_per_gas=quantity("maxPriorityFeePerGas"),
    )


def decode_log_filter(value: Any) -> LogFilter:
    """An eth_getLogs filter object -> LogFilter (address: one or a list; topics: null, one, or
    a list of alternatives per position)."""
    if not isinstance(value, dict):
        raise InvalidParams("the filter must be an object")
    address = value.get("address")
    if address is None:
        addresses: tuple[bytes, ...] = ()
    elif isinstance(address, list):
        addresses = tuple(decode_address(a) for a in address)
    else:
        addresses = (decode_address(address),)
    raw_topics = value.get("topics") or []
    if not isinstance(raw_topics, list):
        raise InvalidParams("topics must be a list")
    topics: list[bytes | tuple[bytes, ...] | None] = []
    for entry in raw_topics:
        if entry is None:
            topics.append(None)
        elif isinstance(entry, list):
            topics.append(tuple(decode_hash(t, "topic") for t in entry) if entry else None)
        else:
            topics.append(decode_hash(entry, "topic"))
    if value.get("blockHash") is not None:
        if value.get("fromBlock") is not None or value.get("toBlock") is not None:
            raise InvalidParams("blockHash excludes fromBlock/toBlock")
        return LogFilter(
            addresses=addresses, topics=tuple(topics), block_hash=decode_hash(value["blockHash"])
        )
    return LogFilter(
        from_block=decode_block_id(value.get("fromBlock")),
        to_block=decode_block_id(value.get("toBlock")),
        addresses=addresses,
        topics=tuple(topics),
    )


# ---------------------------------------------------------------------------------------------
# encoding


def hex_int(value: int) -> str:
    return hex(value)


def hex_data(value: bytes) -> str:
    return "0x" + value.hex()


def hex_word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def encode_transaction(tx: L1Transaction) -> dict[str, Any]:
    out: dict[str, Any] = {
        "blockHash": None if tx.block_hash is None else hex_data(tx.block_hash),
        "blockNumber": None if tx.block_number is None else hex_int(tx.block_number),
        "transactionIndex": None if tx.transaction_index is None else hex_int(tx.transaction_index),
        "hash": hex_data(tx.hash),
        "type": hex_int(tx.type),
        "nonce": hex_int(tx.nonce),
        "from": hex_data(tx.sender),
        "to": None if tx.to is None else hex_data(tx.to),
        "value": hex_int(tx.value),
        "gas": hex_int(tx.gas),
        "gasPrice": hex_int(tx.gas_price),
        "input": hex_data(tx.input),
        "v": hex_int(tx.v),
        "r": hex_int(tx.r),
        "s": hex_int(tx.s),
    }
    if tx.chain_id is not None:
        out["chainId"] = hex_int(tx.chain_id)
    if tx.type >= 1:
        out["accessList"] = [
            {"address": hex_data(a), "storageKeys": [hex_word(k) for k in keys]} for a, keys in tx.access_list
        ]
        out["yParity"] = hex_int(tx.v)
    if tx.type == 2:
        out["maxFeePerGas"] = hex_int(tx.max_fee_per_gas or 0)
        out["maxPriorityFeePerGas"] = hex_int(tx.max_priority_fee_per_gas or 0)
    return out


def encode_block(block: L1Block, transactions: list[Any]) -> dict[str, Any]:
    return {
        "number": hex_int(block.number),
        "hash": hex_data(block.hash),
        "parentHash": hex_data(block.parent_hash),
        "nonce": hex_data(block.nonce),
        "mixHash": hex_data(block.mix_hash),
        "sha3Uncles": hex_data(block.uncles_hash),
        "logsBloom": hex_data(block.logs_bloom.to_bytes(256, "big")),
        "transactionsRoot": hex_data(block.transactions_root),
        "stateRoot": hex_data(block.state_root),
        "receiptsRoot": hex_data(block.receipts_root),
        "miner": hex_data(block.miner),
        "difficulty": hex_int(block.difficulty),
        "totalDifficulty": hex_int(0),
        "extraData": hex_data(block.extra_data),
        "size": hex_int(block.size),
        "gasLimit": hex_int(block.gas_limit),
        "gasUsed": hex_int(block.gas_used),
        "timestamp": hex_int(block.timestamp),
        "baseFeePerGas": hex_int(block.base_fee_per_gas),
        "withdrawalsRoot": hex_data(block.withdrawals_root),
        "withdrawals": [],
        "blobGasUsed": hex_int(block.blob_gas_used),
        "excessBlobGas": hex_int(block.excess_blob_gas),
        "parentBeaconBlockRoot": hex_data(block.parent_beacon_block_root),
        "requestsHash": hex_data(block.requests_hash),
        "transactions": transactions,
        "uncles": [],
    }


def encode_log(entry: L1Log) -> dict[str, Any]:
    return {
        "address": hex_data(entry.address),
        "topics": [hex_data(t) for t in entry.topics],
        "data": hex_data(entry.data),
        "blockNumber": hex_int(entry.block_number),
        "blockHash": hex_data(entry.block_hash),
        "transactionHash": hex_data(entry.transaction_hash),
        "transactionIndex": hex_int(entry.transaction_index),
        "logIndex": hex_int(entry.log_index),
        "removed": entry.removed,
    }


def encode_receipt(receipt: L1Receipt) -> dict[str, Any]:
    return {
        "transactionHash": hex_data(receipt.transaction_hash),
        "transactionIndex": hex_int(receipt.transaction_index),
        "blockHash": hex_data(receipt.block_hash),
        "blockNumber": hex_int(receipt.block_number),
        "from": hex_data(receipt.sender),
        "to": None if receipt.to is None else hex_data(receipt.to),
        "cumulativeGasUsed": hex_int(receipt.cumulative_gas_used),
        "gasUsed": hex_int(receipt.gas_used),
        "effectiveGasPrice": hex_int(receipt.effective_gas_price),
        "contractAddress": None if receipt.contract_address is None else hex_data(receipt.contract_address),
        "logs": [encode_log(entry) for entry in receipt.logs],
        "logsBloom": hex_data(receipt.logs_bloom.to_bytes(256, "big")),
        "status": hex_int(receipt.status),
        "type": hex_int(receipt.type),
    }


def encode_proof(proof: AccountProof, keys: list[str]) -> dict[str, Any]:
    return {
        "address": hex_data(proof.address),
        "accountProof": [hex_data(node) for node in proof.account_proof],
        "balance": hex_int(proof.balance),
        "codeHash": hex_data(proof.code_hash),
        "nonce": hex_int(proof.nonce),
        "storageHash": hex_data(proof.storage_hash),
        "storageProof": [
            {"key": key, "value": hex_int(sp.value), "proof": [hex_data(node) for node in sp.proof]}
            for key, sp in zip(keys, proof.storage_proof, strict=True)
        ],
    }


# ---------------------------------------------------------------------------------------------
# errors


def map_chain_error(exc: Exception) -> RpcError | None:
    """The JSON-RPC error for a chain exception (table in the module docstring)."""
    if isinstance(exc, ExecutionReverted):
        return RpcError(EXECUTION_REVERTED, str(exc), hex_data(exc.data))
    if isinstance(exc, ExecutionFailed | TransactionRejected):
        return RpcError(SERVER_ERROR, str(exc))
    if isinstance(exc, BlockNotFoundError):
        return RpcError(SERVER_ERROR, "header not found")
    if isinstance(exc, InvalidBlockIdError):
        return RpcError(INVALID_PARAMS, f"invalid params: {exc}")
    return None


# ---------------------------------------------------------------------------------------------
# the method table


class EthRpc:
    """The eth_* method table over one `EmbeddedChain`; `server` is the `RpcServer` to serve.

    `on_transaction` (if set) is called with each accepted transaction hash, so the service
    owning the chain can react (for example, wake its block producer).
    """

    def __init__(self, chain: EmbeddedChain, server: RpcServer | None = None) -> None:
        self.chain = chain
        self.server = server or RpcServer(name="eth")
        self.on_transaction: Callable[[bytes], None] | None = None
        self.server.add_error_mapper(map_chain_error)
        for name in dir(self):
            if name.startswith(("eth_", "net_", "web3_")):
                self.server.register(name, getattr(self, name))

    # -- identity -----------------------------------------------------------------------------

    def web3_clientVersion(self, params: Params) -> str:
        positional(params, 0, 0)
        return CLIENT_VERSION

    def web3_sha3(self, params: Params) -> str:
        (data,) = positional(params, 1, 1)
        return hex_data(keccak(decode_data(data)))

    def net_version(self, params: Params) -> str:
        positional(params, 0, 0)
        return str(self.chain.chain_id)

    def net_listening(self, params: Params) -> bool:
        positional(params, 0, 0)
        return True

    def net_peerCount(self, params: Params) -> str:
        positional(params, 0, 0)
        return hex_int(0)

    def eth_chainId(self, params: Params) -> str:
        positional(params, 0, 0)
        return hex_int(self.chain.chain_id)

    def eth_syncing(self, params: Params) -> bool:
        positional(params, 0, 0)
        return False

    def eth_accounts(self, params: Params) -> list[str]:
        positional(params, 0, 0)
        return []

    def eth_mining(self, params: Params) -> bool:
        positional(params, 0, 0)
        return True

    # -- blocks -------------------------------------------------------------------------------

    def eth_blockNumber(self, params: Params) -> str:
        positional(params, 0, 0)
        return hex_int(self.chain.block_number)

    def _block(self, block_id: BlockId, full: Any) -> dict[str, Any] | None:
        if not isinstance(full, bool):
            raise InvalidParams("the second param (full transactions) must be a boolean")
        try:
            block = self.chain.get_block(block_id)
        except BlockNotFoundError:
            return None
        if full:
            txs: list[Any] = [encode_transaction(t) for t in self.chain.get_block_transactions(block.number)]
        else:
            txs = [hex_data(h) for h in block.transaction_hashes]
        return encode_block(block, txs)

    def eth_getBlockByNumber(self, params: Params) -> dict[str, Any] | None:
        block_id, full = positional(params, 1, 2)
        return self._block(decode_block_id(block_id), bool(full) if full is None else full)

    def eth_getBlockByHash(self, params: Params) -> dict[str, Any] | None:
        block_hash, full = positional(params, 1, 2)
        return self._block(decode_hash(block_hash, "block hash"), bool(full) if full is None else full)

    def _transaction_count(self, block_id: BlockId) -> str | None:
        try:
            return hex_int(len(self.chain.get_block(block_id).transaction_hashes))
        except BlockNotFoundError:
            return None

    def eth_getBlockTransactionCountByNumber(self, params: Params) -> str | None:
        (block_id,) = positional(params, 1, 1)
        return self._transaction_count(decode_block_id(block_id))

    def eth_getBlockTransactionCountByHash(self, params: Params) -> str | None:
        (block_hash,) = positional(params, 1, 1)
        return self._transaction_count(decode_hash(block_hash, "block hash"))

    def eth_getUncleCountByBlockNumber(self, params: Params) -> str:
        positional(params, 1, 1)
        return hex_int(0)

    def eth_getUncleCountByBlockHash(self, params: Params) -> str:
        positional(params, 1, 1)
        return hex_int(0)

    def _transaction_at(self, block_id: BlockId, index: Any) -> dict[str, Any] | None:
        position = decode_quantity(index, "index")
        try:
            txs = self.chain.get_block_transactions(block_id)
        except BlockNotFoundError:
            return None
        return encode_transaction(txs[position]) if position < len(txs) else None

    def eth_getTransactionByBlockNumberAndIndex(self, params: Params) -> dict[str, Any] | None:
        block_id, index = positional(params, 2, 2)
        return self._transaction_at(decode_block_id(block_id), index)

    def eth_getTransactionByBlockHashAndIndex(self, params: Params) -> dict[str, Any] | None:
        block_hash, index = positional(params, 2, 2)
        return self._transaction_at(decode_hash(block_hash, "block hash"), index)

    # -- state --------------------------------------------------------------------------------

    def eth_getBalance(self, params: Params) -> str:
        address, block_id = positional(params, 1, 2)
        return hex_int(self.chain.get_balance(decode_address(address), decode_block_id(block_id)))

    def eth_getTransactionCount(self, params: Params) -> str:
        address, block_id = positional(params, 1, 2)
        return hex_int(self.chain.get_transaction_count(decode_address(address), decode_block_id(block_id)))

    def eth_getCode(self, params: Params) -> str:
        address, block_id = positional(params, 1, 2)
        return hex_data(self.chain.get_code(decode_address(address), decode_block_id(block_id)))

    def eth_getStorageAt(self, params: Params) -> str:
        address, slot, block_id = positional(params, 2, 3)
        value = self.chain.get_storage_at(
            decode_address(address), decode_quantity(slot, "slot"), decode_block_id(block_id)
        )
        return hex_word(value)

    def eth_call(self, params: Params) -> str:
        call, block_id, overrides = positional(params, 1, 3)
        if overrides:
            raise InvalidParams("state overrides are not supported")
        return hex_data(self.chain.call(decode_call(call), decode_block_id(block_id)))

    def eth_estimateGas(self, params: Params) -> str:
        call, block_id = positional(params, 1, 2)
        return hex_int(self.chain.estimate_gas(decode_call(call), decode_block_id(block_id)))

    def eth_getProof(self, params: Params) -> dict[str, Any]:
        address, slots, block_id = positional(params, 2, 3)
        if not isinstance(slots, list):
            raise InvalidParams("storage keys must be a list")
        keys = [decode_quantity(s, "storage key") if isinstance(s, str) else -1 for s in slots]
        if any(k < 0 or k >= 2**256 for k in keys):
            raise InvalidParams("storage keys must be 0x-hex words")
        proof = self.chain.get_proof(decode_address(address), keys, decode_block_id(block_id))
        return encode_proof(proof, slots)

    # -- fees ---------------------------------------------------------------------------------

    def eth_gasPrice(self, params: Params) -> str:
        positional(params, 0, 0)
        return hex_int(self.chain.next_base_fee() + DEFAULT_PRIORITY_FEE)

    def eth_maxPriorityFeePerGas(self, params: Params) -> str:
        positional(params, 0, 0)
        return hex_int(DEFAULT_PRIORITY_FEE)

    def eth_blobBaseFee(self, params: Params) -> str:
        positional(params, 0, 0)
        return hex_int(1)

    def eth_feeHistory(self, params: Params) -> dict[str, Any]:
        count, newest, percentiles = positional(params, 2, 3)
        block_count = decode_quantity(count, "block count")
        if not 1 <= block_count <= MAX_FEE_HISTORY_BLOCKS:
            raise InvalidParams(f"block count must be 1 to {MAX_FEE_HISTORY_BLOCKS}")
        oldest, base_fees, ratios = self.chain.fee_history(block_count, decode_block_id(newest))
        result: dict[str, Any] = {
            "oldestBlock": hex_int(oldest),
            "baseFeePerGas": [hex_int(f) for f in base_fees],
            "gasUsedRatio": ratios,
        }
        if percentiles:
            if not isinstance(percentiles, list) or not all(
                isinstance(p, int | float) and 0 <= p <= 100 for p in percentiles
            ):
                raise InvalidParams("reward percentiles must be numbers from 0 to 100")
            result["reward"] = [
                [hex_int(r) for r in self._rewards(number, base_fees[i], percentiles)]
                for i, number in enumerate(range(oldest, oldest + len(ratios)))
            ]
        return result

    def _rewards(self, number: int, base_fee: int, percentiles: list[float]) -> list[int]:
        """Priority fees paid at each gas-weighted percentile of a block (0 if empty)."""
        txs = self.chain.get_block_transactions(number)
        if not txs:
            return [0] * len(percentiles)
        receipts = [self.chain.get_receipt(t.hash) for t in txs]
        paid = sorted((t.gas_price - base_fee, r.gas_used) for t, r in zip(txs, receipts, strict=True) if r)
        total = sum(g for _, g in paid)
        rewards = []
        for p in percentiles:
            threshold, seen, pick = total * p / 100, 0, paid[-1][0]
            for tip, gas in paid:
                seen += gas
                if seen >= threshold:
                    pick = tip
                    break
            rewards.append(pick)
        return rewards

    # -- transactions and logs ------------------------------------------------------------------

    def eth_sendRawTransaction(self, params: Params) -> str:
        (raw,) = positional(params, 1, 1)
        tx_hash = self.chain.submit(decode_data(raw, "raw transaction"))
        if self.on_transaction is not None:
            self.on_transaction(tx_hash)
        return hex_data(tx_hash)

    def eth_getTransactionByHash(self, params: Params) -> dict[str, Any] | None:
        (tx_hash,) = positional(params, 1, 1)
        tx = self.chain.get_transaction(decode_hash(tx_hash, "transaction hash"))
        return None if tx is None else encode_transaction(tx)

    def eth_getTransactionReceipt(self, params: Params) -> dict[str, Any] | None:
        (tx_hash,) = positional(params, 1, 1)
        receipt = self.chain.get_receipt(decode_hash(tx_hash, "transaction hash"))
        return None if receipt is None else encode_receipt(receipt)

    def eth_getBlockReceipts(self, params: Params) -> list[dict[str, Any]] | None:
        (block_id,) = positional(params, 1, 1)
        try:
            txs = self.chain.get_block_transactions(decode_block_id(block_id))
        except BlockNotFoundError:
            return None
        receipts = [self.chain.get_receipt(t.hash) for t in txs]
        return [encode_receipt(r) for r in receipts if r is not None]

    def eth_getLogs(self, params: Params) -> list[dict[str, Any]]:
        (log_filter,) = positional(params, 1, 1)
        return [encode_log(entry) for entry in self.chain.get_logs(decode_log_filter(log_filter))]
