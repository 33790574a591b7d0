"""A small driver for TradeZone state tests and vectors: devnet genesis, deterministic keys,
signed actions and sealed blocks over the real state transition (no doubles)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from eth_hash.auto import keccak

from node.tradezone.blocks import Block, Header
from node.tradezone.genesis import build_genesis_state, genesis_header, load_genesis_spec
from node.tradezone.receipts import Receipt
from node.tradezone.signing import Signer
from node.tradezone.state import State
from node.tradezone.state_transition import seal_block
from node.tradezone.transactions import (
    Action,
    DepositMessage,
    ForcedWithdrawalMessage,
    L1Message,
    SignedTx,
    StakeMessage,
    Transaction,
)

USDT, WBTC, OKB, WCP = 1, 2, 0, 1000
SPOT, BTC_PERP, ETH_PERP, OUTCOME = 1, 2, 3, 100
M = TypeVar("M", bound=L1Message)

ORACLE_KEY = bytes.fromhex("dbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97")  # devnet account 8


def key_of(index: int) -> bytes:
    """A deterministic test private key."""
    return keccak(b"exos-test-key" + index.to_bytes(4, "big"))


class Harness:
    """One TradeZone chain from the devnet genesis, driven block by block."""

    def __init__(self, spec: dict | None = None) -> None:
        self.spec = spec if spec is not None else load_genesis_spec()
        self.state: State = build_genesis_state(self.spec)
        self.head: Header = genesis_header(self.state, self.spec)
        self.nonces: dict[bytes, int] = {}
        self.l1_index = 0
        self.signers: dict[int, Signer] = {}
        self.blocks: list[Block] = []

    def signer(self, index: int) -> Signer:
        """Test key number ``index`` (8 is the devnet oracle/resolver key)."""
        if index not in self.signers:
            self.signers[index] = Signer(ORACLE_KEY if index == 8 else key_of(index))
        return self.signers[index]

    def addr(self, index: int) -> bytes:
        """Address of test key ``index``."""
        return self.signer(index).address

    def sign(self, index: int, action: Action, account: bytes | None = None) -> SignedTx:
        """Sign with key ``index`` and its next nonce (as this driver tracks it)."""
        signer = self.signer(index)
        nonce = self.nonces.get(signer.address, 0)
        self.nonces[signer.address] = nonce + 1
        return signer.sign(action, nonce, account)

    def _queued(self, message_type: type[M], *fields: object) -> M:
        """The next L1 message of ``message_type`` (its index is the queue's next)."""
        message = message_type(self.l1_index, *fields)
        self.l1_index += 1
        return message

    def deposit(self, recipient: bytes, asset_id: int, amount: int) -> DepositMessage:
        """The next L1 deposit message."""
        return self._queued(DepositMessage, recipient, recipient, asset_id, amount)

    def stake(self, staker: bytes, new_stake: int) -> StakeMessage:
        """The next L1 stake message (the staker's whole active stake after the change)."""
        return self._queued(StakeMessage, staker, new_stake)

    def forced_withdrawal(self, account: bytes, asset_id: int) -> ForcedWithdrawalMessage:
        """The next L1 forced-withdrawal message."""
        return self._queued(ForcedWithdrawalMessage, account, asset_id)

    def block(self, transactions: Sequence[Transaction]) -> list[Receipt]:
        """Seal and apply the next block (100 ms after the head); returns its receipts."""
        block, receipts = seal_block(
            self.state, self.head, transactions, self.head.timestamp_ms + 100, self.head.l1_origin
        )
        self.head = block.header
        self.blocks.append(block)
        return receipts

    def fund(self, index: int, asset_id: int, amount: int) -> None:
        """Deposit in its own block."""
        receipts = self.block([self.deposit(self.addr(index), asset_id, amount)])
        assert receipts[0].ok, receipts[0]

    def balance(self, index_or_address: int | bytes, asset_id: int) -> tuple[int, int]:
        """(balance, reserved)."""
        account = self.addr(index_or_address) if isinstance(index_or_address, int) else index_or_address
        return self.state.balances.get((account, asset_id), (0, 0))


def is_l1(tx: Transaction) -> bool:
    """True for an L1 system message."""
    return isinstance(tx, L1Message)
