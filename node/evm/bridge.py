"""A typed client of the bridge contract over any ``L1Client``.

Views return Python values; ``commit_batch`` builds the calldata of ``commitBatch`` and sends it
signed with the sequencer's key. ``decode_commit_batch`` reads that calldata back (how
``exos replay --from-l1`` finds every batch's data on the EVM chain alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_keys import keys
from eth_utils import keccak

from node.evm.l1 import L1Client, L1Receipt, SentTransaction, send_transaction, submit_transaction

COMMIT_BATCH_SIGNATURE = "commitBatch(bytes32,bytes32,uint64,uint256,bytes32,(uint64,address,uint32,uint256)[],bytes)"
COMMIT_BATCH_TYPES = ["bytes32", "bytes32", "uint64", "uint256", "bytes32", "(uint64,address,uint32,uint256)[]", "bytes"]
BATCH_COMMITTED_TOPIC = keccak(text="BatchCommitted(uint256,bytes32,uint64,uint256,bytes32,uint256)")


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """A batch as the bridge stores it."""

    index: int
    state_root: bytes
    tz_block: int
    l1_block: int
    message_cursor: int
    data_hash: bytes


@dataclass(frozen=True, slots=True)
class WithdrawalEntry:
    """A withdrawal a batch makes claimable: (withdrawalId, recipient, assetId, amount)."""

    withdrawal_id: int
    recipient: bytes
    asset_id: int
    amount: int


@dataclass(frozen=True, slots=True)
class CommitBatchCall:
    """The decoded arguments of a ``commitBatch`` transaction."""

    prev_root: bytes
    new_root: bytes
    tz_block: int
    new_cursor: int
    rolling_hash: bytes
    withdrawals: tuple[WithdrawalEntry, ...]
    data: bytes


# Gas of commitBatch beyond the calldata: the batch record and the bridge's counters (fresh
# storage), the event, and per withdrawal its status slot and checks; the data is copied to
# memory and hashed. The bound below covers them with room (tests/sequencer/test_batcher.py
# checks it against the gas real batches use).
COMMIT_EXECUTION_BASE = 250_000
COMMIT_GAS_PER_WITHDRAWAL = 30_000


def commit_gas_bound(calldata: bytes, withdrawals: int) -> int:
    """A gas limit that suffices for a ``commitBatch`` transaction with this calldata.

    The calldata is priced as Prague prices it (EIP-7623): 21,000 plus the larger of 4 gas per
    calldata token plus execution, and 10 gas per token, where a zero byte is one token and any
    other byte four. Execution is bounded by a base, a cost per withdrawal, and the copy, hash
    and memory of the data.
    """
    zeros = calldata.count(0)
    tokens = zeros + 4 * (len(calldata) - zeros)
    words = (len(calldata) + 31) // 32
    execution = COMMIT_EXECUTION_BASE + COMMIT_GAS_PER_WITHDRAWAL * withdrawals + 16 * words + words * words // 256
    return 21_000 + max(4 * tokens + execution, 10 * tokens)


def encode_commit_batch(call: CommitBatchCall) -> bytes:
    return selector(COMMIT_BATCH_SIGNATURE) + abi_encode(
        COMMIT_BATCH_TYPES,
        [
            call.prev_root,
            call.new_root,
            call.tz_block,
            call.new_cursor,
            call.rolling_hash,
            [(w.withdrawal_id, w.recipient, w.asset_id, w.amount) for w in call.withdrawals],
            call.data,
        ],
    )


def decode_commit_batch(calldata: bytes) -> CommitBatchCall:
    """Decode ``commitBatch`` calldata; raises ValueError if it is not such a call."""
    if calldata[:4] != selector(COMMIT_BATCH_SIGNATURE):
        raise ValueError("not a commitBatch call")
    prev, new, tz_block, cursor, rolling, withdrawals, data = abi_decode(COMMIT_BATCH_TYPES, calldata[4:])
    return CommitBatchCall(
        bytes(prev), bytes(new), tz_block, cursor, bytes(rolling),
        tuple(WithdrawalEntry(w[0], bytes.fromhex(w[1][2:]), w[2], w[3]) for w in withdrawals),
        bytes(data),
    )


class BridgeClient:
    """The bridge at ``address`` seen through ``l1``."""

    def __init__(self, l1: L1Client, address: bytes) -> None:
        self.l1 = l1
        self.address = address

    async def _view(self, signature: str, types: Sequence[str], args: Sequence[object], out: Sequence[str],
                    block: int | str = "latest") -> tuple[Any, ...]:
        data = selector(signature) + (abi_encode(list(types), list(args)) if types else b"")
        raw = await self.l1.call(self.address, data, block)
        return tuple(abi_decode(list(out), raw))

    async def batch_count(self, block: int | str = "latest") -> int:
        return int((await self._view("batchCount()", [], [], ["uint256"], block))[0])

    async def batch(self, index: int, block: int | str = "latest") -> BatchInfo:
        root, tz_block, l1_block, cursor, data_hash = await self._view(
            "batches(uint256)", ["uint256"], [index], ["bytes32", "uint64", "uint256", "uint256", "bytes32"], block)
        return BatchInfo(index, bytes(root), int(tz_block), int(l1_block), int(cursor), bytes(data_hash))

    async def last_committed_root(self, block: int | str = "latest") -> bytes:
        return bytes((await self._view("lastCommittedRoot()", [], [], ["bytes32"], block))[0])

    async def message_count(self, block: int | str = "latest") -> int:
        return int((await self._view("messageCount()", [], [], ["uint256"], block))[0])

    async def rolling_hash_at(self, index: int) -> bytes:
        return bytes((await self._view("rollingHashAt(uint256)", ["uint256"], [index], ["bytes32"]))[0])

    async def frozen(self) -> bool:
        return bool((await self._view("frozen()", [], [], ["bool"]))[0])

    async def finalization_delay(self) -> int:
        return int((await self._view("finalizationDelay()", [], [], ["uint256"]))[0])

    async def commit_batch(self, sequencer_key: bytes, call: CommitBatchCall, *, timeout: float = 60.0,
                           on_sent: Callable[[bytes], None] | None = None) -> L1Receipt:
        """Send ``commitBatch`` signed by the sequencer key and wait for its receipt. Raises the
        L1 client's errors (ExecutionReverted at estimation, TransactionFailed, ReceiptTimeout)."""
        return await send_transaction(self.l1, sequencer_key, self.address, encode_commit_batch(call),
                                      timeout=timeout, on_sent=on_sent)

    async def submit_commit_batch(
        self, sequencer_key: bytes, call: CommitBatchCall, *, check: bool = True,
        replacing: SentTransaction | None = None, fees: tuple[int, int] | None = None,
    ) -> SentTransaction:
        """Send ``commitBatch`` signed by the sequencer key; return the transaction at once.

        The gas limit is ``commit_gas_bound`` (no estimate: a batch that follows others still in
        flight cannot be estimated, its previous root is not committed yet). With ``check`` the
        call is first run against the latest state, so a batch the bridge would refuse raises
        ExecutionReverted before anything is sent. ``replacing`` sends the same transaction again
        (same nonce and gas) with ``fees``.
        """
        calldata = encode_commit_batch(call)
        if replacing is not None:
            return await submit_transaction(self.l1, sequencer_key, self.address, calldata, gas=replacing.gas,
                                            nonce=replacing.nonce, fees=fees)
        if check:
            sender = keys.PrivateKey(sequencer_key).public_key.to_canonical_address()
            await self.l1.call(self.address, calldata, sender=sender)
        gas = commit_gas_bound(calldata, len(call.withdrawals))
        return await submit_transaction(self.l1, sequencer_key, self.address, calldata, gas=gas, fees=fees)
