"""The bounded mempool of admitted user transactions.

Transactions wait here, in arrival order, until the block producer takes them. The pool never
grows past its bounds: over the total or the per-account limit it refuses with ``MempoolFull``;
a transaction already pending (same hash) is refused with ``DuplicateTransaction``. It tracks,
per signing key, the next nonce counting pending transactions, so that a key may queue several
actions for the same block (nonces n, n+1, ...) and a replay of a pending nonce is refused.
"""

from __future__ import annotations

from collections import OrderedDict

from node.tradezone.errors import InvalidTransaction
from node.tradezone.transactions import PlaceOrders, SignedTx, encode_transaction


def action_count(tx: SignedTx) -> int:
    """How many actions a transaction asks the VM to apply: the orders of a ``PlaceOrders``, 1
    for anything else. Blocks are bounded by this count, which tracks their cost."""
    action = tx.action
    return len(action.orders) if type(action) is PlaceOrders else 1


class MempoolError(InvalidTransaction):
    """The mempool refuses a transaction that is otherwise valid."""

    reason = "mempool_error"


class MempoolFull(MempoolError):
    """The mempool (or the account's share of it) is at its bound; retry after the next block."""

    reason = "mempool_full"


class DuplicateTransaction(MempoolError):
    """The same transaction is already pending."""

    reason = "duplicate_transaction"


class Mempool:
    """Admitted transactions by hash, in arrival order, with per-account and per-signer counts."""

    def __init__(self, max_total: int = 200_000, max_per_account: int = 20_000) -> None:
        self.max_total = max_total
        self.max_per_account = max_per_account
        self._pending: OrderedDict[bytes, tuple[SignedTx, bytes]] = OrderedDict()
        self._per_account: dict[bytes, int] = {}
        self._per_signer: dict[bytes, int] = {}
        self._signer_next: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, hash_: object) -> bool:
        return hash_ in self._pending

    def get(self, hash_: bytes) -> SignedTx | None:
        """The pending transaction with this hash, if it is still waiting for a block."""
        entry = self._pending.get(hash_)
        return entry[0] if entry is not None else None

    def next_nonce(self, signer: bytes, state_nonce: int) -> int:
        """The nonce the signer's next transaction must carry: after its pending ones."""
        return self._signer_next.get(signer, state_nonce)

    def check_room(self, hash_: bytes, account: bytes) -> None:
        """Raise DuplicateTransaction or MempoolFull if ``add`` would refuse this transaction."""
        if hash_ in self._pending:
            raise DuplicateTransaction(f"transaction 0x{hash_.hex()} is already pending")
        if len(self._pending) >= self.max_total:
            raise MempoolFull(f"the mempool holds its maximum of {self.max_total} transactions")
        if self._per_account.get(account, 0) >= self.max_per_account:
            raise MempoolFull(f"account 0x{account.hex()} has its maximum of {self.max_per_account} pending")

    def add(self, hash_: bytes, tx: SignedTx, signer: bytes, *, room_checked: bool = False) -> None:
        """Add an admitted transaction (its nonce already checked against ``next_nonce``).
        ``room_checked``: the caller ran ``check_room`` for it with nothing added since."""
        if not room_checked:
            self.check_room(hash_, tx.account)
        self._pending[hash_] = (tx, signer)
        self._per_account[tx.account] = self._per_account.get(tx.account, 0) + 1
        self._per_signer[signer] = self._per_signer.get(signer, 0) + 1
        self._signer_next[signer] = tx.nonce + 1

    def take(self, limit: int, max_actions: int | None = None, max_bytes: int | None = None, *,
             at_least_one: bool = True) -> list[tuple[bytes, SignedTx]]:
        """Remove and return up to ``limit`` transactions, oldest first (so each signer's
        nonces come in order), with no more than ``max_actions`` actions (``action_count``) and
        ``max_bytes`` of encoded transactions in all, though (with ``at_least_one``) always one
        transaction if any is pending. Once a signer has nothing pending, its nonce is the
        state's again."""
        taken: list[tuple[bytes, SignedTx]] = []
        pending = self._pending
        budget = max_actions
        room = max_bytes
        while pending and len(taken) < limit:
            hash_, (tx, signer) = pending.popitem(last=False)
            weight = action_count(tx) if budget is not None else 0
            size = len(encode_transaction(tx)) if room is not None else 0
            over = (budget is not None and weight > budget) or (room is not None and size > room)
            if over and (taken or not at_least_one):
                pending[hash_] = (tx, signer)  # not this block: back to the front, untouched
                pending.move_to_end(hash_, last=False)
                break
            if budget is not None:
                budget -= weight
            if room is not None:
                room -= size
            taken.append((hash_, tx))
            account = tx.account
            left = self._per_account[account] - 1
            if left:
                self._per_account[account] = left
            else:
                del self._per_account[account]
            left = self._per_signer[signer] - 1
            if left:
                self._per_signer[signer] = left
            else:
                del self._per_signer[signer]
                del self._signer_next[signer]
        return taken
