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

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from eth_utils import encode_hex

if TYPE_CHECKING:
    pass

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
