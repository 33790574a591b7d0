"""The one interface through which the node talks to the EVM chain (L1), and its two clients.

`L1Client` is an asyncio interface (`async def` everywhere): the sequencer, batcher and escape
watcher are asyncio services, and a remote EVM node is reached over the network. The two
implementations:

- `EmbeddedL1Client(chain)`: direct calls on an `EmbeddedChain` in the same process and event
  loop (each call is a short synchronous py-evm read, so there is no locking to do);
- `JsonRpcL1Client(url)`: standard `eth_*` JSON-RPC over HTTP (aiohttp) to any EVM node,
  including this project's own server (`node.evm.rpc`).

Both return the same frozen dataclasses and raise the same exceptions, so callers never know
which one they hold. Amounts are integers in wei; addresses and hashes are raw bytes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import aiohttp
from eth_account import Account
from eth_keys import keys
from eth_utils import encode_hex

if TYPE_CHECKING:
    from node.evm.chain import EmbeddedChain

# A block is named by number, by tag ("latest", "earliest", "pending", "safe", "finalized")
# or by its 32-byte hash (EIP-1898).
BlockId = int | str | bytes
BLOCK_TAGS = frozenset({"latest", "earliest", "pending", "safe", "finalized"})


# ---------------------------------------------------------------------------------------------
# errors


class L1Error(Exception):
    """Base of every error an L1 client raises."""


class BlockNotFoundError(L1Error):
    """The requested block does not exist (yet)."""


class InvalidBlockIdError(L1Error):
    """A block id that is neither a number, a known tag nor a 32-byte hash."""


class ExecutionReverted(L1Error):
    """A call or gas estimate reverted; `data` is the raw revert data, `reason` its decoded
    Error(string) message when it has one."""

    def __init__(self, data: bytes, reason: str | None = None) -> None:
        self.data = data
        self.reason = reason
        super().__init__(f"execution reverted: {reason}" if reason else "execution reverted")


class ExecutionFailed(L1Error):
    """A call failed for a reason other than REVERT (out of gas, invalid opcode, ...)."""


class TransactionRejected(L1Error):
    """A transaction was refused at submission and is not in the mempool."""


class InvalidTransactionEncoding(TransactionRejected):
    """The raw bytes are not a decodable signed transaction."""


class UnsupportedTransactionType(TransactionRejected):
    """Only legacy (0), EIP-2930 (1) and EIP-1559 (2) transactions are accepted."""


class InvalidSignature(TransactionRejected):
    """The signature does not recover to a sender."""


class WrongChainId(TransactionRejected):
    """The transaction is for another chain, or is not replay-protected (pre-EIP-155)."""


class NonceTooLow(TransactionRejected):
    """The sender has already used this nonce."""


class NonceTooHigh(TransactionRejected):
    """The nonce is too far ahead of the sender's next nonce."""


class InsufficientFunds(TransactionRejected):
    """The sender cannot pay gas * max fee + value."""


class IntrinsicGasTooLow(TransactionRejected):
    """The gas limit is below the transaction's intrinsic gas."""


class GasLimitExceeded(TransactionRejected):
    """The gas limit is above the block gas limit."""


class FeeTooLow(TransactionRejected):
    """The fee cap is below the chain's minimum or the priority fee above the cap."""


class AlreadyKnown(TransactionRejected):
    """This exact transaction is already pending or mined."""


class ReplacementUnderpriced(TransactionRejected):
    """A pending transaction with this sender and nonce pays at least as much."""


class MempoolFull(TransactionRejected):
    """The mempool holds its maximum number of transactions."""


class TransactionDropped(L1Error):
    """A transaction that had been accepted was dropped before it could be mined."""


class ReceiptTimeout(L1Error):
    """No receipt arrived within the wait limit."""


class TransactionFailed(L1Error):
    """A transaction was mined with status 0 (reverted on-chain)."""

    def __init__(self, receipt: L1Receipt) -> None:
        self.receipt = receipt
        super().__init__(f"transaction {encode_hex(receipt.transaction_hash)} reverted on-chain")


class L1Unavailable(L1Error):
    """The remote node could not be reached (after retries): temporary, try again later."""


class L1RpcError(L1Error):
    """A JSON-RPC error from a remote node that maps to no more specific exception."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"JSON-RPC error {code}: {message}")


# ---------------------------------------------------------------------------------------------
# data


@dataclass(frozen=True, slots=True)
class L1Transaction:
    """A signed transaction, with its position once mined (None while pending)."""

    hash: bytes
    type: int
    nonce: int
    sender: bytes
    to: bytes | None
    value: int
    gas: int
    gas_price: int  # legacy/2930: the price; 1559: the effective price once mined, else the cap
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    input: bytes
    chain_id: int | None
    access_list: tuple[tuple[bytes, tuple[int, ...]], ...]
    v: int
    r: int
    s: int
    block_hash: bytes | None = None
    block_number: int | None = None
    transaction_index: int | None = None


@dataclass(frozen=True, slots=True)
class L1Block:
    """A block header with its transaction hashes."""

    number: int
    hash: bytes
    parent_hash: bytes
    timestamp: int
    state_root: bytes
    transactions_root: bytes
    receipts_root: bytes
    logs_bloom: int
    miner: bytes
    difficulty: int
    gas_limit: int
    gas_used: int
    base_fee_per_gas: int
    extra_data: bytes
    mix_hash: bytes
    nonce: bytes
    uncles_hash: bytes
    withdrawals_root: bytes
    blob_gas_used: int
    excess_blob_gas: int
    parent_beacon_block_root: bytes
    requests_hash: bytes
    size: int
    transaction_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class L1Log:
    address: bytes
    topics: tuple[bytes, ...]
    data: bytes
    block_number: int
    block_hash: bytes
    transaction_hash: bytes
    transaction_index: int
    log_index: int
    removed: bool = False


@dataclass(frozen=True, slots=True)
class L1Receipt:
    transaction_hash: bytes
    transaction_index: int
    block_hash: bytes
    block_number: int
    sender: bytes
    to: bytes | None
    cumulative_gas_used: int
    gas_used: int
    effective_gas_price: int
    contract_address: bytes | None
    logs: tuple[L1Log, ...]
    logs_bloom: int
    status: int
    type: int


@dataclass(frozen=True, slots=True)
class StorageProof:
    key: int
    value: int
    proof: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class AccountProof:
    """EIP-1186 proof of an account (and some of its storage slots) at one block."""

    address: bytes
    balance: int
    nonce: int
    code_hash: bytes
    storage_hash: bytes
    account_proof: tuple[bytes, ...]
    storage_proof: tuple[StorageProof, ...]


@dataclass(frozen=True, slots=True)
class CallRequest:
    """The message of eth_call / eth_estimateGas; absent fields take the node's defaults."""

    to: bytes | None = None
    data: bytes = b""
    sender: bytes | None = None
    value: int = 0
    gas: int | None = None
    gas_price: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None


@dataclass(frozen=True, slots=True)
class LogFilter:
    """eth_getLogs filter: `topics[i]` is None (any), one topic, or a tuple of alternatives."""

    from_block: BlockId = "latest"
    to_block: BlockId = "latest"
    addresses: tuple[bytes, ...] = ()
    topics: tuple[bytes | tuple[bytes, ...] | None, ...] = field(default=())
    block_hash: bytes | None = None


# ---------------------------------------------------------------------------------------------
# the interface


@runtime_checkable
class L1Client(Protocol):
    """How the node reads and writes the EVM chain. Every method is a coroutine.

    Block ids: an int, a tag ("latest", "earliest", "pending", "safe", "finalized") or a
    32-byte block hash. Missing blocks raise BlockNotFoundError; a missing receipt is None.
    """

    async def chain_id(self) -> int: ...

    async def block_number(self) -> int: ...

    async def get_block(self, block: BlockId = "latest") -> L1Block: ...

    async def call(
        self, to: bytes, data: bytes, block: BlockId = "latest", *, sender: bytes | None = None, value: int = 0
    ) -> bytes: ...

    async def estimate_gas(self, request: CallRequest, block: BlockId = "latest") -> int: ...

    async def send_raw_transaction(self, raw: bytes) -> bytes: ...

    async def get_transaction_receipt(self, tx_hash: bytes) -> L1Receipt | None: ...

    async def get_transaction(self, tx_hash: bytes) -> L1Transaction | None: ...

    async def get_logs(
        self,
        from_block: BlockId,
        to_block: BlockId,
        address: bytes | Sequence[bytes] | None = None,
        topics: Sequence[bytes | Sequence[bytes] | None] = (),
    ) -> list[L1Log]: ...

    async def get_proof(self, address: bytes, slots: Sequence[int], block: BlockId = "latest") -> AccountProof: ...

    async def get_balance(self, address: bytes, block: BlockId = "latest") -> int: ...

    async def get_transaction_count(self, address: bytes, block: BlockId = "latest") -> int: ...

    async def get_code(self, address: bytes, block: BlockId = "latest") -> bytes: ...

    async def get_storage_at(self, address: bytes, slot: int, block: BlockId = "latest") -> int: ...

    async def fee_suggestion(self) -> tuple[int, int]:
        """(max fee per gas, max priority fee per gas) likely to be mined in the next blocks."""
        ...


def _log_filter(
    from_block: BlockId,
    to_block: BlockId,
    address: bytes | Sequence[bytes] | None,
    topics: Sequence[bytes | Sequence[bytes] | None],
) -> LogFilter:
    if address is None:
        addresses: tuple[bytes, ...] = ()
    elif isinstance(address, bytes):
        addresses = (address,)
    else:
        addresses = tuple(address)
    norm: list[bytes | tuple[bytes, ...] | None] = [
        t if t is None or isinstance(t, bytes) else tuple(t) for t in topics
    ]
    return LogFilter(from_block=from_block, to_block=to_block, addresses=addresses, topics=tuple(norm))


PRIORITY_FEE = 10**9  # 1 gwei


# ---------------------------------------------------------------------------------------------
# embedded


class EmbeddedL1Client:
    """`L1Client` on an `EmbeddedChain` in the same process and event loop.

    With `auto_mine=True` every accepted transaction is mined at once in its own block (for
    tools and tests that run a chain without the devnet's block producer).

    The calls that execute EVM code or walk the chain's tries (call, estimate_gas, send, receipts,
    logs, proofs) first yield to the event loop: a caller that makes several in a row (the
    batcher) holds the loop for one call at a time, as it would with a remote chain.
    """

    def __init__(self, chain: EmbeddedChain, *, auto_mine: bool = False) -> None:
        self.chain = chain
        self.auto_mine = auto_mine

    async def chain_id(self) -> int:
        return self.chain.chain_id

    async def block_number(self) -> int:
        return self.chain.block_number

    async def get_block(self, block: BlockId = "latest") -> L1Block:
        return self.chain.get_block(block)

    async def call(
        self, to: bytes, data: bytes, block: BlockId = "latest", *, sender: bytes | None = None, value: int = 0
    ) -> bytes:
        await asyncio.sleep(0)
        return self.chain.call(CallRequest(to=to, data=data, sender=sender, value=value), block)

    async def estimate_gas(self, request: CallRequest, block: BlockId = "latest") -> int:
        await asyncio.sleep(0)
        return self.chain.estimate_gas(request, block)

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        await asyncio.sleep(0)
        tx_hash = self.chain.submit(raw)
        if self.auto_mine:
            self.chain.mine_pending(int(time.time()))
        return tx_hash

    async def get_transaction(self, tx_hash: bytes) -> L1Transaction | None:
        return self.chain.get_transaction(tx_hash)

    async def get_transaction_receipt(self, tx_hash: bytes) -> L1Receipt | None:
        await asyncio.sleep(0)
        receipt = self.chain.get_receipt(tx_hash)
        if receipt is None and tx_hash in self.chain.dropped:
            raise TransactionDropped(f"0x{tx_hash.hex()} was dropped: {self.chain.dropped[tx_hash]}")
        return receipt

    async def get_logs(
        self,
        from_block: BlockId,
        to_block: BlockId,
        address: bytes | Sequence[bytes] | None = None,
        topics: Sequence[bytes | Sequence[bytes] | None] = (),
    ) -> list[L1Log]:
        await asyncio.sleep(0)
        return self.chain.get_logs(_log_filter(from_block, to_block, address, topics))

    async def get_proof(self, address: bytes, slots: Sequence[int], block: BlockId = "latest") -> AccountProof:
        await asyncio.sleep(0)
        return self.chain.get_proof(address, slots, block)

    async def get_balance(self, address: bytes, block: BlockId = "latest") -> int:
        return self.chain.get_balance(address, block)

    async def get_transaction_count(self, address: bytes, block: BlockId = "latest") -> int:
        return self.chain.get_transaction_count(address, block)

    async def get_code(self, address: bytes, block: BlockId = "latest") -> bytes:
        return self.chain.get_code(address, block)

    async def get_storage_at(self, address: bytes, slot: int, block: BlockId = "latest") -> int:
        return self.chain.get_storage_at(address, slot, block)

    async def fee_suggestion(self) -> tuple[int, int]:
        return 2 * self.chain.next_base_fee() + PRIORITY_FEE, PRIORITY_FEE


# ---------------------------------------------------------------------------------------------
# JSON-RPC


_REJECTIONS: tuple[tuple[str, type[TransactionRejected]], ...] = (
    ("nonce too low", NonceTooLow),
    ("nonce too high", NonceTooHigh),
    ("insufficient funds", InsufficientFunds),
    ("already known", AlreadyKnown),
    ("replacement transaction underpriced", ReplacementUnderpriced),
    ("intrinsic gas too low", IntrinsicGasTooLow),
    ("exceeds the block gas limit", GasLimitExceeded),
    ("wrong chain id", WrongChainId),
    ("not replay-protected", WrongChainId),
)


def _q(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


def _b(value: str | None) -> bytes:
    return b"" if value is None else bytes.fromhex(value[2:])


def _block_param(block: BlockId) -> str | dict[str, str]:
    if isinstance(block, bytes):
        return {"blockHash": "0x" + block.hex()}
    if isinstance(block, int):
        return hex(block)
    return block


def _decode_log(d: dict[str, Any]) -> L1Log:
    return L1Log(
        address=_b(d["address"]),
        topics=tuple(_b(t) for t in d["topics"]),
        data=_b(d["data"]),
        block_number=_q(d["blockNumber"]),
        block_hash=_b(d["blockHash"]),
        transaction_hash=_b(d["transactionHash"]),
        transaction_index=_q(d["transactionIndex"]),
        log_index=_q(d["logIndex"]),
        removed=bool(d.get("removed", False)),
    )


def _decode_transaction(d: dict[str, Any]) -> L1Transaction:
    def opt(key: str) -> int | None:
        return None if d.get(key) is None else _q(d[key])

    return L1Transaction(
        hash=_b(d["hash"]),
        type=_q(d.get("type", "0x0")),
        nonce=_q(d["nonce"]),
        sender=_b(d["from"]),
        to=None if d.get("to") is None else _b(d["to"]),
        value=_q(d["value"]),
        gas=_q(d["gas"]),
        gas_price=_q(d.get("gasPrice", "0x0")),
        max_fee_per_gas=opt("maxFeePerGas"),
        max_priority_fee_per_gas=opt("maxPriorityFeePerGas"),
        input=_b(d.get("input") or d.get("data") or "0x"),
        chain_id=opt("chainId"),
        access_list=tuple(
            (_b(entry["address"]), tuple(_q(k) for k in entry.get("storageKeys", ())))
            for entry in d.get("accessList") or ()
        ),
        v=_q(d.get("v", "0x0")),
        r=_q(d.get("r", "0x0")),
        s=_q(d.get("s", "0x0")),
        block_hash=None if d.get("blockHash") is None else _b(d["blockHash"]),
        block_number=opt("blockNumber"),
        transaction_index=opt("transactionIndex"),
    )


def _decode_receipt(d: dict[str, Any]) -> L1Receipt:
    return L1Receipt(
        transaction_hash=_b(d["transactionHash"]),
        transaction_index=_q(d["transactionIndex"]),
        block_hash=_b(d["blockHash"]),
        block_number=_q(d["blockNumber"]),
        sender=_b(d["from"]),
        to=None if d.get("to") is None else _b(d["to"]),
        cumulative_gas_used=_q(d["cumulativeGasUsed"]),
        gas_used=_q(d["gasUsed"]),
        effective_gas_price=_q(d.get("effectiveGasPrice", "0x0")),
        contract_address=None if d.get("contractAddress") is None else _b(d["contractAddress"]),
        logs=tuple(_decode_log(entry) for entry in d["logs"]),
        logs_bloom=int.from_bytes(_b(d["logsBloom"]), "big"),
        status=_q(d.get("status", "0x1")),
        type=_q(d.get("type", "0x0")),
    )


def _decode_block(d: dict[str, Any]) -> L1Block:
    zero = "0x" + "00" * 32
    return L1Block(
        number=_q(d["number"]),
        hash=_b(d["hash"]),
        parent_hash=_b(d["parentHash"]),
        timestamp=_q(d["timestamp"]),
        state_root=_b(d["stateRoot"]),
        transactions_root=_b(d["transactionsRoot"]),
        receipts_root=_b(d["receiptsRoot"]),
        logs_bloom=int.from_bytes(_b(d["logsBloom"]), "big"),
        miner=_b(d["miner"]),
        difficulty=_q(d.get("difficulty", "0x0")),
        gas_limit=_q(d["gasLimit"]),
        gas_used=_q(d["gasUsed"]),
        base_fee_per_gas=_q(d.get("baseFeePerGas", "0x0")),
        extra_data=_b(d.get("extraData", "0x")),
        mix_hash=_b(d.get("mixHash", zero)),
        nonce=_b(d.get("nonce", "0x0000000000000000")),
        uncles_hash=_b(d.get("sha3Uncles", zero)),
        withdrawals_root=_b(d.get("withdrawalsRoot", zero)),
        blob_gas_used=_q(d.get("blobGasUsed", "0x0")),
        excess_blob_gas=_q(d.get("excessBlobGas", "0x0")),
        parent_beacon_block_root=_b(d.get("parentBeaconBlockRoot", zero)),
        requests_hash=_b(d.get("requestsHash", zero)),
        size=_q(d.get("size", "0x0")),
        transaction_hashes=tuple(_b(t if isinstance(t, str) else t["hash"]) for t in d["transactions"]),
    )


def _decode_proof(d: dict[str, Any]) -> AccountProof:
    return AccountProof(
        address=_b(d["address"]),
        balance=_q(d["balance"]),
        nonce=_q(d["nonce"]),
        code_hash=_b(d["codeHash"]),
        storage_hash=_b(d["storageHash"]),
        account_proof=tuple(_b(n) for n in d["accountProof"]),
        storage_proof=tuple(
            StorageProof(key=_q(sp["key"]), value=_q(sp["value"]), proof=tuple(_b(n) for n in sp["proof"]))
            for sp in d["storageProof"]
        ),
    )


def _call_object(request: CallRequest) -> dict[str, str]:
    out: dict[str, str] = {"input": "0x" + request.data.hex()}
    if request.to is not None:
        out["to"] = "0x" + request.to.hex()
    if request.sender is not None:
        out["from"] = "0x" + request.sender.hex()
    if request.value:
        out["value"] = hex(request.value)
    if request.gas is not None:
        out["gas"] = hex(request.gas)
    return out


class JsonRpcL1Client:
    """`L1Client` over standard eth_* JSON-RPC (HTTP, aiohttp) to any EVM node.

    Connection failures are retried `retries` times with a short backoff, then raise
    L1Unavailable. JSON-RPC errors map to the same exceptions the embedded client raises
    (code 3 -> ExecutionReverted with its data; known rejection messages -> the matching
    TransactionRejected subclass; anything else -> L1RpcError). Call `close()` when done.
    """

    def __init__(self, url: str, *, timeout: float = 30.0, retries: int = 3) -> None:
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._chain_id: int | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> JsonRpcL1Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def request(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call; returns its result or raises the mapped exception."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        payload = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            try:
                async with self._session.post(self.url, json=payload) as response:
                    body = await response.json(content_type=None)
                break
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                last_error = exc
                await asyncio.sleep(0.1 * (attempt + 1))
            except (aiohttp.ClientError, ValueError) as exc:
                raise L1RpcError(-32603, f"bad response from {self.url}: {exc}") from exc
        else:
            raise L1Unavailable(f"{self.url} unreachable: {last_error}") from last_error
        if not isinstance(body, dict):
            raise L1RpcError(-32603, f"unexpected response from {self.url}: {body!r}")
        error = body.get("error")
        if error is not None:
            raise self._map_error(method, error)
        return body.get("result")

    @staticmethod
    def _map_error(method: str, error: dict[str, Any]) -> L1Error:
        code = int(error.get("code", 0))
        message = str(error.get("message", ""))
        data = error.get("data")
        if code == 3 or message.startswith("execution reverted"):
            raw = _b(data) if isinstance(data, str) and data.startswith("0x") else b""
            reason = message.split(": ", 1)[1] if ": " in message else None
            return ExecutionReverted(raw, reason)
        lowered = message.lower()
        if "header not found" in lowered or "block not found" in lowered:
            return BlockNotFoundError(message)
        if method == "eth_sendRawTransaction":
            for needle, kind in _REJECTIONS:
                if needle in lowered:
                    return kind(message)
            return TransactionRejected(message)
        if method in ("eth_call", "eth_estimateGas") and code == -32000:
            return ExecutionFailed(message)
        return L1RpcError(code, message, data)

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = _q(await self.request("eth_chainId", []))
        return self._chain_id

    async def block_number(self) -> int:
        return _q(await self.request("eth_blockNumber", []))

    async def get_block(self, block: BlockId = "latest") -> L1Block:
        if isinstance(block, bytes):
            result = await self.request("eth_getBlockByHash", ["0x" + block.hex(), False])
        else:
            result = await self.request("eth_getBlockByNumber", [_block_param(block), False])
        if result is None:
            raise BlockNotFoundError(f"block {block!r} not found")
        return _decode_block(result)

    async def call(
        self, to: bytes, data: bytes, block: BlockId = "latest", *, sender: bytes | None = None, value: int = 0
    ) -> bytes:
        request = CallRequest(to=to, data=data, sender=sender, value=value)
        return _b(await self.request("eth_call", [_call_object(request), _block_param(block)]))

    async def estimate_gas(self, request: CallRequest, block: BlockId = "latest") -> int:
        return _q(await self.request("eth_estimateGas", [_call_object(request), _block_param(block)]))

    async def send_raw_transaction(self, raw: bytes) -> bytes:
        return _b(await self.request("eth_sendRawTransaction", ["0x" + raw.hex()]))

    async def get_transaction_receipt(self, tx_hash: bytes) -> L1Receipt | None:
        result = await self.request("eth_getTransactionReceipt", ["0x" + tx_hash.hex()])
        return None if result is None else _decode_receipt(result)

    async def get_transaction(self, tx_hash: bytes) -> L1Transaction | None:
        result = await self.request("eth_getTransactionByHash", ["0x" + tx_hash.hex()])
        return None if result is None else _decode_transaction(result)

    async def get_logs(
        self,
        from_block: BlockId,
        to_block: BlockId,
        address: bytes | Sequence[bytes] | None = None,
        topics: Sequence[bytes | Sequence[bytes] | None] = (),
    ) -> list[L1Log]:
        flt = _log_filter(from_block, to_block, address, topics)
        params: dict[str, Any] = {}
        if isinstance(from_block, bytes) and from_block == to_block:
            params["blockHash"] = "0x" + from_block.hex()
        else:
            params["fromBlock"] = _block_param(from_block)
            params["toBlock"] = _block_param(to_block)
        if flt.addresses:
            params["address"] = ["0x" + a.hex() for a in flt.addresses]
        if flt.topics:
            params["topics"] = [
                None if t is None else "0x" + t.hex() if isinstance(t, bytes) else ["0x" + x.hex() for x in t]
                for t in flt.topics
            ]
        return [_decode_log(entry) for entry in await self.request("eth_getLogs", [params])]

    async def get_proof(self, address: bytes, slots: Sequence[int], block: BlockId = "latest") -> AccountProof:
        keys_hex = ["0x" + s.to_bytes(32, "big").hex() for s in slots]
        result = await self.request("eth_getProof", ["0x" + address.hex(), keys_hex, _block_param(block)])
        return _decode_proof(result)

    async def get_balance(self, address: bytes, block: BlockId = "latest") -> int:
        return _q(await self.request("eth_getBalance", ["0x" + address.hex(), _block_param(block)]))

    async def get_transaction_count(self, address: bytes, block: BlockId = "latest") -> int:
        return _q(await self.request("eth_getTransactionCount", ["0x" + address.hex(), _block_param(block)]))

    async def get_code(self, address: bytes, block: BlockId = "latest") -> bytes:
        return _b(await self.request("eth_getCode", ["0x" + address.hex(), _block_param(block)]))

    async def get_storage_at(self, address: bytes, slot: int, block: BlockId = "latest") -> int:
        result = await self.request("eth_getStorageAt", ["0x" + address.hex(), hex(slot), _block_param(block)])
        return _q(result)

    async def fee_suggestion(self) -> tuple[int, int]:
        latest = await self.get_block("latest")
        try:
            priority = _q(await self.request("eth_maxPriorityFeePerGas", []))
        except L1RpcError:
            priority = PRIORITY_FEE
        return 2 * latest.base_fee_per_gas + priority, priority


# ---------------------------------------------------------------------------------------------
# sending


async def wait_for_receipt(
    client: L1Client, tx_hash: bytes, *, timeout: float = 60.0, poll_interval: float = 0.05
) -> L1Receipt:
    """Poll until `tx_hash` is mined; raise ReceiptTimeout after `timeout` seconds (and
    TransactionDropped as soon as the embedded chain reports it dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        receipt = await client.get_transaction_receipt(tx_hash)
        if receipt is not None:
            return receipt
        if loop.time() >= deadline:
            raise ReceiptTimeout(f"no receipt for 0x{tx_hash.hex()} within {timeout} s")
        await asyncio.sleep(poll_interval)


def sign_transaction(
    private_key: bytes,
    *,
    chain_id: int,
    nonce: int,
    to: bytes | None,
    data: bytes = b"",
    value: int = 0,
    gas: int,
    max_fee_per_gas: int,
    max_priority_fee_per_gas: int,
) -> bytes:
    """An EIP-1559 transaction signed with `private_key`, as raw bytes."""
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "to": to if to is not None else b"",
        "data": data,
        "value": value,
        "gas": gas,
        "maxFeePerGas": max_fee_per_gas,
        "maxPriorityFeePerGas": max_priority_fee_per_gas,
    }
    return bytes(Account.sign_transaction(tx, private_key).raw_transaction)


@dataclass(frozen=True)
class SentTransaction:
    """A transaction as it was signed and sent: enough to replace it with higher fees."""

    hash: bytes
    nonce: int
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int


async def submit_transaction(
    client: L1Client,
    private_key: bytes,
    to: bytes | None,
    data: bytes = b"",
    *,
    value: int = 0,
    gas: int | None = None,
    nonce: int | None = None,
    fees: tuple[int, int] | None = None,
) -> SentTransaction:
    """Build, sign and send a contract transaction from `private_key`; return it as sent,
    without waiting for it to be mined.

    Gas defaults to the estimate plus 20% (a revert at estimation raises ExecutionReverted
    before anything is sent); the nonce defaults to the sender's pending nonce, so transactions
    submitted one after the other queue behind each other; `fees` (max fee per gas, max
    priority fee per gas) default to `client.fee_suggestion()`.
    """
    sender = keys.PrivateKey(private_key).public_key.to_canonical_address()
    if gas is None:
        estimate = await client.estimate_gas(CallRequest(to=to, data=data, sender=sender, value=value))
        gas = estimate + estimate // 5
    if nonce is None:
        nonce = await client.get_transaction_count(sender, "pending")
    max_fee, priority = fees if fees is not None else await client.fee_suggestion()
    raw = sign_transaction(
        private_key,
        chain_id=await client.chain_id(),
        nonce=nonce,
        to=to,
        data=data,
        value=value,
        gas=gas,
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=priority,
    )
    tx_hash = await client.send_raw_transaction(raw)
    return SentTransaction(tx_hash, nonce, gas, max_fee, priority)


async def send_transaction(
    client: L1Client,
    private_key: bytes,
    to: bytes | None,
    data: bytes = b"",
    *,
    value: int = 0,
    gas: int | None = None,
    nonce: int | None = None,
    timeout: float = 60.0,
    require_success: bool = True,
    on_sent: Callable[[bytes], None] | None = None,
) -> L1Receipt:
    """`submit_transaction`, then wait for its receipt.

    Raises TransactionFailed if the receipt has status 0 and `require_success`, ReceiptTimeout
    if it is not mined within `timeout` seconds. `on_sent` is called with the transaction hash
    as soon as the chain accepted it.
    """
    tx_hash = (await submit_transaction(client, private_key, to, data, value=value, gas=gas, nonce=nonce)).hash
    if on_sent is not None:
        on_sent(tx_hash)
    receipt = await wait_for_receipt(client, tx_hash, timeout=timeout)
    if require_success and receipt.status != 1:
        raise TransactionFailed(receipt)
    return receipt
