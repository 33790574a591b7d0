"""The embedded EVM chain (L1): py-evm Prague rules, a LevelDB store, a mempool, a block producer.

`EmbeddedChain.open(data_dir, genesis)` builds the genesis block on first start and resumes the
stored chain afterwards. `mine_pending(timestamp)` mines every executable pending transaction in
one `MiningChain.mine_all` call (empty blocks too), and writes the block, its receipts, its state
and the new head in one atomic LevelDB write batch (`EvmDatabase.unit()`): a crash at any moment
leaves the chain at the previous block or at the new one, never between.

The service layer (`node.devnet`) owns the chain, feeds it the wall clock and calls it from one
event loop thread; only the EVM execution and store write of `mine_pending_async` run in a
worker thread, on the miner's own py-evm chain object and a per-thread database unit, so
readers keep seeing the previous head until the whole block is written.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rlp
from eth import constants
from eth._utils.address import generate_contract_address
from eth.abc import BlockAPI, ReceiptAPI, SignedTransactionAPI
from eth.chains.base import MiningChain
from eth.db.atomic import AtomicDB
from eth.exceptions import (
    HeaderNotFound,
    Revert,
    TransactionNotFound,
    UnrecognizedTransactionType,
)
from eth.rlp.accounts import Account as RlpAccount
from eth.vm.forks import PragueVM
from eth.vm.spoof import SpoofTransaction
from eth_bloom import BloomFilter
from eth_keys.exceptions import BadSignature
from eth_typing import Address, BlockNumber, Hash32
from eth_utils import ValidationError, keccak, to_canonical_address
from trie import HexaryTrie

from node.db import LevelDBStore
from node.evm.db import EvmDatabase
from node.evm.l1 import (
    BLOCK_TAGS,
    AccountProof,
    AlreadyKnown,
    BlockId,
    BlockNotFoundError,
    CallRequest,
    ExecutionFailed,
    ExecutionReverted,
    FeeTooLow,
    GasLimitExceeded,
    InsufficientFunds,
    IntrinsicGasTooLow,
    InvalidBlockIdError,
    InvalidSignature,
    InvalidTransactionEncoding,
    L1Block,
    L1Log,
    L1Receipt,
    L1Transaction,
    LogFilter,
    MempoolFull,
    NonceTooHigh,
    NonceTooLow,
    ReplacementUnderpriced,
    StorageProof,
    UnsupportedTransactionType,
    WrongChainId,
)

log = logging.getLogger(__name__)

# py-evm types fork-specific header fields (base fee, withdrawals root, requests hash, ...) as
# optional or absent on its generic header API; every header of this chain is a Prague header
# that has them all, so headers are typed loosely here.
BlockHeader = Any

ZERO_ADDRESS = b"\x00" * 20
ACCEPTED_TX_TYPES = frozenset({0, 1, 2})
MAX_NONCE_AHEAD = 1024  # a sender may queue this many nonces past its next one
MAX_MEMPOOL_SIZE = 50_000
REPLACEMENT_BUMP_PERCENT = 10  # a replacement must pay at least 10% more (as geth)
MAX_LOG_BLOCK_RANGE = 100_000
BLOCK_CACHE_SIZE = 128
ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)

_GENESIS_KEY = b"exos:l1:genesis-hash"
_CHAIN_ID_KEY = b"exos:l1:chain-id"
_COINBASE_KEY = b"exos:l1:coinbase"


class ChainError(Exception):
    """The chain cannot be opened as asked."""


class GenesisMismatchError(ChainError):
    """The data directory holds a chain with another genesis block."""

    def __init__(self, stored: bytes, given: bytes) -> None:
        super().__init__(
            f"data directory holds genesis 0x{stored.hex()}, the given genesis is 0x{given.hex()}"
        )
        self.stored = stored
        self.given = given


class ChainNotInitializedError(ChainError):
    """The data directory has no chain and no genesis was given."""


# ---------------------------------------------------------------------------------------------
# genesis


@dataclass(frozen=True)
class GenesisAccount:
    balance: int = 0
    nonce: int = 0
    code: bytes = b""
    storage: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainGenesis:
    """Everything that determines the genesis block: chain id, header fields, pre-state."""

    chain_id: int
    alloc: Mapping[bytes, GenesisAccount]
    timestamp: int = 0
    gas_limit: int = 60_000_000
    base_fee_per_gas: int = 1_000_000_000
    coinbase: bytes = ZERO_ADDRESS
    extra_data: bytes = b""

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ChainGenesis:
        """Read a geth-style genesis document.

        Keys: `chainId` (or `config.chainId`), `timestamp`, `gasLimit`, `baseFeePerGas`,
        `coinbase`, `extraData`, and `alloc: {address: {balance, nonce, code, storage}}`;
        numbers may be ints or 0x-hex strings.
        """
        chain_id = doc.get("chainId", doc.get("config", {}).get("chainId"))
        if chain_id is None:
            raise ChainError("genesis has no chainId")
        alloc: dict[bytes, GenesisAccount] = {}
        for address, account in doc.get("alloc", {}).items():
            alloc[to_canonical_address(_hex_address(address))] = GenesisAccount(
                balance=_as_int(account.get("balance", 0)),
                nonce=_as_int(account.get("nonce", 0)),
                code=_as_bytes(account.get("code", "0x")),
                storage={
                    _as_int(slot): _as_int(value) for slot, value in account.get("storage", {}).items()
                },
            )
        return cls(
            chain_id=_as_int(chain_id),
            alloc=alloc,
            timestamp=_as_int(doc.get("timestamp", 0)),
            gas_limit=_as_int(doc.get("gasLimit", 60_000_000)),
            base_fee_per_gas=_as_int(doc.get("baseFeePerGas", 1_000_000_000)),
            coinbase=to_canonical_address(doc.get("coinbase", "0x" + "00" * 20)),
            extra_data=_as_bytes(doc.get("extraData", "0x")),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> ChainGenesis:
        with open(path) as f:
            return cls.from_json(json.load(f))

    def header_params(self) -> dict[str, Any]:
        return {
            "difficulty": 0,
            "gas_limit": self.gas_limit,
            "timestamp": self.timestamp,
            "coinbase": self.coinbase,
            "base_fee_per_gas": self.base_fee_per_gas,
            "extra_data": self.extra_data,
            "nonce": b"\x00" * 8,
            "mix_hash": constants.ZERO_HASH32,
        }

    def state(self) -> dict[Address, Any]:
        return {
            Address(address): {
                "balance": account.balance,
                "nonce": account.nonce,
                "code": account.code,
                "storage": dict(account.storage),
            }
            for address, account in self.alloc.items()
        }


def data_floor_gas(data: bytes) -> int:
    """The least gas a Prague transaction with this calldata may carry (EIP-7623): 21,000 plus
    10 per calldata token, a zero byte being one token and any other byte four. py-evm charges
    the floor when it finalizes a transaction but does not refuse a gas limit below it."""
    zeros = data.count(0)
    return 21_000 + 10 * (zeros + 4 * (len(data) - zeros))


def _hex_address(text: str) -> str:
    return text if text.startswith("0x") else "0x" + text


def _as_int(value: int | str) -> int:
    if isinstance(value, int):
        return value
    return int(value, 16) if value.startswith("0x") else int(value)


def _as_bytes(value: str | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


def chain_class_for(chain_id: int) -> type[MiningChain]:
    """The py-evm chain class: Prague rules from block 0, with the given chain id."""
    return MiningChain.configure(
        __name__="ExosL1Chain", vm_configuration=((0, PragueVM),), chain_id=chain_id
    )


def genesis_hash_of(genesis: ChainGenesis) -> bytes:
    """The hash of the genesis block `genesis` produces (computed in memory, nothing stored)."""
    chain = chain_class_for(genesis.chain_id).from_genesis(
        AtomicDB(), genesis.header_params(), genesis.state()
    )
    return chain.get_canonical_head().hash


# ---------------------------------------------------------------------------------------------
# mempool


@dataclass(slots=True)
class PendingTransaction:
    tx: SignedTransactionAPI
    raw: bytes
    hash: bytes
    sender: bytes
    nonce: int
    gas: int
    max_fee: int
    priority_fee: int
    max_cost: int
    arrival: int


@dataclass(frozen=True)
class MinedBlock:
    """What `mine_pending` did: the new head, and transactions it had to drop."""

    number: int
    hash: bytes
    timestamp: int
    transaction_count: int
    gas_used: int
    base_fee_per_gas: int
    dropped: tuple[tuple[bytes, str], ...] = ()


@dataclass(slots=True)
class _HeadView:
    header: BlockHeader
    state: Any
    next_header: BlockHeader


@dataclass(slots=True)
class _BlockPlan:
    parent: BlockHeader
    timestamp: int
    chosen: list[PendingTransaction]
    dropped: list[tuple[bytes, str]] = field(default_factory=list)


class _Abort(Exception):
    """Raised inside a db unit to throw its writes away."""


@dataclass(slots=True)
class _BlockData:
    block: BlockAPI
    info: L1Block
    transactions: tuple[L1Transaction, ...]
    receipts: tuple[L1Receipt, ...] | None = None


class EmbeddedChain:
    """A py-evm chain on LevelDB with a mempool and a block producer, owned by one thread."""

    def __init__(self, store: LevelDBStore, db: EvmDatabase, chain_id: int, coinbase: bytes) -> None:
        self.store = store
        self.db = db
        self.chain_id = chain_id
        self.coinbase = coinbase
        self._chain_class = chain_class_for(chain_id)
        self._chain: MiningChain = self._chain_class(db)  # reads (event-loop thread)
        self._miner: MiningChain = self._chain_class(db)  # block production (may run in a worker)
        self._mining = False
        self.genesis_hash: bytes = self._chain.get_canonical_block_hash(BlockNumber(0))
        self._tx_builder = PragueVM.get_transaction_builder()
        self._receipt_builder = PragueVM.get_receipt_builder()
        self._pending: dict[bytes, dict[int, PendingTransaction]] = {}
        self._pending_by_hash: dict[bytes, PendingTransaction] = {}
        self._arrivals = itertools.count()
        self._blocks: OrderedDict[int, _BlockData] = OrderedDict()
        self.dropped: OrderedDict[bytes, str] = OrderedDict()  # recent drops: hash -> reason
        self._head_view: _HeadView | None = None

    # -- opening ----------------------------------------------------------------------------

    @classmethod
    def open(
        cls, data_dir: str | Path, genesis: ChainGenesis | None = None, *, sync: bool = True
    ) -> EmbeddedChain:
        """Open the chain stored in `data_dir`, creating it from `genesis` on first start.

        Guarantees: on first start the genesis block, its state and the chain's metadata are
        written in one atomic batch; on later starts the stored head, state and balances are
        exactly those of the last completed block. Raises GenesisMismatchError if `genesis`
        differs from the stored one, ChainNotInitializedError if there is neither.
        """
        store = LevelDBStore(Path(data_dir) / "l1", sync=sync)
        try:
            db = EvmDatabase(store)
            stored_hash = store.get(_GENESIS_KEY)
            if stored_hash is None:
                if genesis is None:
                    raise ChainNotInitializedError(f"{data_dir} holds no chain; run `exos init` first")
                with db.unit():
                    chain = chain_class_for(genesis.chain_id).from_genesis(
                        db, genesis.header_params(), genesis.state()
                    )
                    db[_GENESIS_KEY] = chain.get_canonical_head().hash
                    db[_CHAIN_ID_KEY] = genesis.chain_id.to_bytes(8, "big")
                    db[_COINBASE_KEY] = genesis.coinbase
            elif genesis is not None:
                given_hash = genesis_hash_of(genesis)
                if given_hash != stored_hash:
                    raise GenesisMismatchError(stored_hash, given_hash)
            chain_id = int.from_bytes(db[_CHAIN_ID_KEY], "big")
            return cls(store, db, chain_id, db[_COINBASE_KEY])
        except BaseException:
            store.close()
            raise

    @staticmethod
    def is_initialized(data_dir: str | Path) -> bool:
        """True if `data_dir` holds a chain (does not open it)."""
        return (Path(data_dir) / "l1" / "CURRENT").exists()

    def close(self) -> None:
        """Close the store. Refused while a block is being mined (wait for it, or cancel the
        `mine_pending_async` task, which waits for its worker)."""
        if self._mining:
            raise ChainError("cannot close the chain while a block is being mined")
        self.store.close()

    # -- head -------------------------------------------------------------------------------

    def _view(self) -> _HeadView:
        """The head header, its state and the next base fee, built once per head: admission
        reads nonces and balances from one state object with a warm account cache."""
        if self._head_view is None:
            head = self._chain.get_canonical_head()
            self._head_view = _HeadView(
                header=head,
                state=self._chain.get_vm(head).state,
                next_header=self._chain.create_header_from_parent(head),
            )
        return self._head_view

    @property
    def head(self) -> BlockHeader:
        return self._view().header

    @property
    def block_number(self) -> int:
        return self.head.block_number

    def next_base_fee(self) -> int:
        """The base fee the next block will charge (EIP-1559, from the head)."""
        return int(self._view().next_header.base_fee_per_gas)

    # -- mempool ----------------------------------------------------------------------------

    def submit(self, raw: bytes) -> bytes:
        """Validate a raw signed transaction and add it to the mempool; return its hash.

        Checks, in order: decodable, accepted type (legacy, EIP-2930, EIP-1559), well-formed
        with enough intrinsic gas (and at least the EIP-7623 calldata floor), valid signature, this chain's id (EIP-155 protected), not
        already known, within the block gas limit, fee cap at least the next base fee, nonce
        not used and not too far ahead, a replacement pays 10% more, and the sender can pay
        gas * max fee + value on top of its earlier pending transactions. A failed check raises
        a `TransactionRejected` subclass and changes nothing.
        """
        tx = self._decode(raw)
        type_id = tx.type_id if tx.type_id is not None else 0
        if type_id not in ACCEPTED_TX_TYPES:
            raise UnsupportedTransactionType(f"transaction type {type_id} is not accepted")
        try:
            tx.validate()
        except ValidationError as exc:
            if "intrinsic" in str(exc).lower():
                raise IntrinsicGasTooLow(f"intrinsic gas too low: {exc}") from exc
            raise InvalidTransactionEncoding(f"invalid transaction: {exc}") from exc
        floor = data_floor_gas(tx.data)
        if tx.gas < floor:
            raise IntrinsicGasTooLow(f"intrinsic gas too low: gas {tx.gas} is below the calldata floor {floor} (EIP-7623)")
        try:
            sender = tx.sender
        except (BadSignature, ValidationError, ValueError) as exc:
            raise InvalidSignature(f"invalid signature: {exc}") from exc
        if tx.chain_id is None:
            raise WrongChainId("transaction is not replay-protected (EIP-155 chain id required)")
        if tx.chain_id != self.chain_id:
            raise WrongChainId(f"wrong chain id {tx.chain_id}, this chain is {self.chain_id}")
        tx_hash = tx.hash
        if tx_hash in self._pending_by_hash or self._mined_index(tx_hash) is not None:
            raise AlreadyKnown(f"already known: 0x{tx_hash.hex()}")
        gas_limit = self.head.gas_limit
        if tx.gas > gas_limit:
            raise GasLimitExceeded(f"gas {tx.gas} exceeds the block gas limit {gas_limit}")
        max_fee, priority_fee = tx.max_fee_per_gas, tx.max_priority_fee_per_gas
        if priority_fee > max_fee:
            raise FeeTooLow(f"max priority fee {priority_fee} exceeds max fee {max_fee}")
        base_fee = self.next_base_fee()
        if max_fee < base_fee:
            raise FeeTooLow(f"max fee per gas {max_fee} is below the next block's base fee {base_fee}")
        state = self._view().state
        account_nonce = state.get_nonce(sender)
        if tx.nonce < account_nonce:
            raise NonceTooLow(f"nonce too low: next nonce {account_nonce}, tx nonce {tx.nonce}")
        if tx.nonce > account_nonce + MAX_NONCE_AHEAD:
            raise NonceTooHigh(f"nonce too high: next nonce {account_nonce}, tx nonce {tx.nonce}")
        queue = self._pending.get(sender, {})
        replaced = queue.get(tx.nonce)
        if replaced is not None:
            bump = 100 + REPLACEMENT_BUMP_PERCENT
            if max_fee * 100 < replaced.max_fee * bump or priority_fee * 100 < replaced.priority_fee * bump:
                raise ReplacementUnderpriced(
                    f"replacement transaction underpriced: must pay {REPLACEMENT_BUMP_PERCENT}% more"
                )
        elif len(self._pending_by_hash) >= MAX_MEMPOOL_SIZE:
            raise MempoolFull(f"mempool full ({MAX_MEMPOOL_SIZE} transactions)")
        max_cost = tx.gas * max_fee + tx.value
        committed = sum(p.max_cost for n, p in queue.items() if n < tx.nonce)
        balance = state.get_balance(sender)
        if committed + max_cost > balance:
            raise InsufficientFunds(
                f"insufficient funds for gas * price + value: balance {balance}, "
                f"need {max_cost} (+{committed} for earlier pending transactions)"
            )
        pending = PendingTransaction(
            tx=tx, raw=raw, hash=tx_hash, sender=sender, nonce=tx.nonce, gas=tx.gas,
            max_fee=max_fee, priority_fee=priority_fee, max_cost=max_cost,
            arrival=next(self._arrivals),
        )
        if replaced is not None:
            del self._pending_by_hash[replaced.hash]
            self._note_dropped(replaced.hash, "replaced by a transaction paying more")
        self._pending.setdefault(sender, {})[tx.nonce] = pending
        self._pending_by_hash[tx_hash] = pending
        return tx_hash

    def _decode(self, raw: bytes) -> SignedTransactionAPI:
        if not raw:
            raise InvalidTransactionEncoding("empty transaction")
        try:
            return self._tx_builder.decode(raw)
        except UnrecognizedTransactionType as exc:
            raise UnsupportedTransactionType(f"unsupported transaction type: {exc}") from exc
        except (rlp.DecodingError, rlp.DeserializationError, ValidationError, ValueError,
                TypeError, IndexError) as exc:
            raise InvalidTransactionEncoding(f"cannot decode transaction: {exc}") from exc

    @property
    def pending_count(self) -> int:
        return len(self._pending_by_hash)

    def pending_nonce(self, sender: bytes) -> int:
        """The next nonce `sender` should use, counting its contiguous pending transactions."""
        nonce = self._view().state.get_nonce(sender)
        queue = self._pending.get(sender, {})
        while nonce in queue:
            nonce += 1
        return nonce

    def _note_dropped(self, tx_hash: bytes, reason: str) -> None:
        self.dropped[tx_hash] = reason
        while len(self.dropped) > 10_000:
            self.dropped.popitem(last=False)

    def _select(self, header: BlockHeader) -> list[PendingTransaction]:
        """Pick the executable pending transactions for a block on `header`'s parent state.

        Each sender's transactions go in nonce order from its account nonce, with no gaps;
        senders interleave by arrival; a transaction is left for a later block if its fee cap
        is under the base fee, it no longer fits the gas limit, or the sender's balance could
        not cover it after its earlier ones in this block (checked with worst-case costs).
        """
        state = self._view().state
        gas_left = header.gas_limit
        base_fee = header.base_fee_per_gas
        heap: list[tuple[int, bytes, int]] = []
        budgets: dict[bytes, int] = {}
        for sender, queue in self._pending.items():
            nonce = state.get_nonce(sender)
            if nonce in queue:
                budgets[sender] = state.get_balance(sender)
                heap.append((queue[nonce].arrival, sender, nonce))
        heapq.heapify(heap)
        chosen: list[PendingTransaction] = []
        while heap and gas_left >= 21_000:
            _, sender, nonce = heapq.heappop(heap)
            p = self._pending[sender][nonce]
            if p.max_fee < base_fee or p.gas > gas_left or p.max_cost > budgets[sender]:
                continue
            chosen.append(p)
            gas_left -= p.gas
            budgets[sender] -= p.max_cost
            following = self._pending[sender].get(nonce + 1)
            if following is not None:
                heapq.heappush(heap, (following.arrival, sender, nonce + 1))
        return chosen

    def _forget_mined_and_stale(self) -> None:
        state = self._view().state
        for sender in list(self._pending):
            account_nonce = state.get_nonce(sender)
            queue = self._pending[sender]
            for nonce in [n for n in queue if n < account_nonce]:
                del self._pending_by_hash[queue.pop(nonce).hash]
            if not queue:
                del self._pending[sender]

    def _drop_pending(self, p: PendingTransaction, reason: str) -> None:
        self._pending[p.sender].pop(p.nonce, None)
        if not self._pending[p.sender]:
            del self._pending[p.sender]
        self._pending_by_hash.pop(p.hash, None)
        self._note_dropped(p.hash, reason)
        log.warning("dropped transaction 0x%s: %s", p.hash.hex(), reason)

    # -- block production -------------------------------------------------------------------

    def mine_pending(self, timestamp: int) -> MinedBlock:
        """Mine one block holding every executable pending transaction (possibly none).

        The block's timestamp is `timestamp`, raised to parent + 1 if needed so that
        timestamps strictly increase. Guarantees: the block, its receipts, its state and the
        new head are written in one atomic write batch, synced to disk before this returns; a
        transaction that turns out invalid in block context (rare: another transaction of the
        block drained its sender) is dropped with a reason in `dropped` and the block is mined
        without it.
        """
        plan = self._plan_block(timestamp)
        try:
            while True:
                mined = self._finish_block(plan, self._execute_block(plan))
                if mined is not None:
                    return mined
        finally:
            self._mining = False

    async def mine_pending_async(self, timestamp: int) -> MinedBlock:
        """`mine_pending`, with the EVM execution and the store write in a worker thread.

        The event loop keeps serving meanwhile: reads see the previous head until the new
        block is written, then all of it at once. Mempool bookkeeping stays on the loop thread.
        Call it from the thread that owns the chain; one block at a time.
        """
        plan = self._plan_block(timestamp)
        try:
            while True:
                worker = asyncio.ensure_future(asyncio.to_thread(self._execute_block, plan))
                try:
                    outcome = await asyncio.shield(worker)
                except asyncio.CancelledError:
                    # the thread cannot be stopped: let it finish (its block may be written)
                    # and keep the mempool in step with the store before giving up
                    outcome = await worker
                    self._finish_block(plan, outcome)
                    raise
                mined = self._finish_block(plan, outcome)
                if mined is not None:
                    return mined
        finally:
            self._mining = False

    def _plan_block(self, timestamp: int) -> _BlockPlan:
        if self._mining:
            raise ChainError("a block is already being mined")
        self._mining = True
        parent = self.head
        return _BlockPlan(
            parent=parent,
            timestamp=max(timestamp, parent.timestamp + 1),
            chosen=self._select(self._view().next_header),
        )

    def _execute_block(self, plan: _BlockPlan) -> BlockAPI | tuple[int, str]:
        """Mine `plan` on the miner's own py-evm chain object (safe in a worker thread: it
        touches no mempool state). Returns the imported block, or (index, reason) of the first
        transaction that is invalid in block context, having written nothing."""
        parent = plan.parent
        txs = [p.tx for p in plan.chosen]
        try:
            with self.db.unit():
                self._miner.header = self._miner.create_header_from_parent(
                    parent, timestamp=plan.timestamp, gas_limit=parent.gas_limit, coinbase=self.coinbase
                )
                result, _receipts, _computations = self._miner.mine_all(txs)
            return result.imported_block
        except ValidationError as exc:
            self._miner = self._chain_class(self.db)
            bad = self._first_invalid(txs, parent, plan.timestamp)
            if bad is None:
                raise
            return bad, f"invalid in block context: {exc}"
        except BaseException:
            self._miner = self._chain_class(self.db)
            raise

    def _finish_block(self, plan: _BlockPlan, outcome: BlockAPI | tuple[int, str]) -> MinedBlock | None:
        """Mempool bookkeeping after `_execute_block` (loop thread). None: retry `plan`, from
        which the invalid transaction (and its sender's later ones) were removed."""
        if isinstance(outcome, tuple):
            bad, reason = outcome
            victim = plan.chosen[bad]
            self._drop_pending(victim, reason)
            plan.dropped.append((victim.hash, reason))
            plan.chosen = plan.chosen[:bad] + [p for p in plan.chosen[bad + 1 :] if p.sender != victim.sender]
            return None
        self._head_view = None
        self._forget_mined_and_stale()
        header: BlockHeader = outcome.header
        return MinedBlock(
            number=header.block_number,
            hash=header.hash,
            timestamp=header.timestamp,
            transaction_count=len(outcome.transactions),
            gas_used=header.gas_used,
            base_fee_per_gas=header.base_fee_per_gas,
            dropped=tuple(plan.dropped),
        )

    def _first_invalid(
        self, txs: Sequence[SignedTransactionAPI], parent: BlockHeader, timestamp: int
    ) -> int | None:
        """Index of the first transaction that fails validation when applied in order on
        `parent` (binary search over prefixes; nothing is written)."""

        def prefix_ok(k: int) -> bool:
            try:
                with self.db.unit():
                    header = self._miner.create_header_from_parent(
                        parent, timestamp=timestamp, gas_limit=parent.gas_limit, coinbase=self.coinbase
                    )
                    self._miner.get_vm(header).apply_all_transactions(txs[:k], header)
                    raise _Abort
            except _Abort:
                return True
            except ValidationError:
                return False

        if prefix_ok(len(txs)):
            return None
        lo, hi = 0, len(txs)  # prefix lo is fine, prefix hi fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if prefix_ok(mid):
                lo = mid
            else:
                hi = mid
        return hi - 1

    # -- blocks and transactions --------------------------------------------------------------

    def resolve(self, block_id: BlockId) -> BlockHeader:
        """The canonical header named by a number, a tag or a 32-byte hash (EIP-1898).

        "latest", "pending", "safe" and "finalized" all name the head: blocks are final once
        mined (one producer, no reorgs). Raises BlockNotFoundError / InvalidBlockIdError.
        """
        if isinstance(block_id, bool):
            raise InvalidBlockIdError(f"invalid block id {block_id!r}")
        if isinstance(block_id, int):
            if block_id < 0:
                raise InvalidBlockIdError(f"negative block number {block_id}")
            if block_id > self.block_number:  # written by a miner thread, not yet the head
                raise BlockNotFoundError(f"block {block_id} not found")
            try:
                return self._chain.chaindb.get_canonical_block_header_by_number(BlockNumber(block_id))
            except HeaderNotFound as exc:
                raise BlockNotFoundError(f"block {block_id} not found") from exc
        if isinstance(block_id, bytes):
            if len(block_id) != 32:
                raise InvalidBlockIdError("a block hash has 32 bytes")
            try:
                header = self._chain.get_block_header_by_hash(Hash32(block_id))
            except HeaderNotFound as exc:
                raise BlockNotFoundError(f"block 0x{block_id.hex()} not found") from exc
            if header.block_number > self.block_number:
                raise BlockNotFoundError(f"block 0x{block_id.hex()} not found")
            return header
        if block_id == "earliest":
            return self.resolve(0)
        if block_id in BLOCK_TAGS:
            return self.head
        raise InvalidBlockIdError(f"invalid block tag {block_id!r}")

    def _block_data(self, header: BlockHeader) -> _BlockData:
        number = header.block_number
        cached = self._blocks.get(number)
        if cached is not None and cached.info.hash == header.hash:
            self._blocks.move_to_end(number)
            return cached
        block = self._chain.get_block_by_header(header)
        transactions = tuple(
            _transaction_info(tx, header, index) for index, tx in enumerate(block.transactions)
        )
        info = _block_info(block)
        data = _BlockData(block=block, info=info, transactions=transactions)
        self._blocks[number] = data
        while len(self._blocks) > BLOCK_CACHE_SIZE:
            self._blocks.popitem(last=False)
        return data

    def _block_receipts(self, data: _BlockData) -> tuple[L1Receipt, ...]:
        if data.receipts is None:
            receipts = data.block.get_receipts(self._chain.chaindb)
            data.receipts = _receipt_infos(data.block, receipts, data.transactions)
        return data.receipts

    def get_block(self, block_id: BlockId) -> L1Block:
        return self._block_data(self.resolve(block_id)).info

    def get_block_transactions(self, block_id: BlockId) -> tuple[L1Transaction, ...]:
        return self._block_data(self.resolve(block_id)).transactions

    def _mined_index(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(block, position) of a transaction mined at or below the head. A block that
        `mine_pending_async`'s thread has written but the loop has not made the head yet is not
        visible: its transactions read as pending, as the balances at "latest" still show."""
        try:
            number, index = self._chain.chaindb.get_transaction_index(Hash32(tx_hash))
        except (TransactionNotFound, KeyError):
            return None
        if number > self.block_number:
            return None
        return int(number), index

    def get_transaction(self, tx_hash: bytes) -> L1Transaction | None:
        """A mined transaction with its position, a pending one without, or None."""
        index = self._mined_index(tx_hash)
        if index is not None:
            number, position = index
            return self._block_data(self.resolve(number)).transactions[position]
        pending = self._pending_by_hash.get(tx_hash)
        if pending is not None:
            return _transaction_info(pending.tx, None, None)
        return None

    def get_receipt(self, tx_hash: bytes) -> L1Receipt | None:
        """The receipt of a mined transaction, or None if it is not mined."""
        index = self._mined_index(tx_hash)
        if index is None:
            return None
        number, position = index
        return self._block_receipts(self._block_data(self.resolve(number)))[position]

    def get_logs(self, log_filter: LogFilter) -> list[L1Log]:
        """Logs matching `log_filter` in block order (addresses: any of; topics: per position,
        None = any, a tuple = any of). A range reaching past the head stops at the head (and is
        empty if it starts past it). Raises InvalidBlockIdError for a reversed or too long
        range."""
        if log_filter.block_hash is not None:
            headers: Iterable[BlockHeader] = [self.resolve(log_filter.block_hash)]
        else:
            head = self.block_number
            first = self._log_bound(log_filter.from_block, head)
            last = min(self._log_bound(log_filter.to_block, head), head)
            if first > head:
                return []
            if first > last:
                raise InvalidBlockIdError(f"fromBlock {first} is after toBlock {last}")
            if last - first + 1 > MAX_LOG_BLOCK_RANGE:
                raise InvalidBlockIdError(f"block range longer than {MAX_LOG_BLOCK_RANGE} blocks")
            chaindb = self._chain.chaindb
            headers = (
                chaindb.get_canonical_block_header_by_number(BlockNumber(n)) for n in range(first, last + 1)
            )
        addresses = set(log_filter.addresses)
        topic_sets: list[set[bytes] | None] = [
            None if t is None else ({t} if isinstance(t, bytes) else set(t)) for t in log_filter.topics
        ]
        found: list[L1Log] = []
        for header in headers:
            if not _bloom_may_match(header.bloom, addresses, topic_sets):
                continue
            for receipt in self._block_receipts(self._block_data(header)):
                for entry in receipt.logs:
                    if _log_matches(entry, addresses, topic_sets):
                        found.append(entry)
        return found

    def _log_bound(self, block_id: BlockId, head: int) -> int:
        """A log-range bound as a number; numbers past the head are kept (the range is clamped
        to the head by the caller, as geth does), tags and hashes are resolved."""
        if isinstance(block_id, int) and not isinstance(block_id, bool) and block_id > head:
            return block_id
        return int(self.resolve(block_id).block_number)

    # -- state --------------------------------------------------------------------------------

    def _state(self, block_id: BlockId) -> Any:
        header = self.resolve(block_id)
        view = self._view()
        if header.hash == view.header.hash:
            return view.state
        return self._chain.get_vm(header).state

    def get_balance(self, address: bytes, block_id: BlockId = "latest") -> int:
        return self._state(block_id).get_balance(address)

    def get_transaction_count(self, address: bytes, block_id: BlockId = "latest") -> int:
        if block_id == "pending":
            return self.pending_nonce(address)
        return self._state(block_id).get_nonce(address)

    def get_code(self, address: bytes, block_id: BlockId = "latest") -> bytes:
        return self._state(block_id).get_code(address)

    def get_storage_at(self, address: bytes, slot: int, block_id: BlockId = "latest") -> int:
        return self._state(block_id).get_storage(address, slot)

    def _execute(self, request: CallRequest, header: BlockHeader, gas: int) -> Any:
        vm = self._chain.get_vm(header)
        sender = Address(request.sender or ZERO_ADDRESS)
        with vm.in_costless_state() as state:
            unsigned = vm.create_unsigned_transaction(
                nonce=state.get_nonce(sender),
                gas_price=0,
                gas=gas,
                to=Address(request.to) if request.to is not None else constants.CREATE_CONTRACT_ADDRESS,
                value=request.value,
                data=request.data,
            )
            try:
                spoof: Any = SpoofTransaction(unsigned, from_=sender)
                return state.costless_execute_transaction(spoof)
            except ValidationError as exc:
                raise ExecutionFailed(str(exc)) from exc

    def call(self, request: CallRequest, block_id: BlockId = "latest") -> bytes:
        """Execute a message on the state of a block without changing anything; return its
        output. Raises ExecutionReverted (with revert data) or ExecutionFailed."""
        header = self.resolve(block_id)
        computation = self._execute(request, header, request.gas or header.gas_limit)
        _raise_if_failed(computation)
        return computation.output

    def estimate_gas(self, request: CallRequest, block_id: BlockId = "latest") -> int:
        """A gas limit with which the message succeeds, at most 1.5% above the smallest one,
        and never below the EIP-7623 calldata floor (a transaction under it is invalid),
        capped by `request.gas` or the block gas limit. Raises ExecutionReverted /
        ExecutionFailed if it fails even with the cap.

        The search starts from what the message consumed with the cap (no smaller limit can
        succeed) and first tries that plus the 1/64 that calls hold back and a call stipend,
        which usually succeeds; so a large message (a batch commit carrying 240 KB) executes
        three or four times, not the ~25 of a plain binary search up to the block gas limit.
        The same 1.5% tolerance as geth's estimator.
        """
        header = self.resolve(block_id)
        cap = request.gas or header.gas_limit
        computation = self._execute(request, header, cap)
        _raise_if_failed(computation)
        consumed = cap - computation.get_gas_remaining()
        lo = max(consumed, 21_000) - 1  # the largest limit known to fail
        hi = cap  # the smallest limit known to succeed
        optimistic = min(cap, consumed * 64 // 63 + 2_300)
        if optimistic < hi and not self._execute(request, header, optimistic).is_error:
            hi = optimistic
        while hi - lo > 1 and (hi - lo) * 1000 > hi * 15:
            mid = (lo + hi) // 2
            if self._execute(request, header, mid).is_error:
                lo = mid
            else:
                hi = mid
        return max(hi, data_floor_gas(request.data))

    def get_proof(self, address: bytes, slots: Sequence[int], block_id: BlockId = "latest") -> AccountProof:
        """EIP-1186 account and storage proofs against the state root of a block."""
        header = self.resolve(block_id)
        state_trie = HexaryTrie(self.db, header.state_root)
        account_key = keccak(address)
        account_proof = tuple(rlp.encode(node) for node in state_trie.get_proof(account_key))
        encoded = state_trie.get(account_key)
        if encoded:
            account = rlp.decode(encoded, sedes=RlpAccount)
        else:
            account = RlpAccount()
        storage_trie = HexaryTrie(self.db, account.storage_root)
        storage_proofs = []
        for slot in slots:
            slot_key = keccak(slot.to_bytes(32, "big"))
            value_rlp = storage_trie.get(slot_key)
            storage_proofs.append(
                StorageProof(
                    key=slot,
                    value=rlp.decode(value_rlp, sedes=rlp.sedes.big_endian_int) if value_rlp else 0,
                    proof=tuple(rlp.encode(node) for node in storage_trie.get_proof(slot_key)),
                )
            )
        return AccountProof(
            address=address,
            balance=account.balance,
            nonce=account.nonce,
            code_hash=account.code_hash,
            storage_hash=account.storage_root,
            account_proof=account_proof,
            storage_proof=tuple(storage_proofs),
        )

    def fee_history(self, count: int, newest: BlockId) -> tuple[int, list[int], list[float]]:
        """(oldest block, base fees of the blocks and of the next one, gas-used ratios)."""
        last = self.resolve(newest).block_number
        first = max(0, last - count + 1)
        base_fees: list[int] = []
        ratios: list[float] = []
        for number in range(first, last + 1):
            header = self.resolve(number)
            base_fees.append(header.base_fee_per_gas)
            ratios.append(header.gas_used / header.gas_limit if header.gas_limit else 0.0)
        next_header: BlockHeader = self._chain.create_header_from_parent(self.resolve(last))
        base_fees.append(next_header.base_fee_per_gas)
        return first, base_fees, ratios


# ---------------------------------------------------------------------------------------------
# conversions


def _revert_reason(data: bytes) -> str | None:
    if data[:4] == ERROR_STRING_SELECTOR and len(data) >= 68:
        try:
            length = int.from_bytes(data[36:68], "big")
            return data[68 : 68 + length].decode("utf-8", errors="replace")
        except (ValueError, OverflowError):
            return None
    if data[:4] == PANIC_SELECTOR and len(data) >= 36:
        return f"panic code 0x{int.from_bytes(data[4:36], 'big'):x}"
    return None


def _raise_if_failed(computation: Any) -> None:
    if not computation.is_error:
        return
    error = computation.error
    if isinstance(error, Revert):
        data = bytes(computation.output)
        raise ExecutionReverted(data, _revert_reason(data))
    raise ExecutionFailed(f"execution failed: {type(error).__name__} {error}".strip())


def _transaction_info(tx: Any, header: BlockHeader | None, index: int | None) -> L1Transaction:
    """The L1Transaction view of a py-evm signed transaction (legacy, 2930 or 1559)."""
    type_id = tx.type_id if tx.type_id is not None else 0
    if type_id == 2:
        max_fee, priority = tx.max_fee_per_gas, tx.max_priority_fee_per_gas
        gas_price = (
            min(max_fee, header.base_fee_per_gas + priority) if header is not None else max_fee
        )
        fee_cap: int | None = max_fee
        tip: int | None = priority
    else:
        gas_price = tx.gas_price
        fee_cap = tip = None
    v = tx.v if type_id == 0 else tx.y_parity
    return L1Transaction(
        hash=tx.hash,
        type=type_id,
        nonce=tx.nonce,
        sender=tx.sender,
        to=tx.to or None,
        value=tx.value,
        gas=tx.gas,
        gas_price=gas_price,
        max_fee_per_gas=fee_cap,
        max_priority_fee_per_gas=tip,
        input=tx.data,
        chain_id=tx.chain_id,
        access_list=tuple((bytes(account), tuple(slots)) for account, slots in tx.access_list),
        v=v,
        r=tx.r,
        s=tx.s,
        block_hash=header.hash if header is not None else None,
        block_number=header.block_number if header is not None else None,
        transaction_index=index,
    )


def _block_info(block: BlockAPI) -> L1Block:
    h: BlockHeader = block.header
    return L1Block(
        number=h.block_number,
        hash=h.hash,
        parent_hash=h.parent_hash,
        timestamp=h.timestamp,
        state_root=h.state_root,
        transactions_root=h.transaction_root,
        receipts_root=h.receipt_root,
        logs_bloom=h.bloom,
        miner=h.coinbase,
        difficulty=h.difficulty,
        gas_limit=h.gas_limit,
        gas_used=h.gas_used,
        base_fee_per_gas=h.base_fee_per_gas,
        extra_data=h.extra_data,
        mix_hash=h.mix_hash,
        nonce=h.nonce,
        uncles_hash=h.uncles_hash,
        withdrawals_root=h.withdrawals_root,
        blob_gas_used=h.blob_gas_used,
        excess_blob_gas=h.excess_blob_gas,
        parent_beacon_block_root=h.parent_beacon_block_root,
        requests_hash=h.requests_hash,
        size=len(rlp.encode(block)),
        transaction_hashes=tuple(tx.hash for tx in block.transactions),
    )


def _receipt_infos(
    block: BlockAPI, receipts: Sequence[ReceiptAPI], transactions: Sequence[L1Transaction]
) -> tuple[L1Receipt, ...]:
    header = block.header
    result: list[L1Receipt] = []
    previous_cumulative = 0
    log_index = 0
    for index, (receipt, tx) in enumerate(zip(receipts, transactions, strict=True)):
        logs = []
        for entry in receipt.logs:
            logs.append(
                L1Log(
                    address=entry.address,
                    topics=tuple(t.to_bytes(32, "big") for t in entry.topics),
                    data=entry.data,
                    block_number=header.block_number,
                    block_hash=header.hash,
                    transaction_hash=tx.hash,
                    transaction_index=index,
                    log_index=log_index,
                )
            )
            log_index += 1
        status = 1 if receipt.state_root == b"\x01" else 0
        result.append(
            L1Receipt(
                transaction_hash=tx.hash,
                transaction_index=index,
                block_hash=header.hash,
                block_number=header.block_number,
                sender=tx.sender,
                to=tx.to,
                cumulative_gas_used=receipt.gas_used,
                gas_used=receipt.gas_used - previous_cumulative,
                effective_gas_price=tx.gas_price,
                contract_address=(
                    generate_contract_address(Address(tx.sender), tx.nonce) if tx.to is None else None
                ),
                logs=tuple(logs),
                logs_bloom=receipt.bloom,
                status=status,
                type=tx.type,
            )
        )
        previous_cumulative = receipt.gas_used
    return tuple(result)


def _bloom_may_match(bloom: int, addresses: set[bytes], topic_sets: list[set[bytes] | None]) -> bool:
    if not addresses and all(t is None for t in topic_sets):
        return True
    filt = BloomFilter(bloom)
    if addresses and not any(a in filt for a in addresses):
        return False
    return all(options is None or any(t in filt for t in options) for options in topic_sets)


def _log_matches(entry: L1Log, addresses: set[bytes], topic_sets: list[set[bytes] | None]) -> bool:
    if addresses and entry.address not in addresses:
        return False
    if len(topic_sets) > len(entry.topics):
        return False
    return all(options is None or entry.topics[i] in options for i, options in enumerate(topic_sets))
