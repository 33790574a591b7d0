"""Unified accounts: balances and reservations, nonces, agents, transfers and withdrawals.

One account per 20-byte address holds a balance of every asset (integer smallest units) and the
part of it reserved by resting orders; the same balances back spot, perpetual and outcome
trading. Nothing here reads a clock: expiries compare against the block's timestamp passed in.
"""

from __future__ import annotations

import msgspec

from node.tradezone.errors import (
    AgentExpired,
    InsufficientBalance,
    InvalidAction,
    NonceMismatch,
    UnauthorizedSigner,
    UnknownAsset,
)
from node.tradezone.state import (
    TAG_AGENT,
    TAG_NONCE,
    TAG_WITHDRAWAL,
    State,
    Withdrawal,
    delete_entry,
    get_balance,
    set_balance,
    set_entry,
    set_system,
)

ZERO_ADDRESS = b"\x00" * 20


# --- balances -------------------------------------------------------------------------------------


def free_balance(state: State, account: bytes, asset_id: int) -> int:
    """Balance minus reserved: what the account may spend, reserve or withdraw now."""
    balance, reserved = state.balances.get((account, asset_id), (0, 0))
    return balance - reserved


def credit(state: State, account: bytes, asset_id: int, amount: int) -> None:
    """Add ``amount`` (>= 0) to the account's balance."""
    balance, reserved = get_balance(state, account, asset_id)
    set_balance(state, account, asset_id, balance + amount, reserved)


def debit_free(state: State, account: bytes, asset_id: int, amount: int) -> None:
    """Take ``amount`` from the free balance; raise InsufficientBalance (nothing changed) if the
    free balance is smaller."""
    balance, reserved = get_balance(state, account, asset_id)
    if balance - reserved < amount:
        raise InsufficientBalance(asset_id, amount, balance - reserved)
    set_balance(state, account, asset_id, balance - amount, reserved)


def reserve(state: State, account: bytes, asset_id: int, amount: int) -> None:
    """Lock ``amount`` of the free balance for a resting order; InsufficientBalance if short."""
    balance, reserved = get_balance(state, account, asset_id)
    if balance - reserved < amount:
        raise InsufficientBalance(asset_id, amount, balance - reserved)
    set_balance(state, account, asset_id, balance, reserved + amount)


def release(state: State, account: bytes, asset_id: int, amount: int) -> None:
    """Unlock ``amount`` previously reserved (the balance itself is unchanged)."""
    balance, reserved = get_balance(state, account, asset_id)
    set_balance(state, account, asset_id, balance, reserved - amount)


def spend_reserved(state: State, account: bytes, asset_id: int, reserved_part: int, amount: int) -> None:
    """Pay ``amount`` out of the balance, of which ``reserved_part`` (<= amount) was reserved for
    it; the rest comes from the free balance. InsufficientBalance (nothing changed) if the free
    balance does not cover ``amount - reserved_part``."""
    balance, reserved = get_balance(state, account, asset_id)
    extra = amount - reserved_part
    if extra > balance - reserved:
        raise InsufficientBalance(asset_id, extra, balance - reserved)
    set_balance(state, account, asset_id, balance - amount, reserved - reserved_part)


# --- nonces and agents ----------------------------------------------------------------------------


def next_nonce(state: State, signer: bytes) -> int:
    """The next valid nonce of a signing key (0 for a key never used)."""
    return state.nonces.get(signer, 0)


def check_nonce(state: State, signer: bytes, nonce: int) -> None:
    """Raise NonceMismatch unless ``nonce`` is the signer's next nonce."""
    expected = state.nonces.get(signer, 0)
    if nonce != expected:
        raise NonceMismatch(expected, nonce)


def consume_nonce(state: State, signer: bytes) -> None:
    """Advance the signer's nonce by one: the signed action can never be applied again."""
    set_entry(state, TAG_NONCE, state.nonces, signer, state.nonces.get(signer, 0) + 1)


def authorize_signer(state: State, account: bytes, signer: bytes, agent_allowed: bool, now_ms: int) -> bool:
    """Check that ``signer`` may sign this action for ``account``; return True if it is an agent.

    The account's own key may sign anything; an approved agent may sign only actions with
    ``agent_allowed`` and only until its expiry (``expires_at_ms`` 0 means never). Raises
    UnauthorizedSigner or AgentExpired.
    """
    if signer == account:
        return False
    expires = state.agents.get((account, signer))
    if expires is None:
        raise UnauthorizedSigner(f"0x{signer.hex()} is neither the account nor an approved agent of it")
    if not agent_allowed:
        raise UnauthorizedSigner("agents may trade, never withdraw, transfer or manage agents")
    if expires and now_ms >= expires:
        raise AgentExpired(f"agent 0x{signer.hex()} expired at {expires} ms")
    return True


def approve_agent(state: State, account: bytes, agent: bytes, expires_at_ms: int, now_ms: int) -> None:
    """Approve ``agent`` for the account (replacing any earlier approval)."""
    if agent == account or agent == ZERO_ADDRESS:
        raise InvalidAction("an account cannot approve itself or the zero address as its agent")
    if expires_at_ms and expires_at_ms <= now_ms:
        raise InvalidAction(f"agent expiry {expires_at_ms} is not after the block time {now_ms}")
    set_entry(state, TAG_AGENT, state.agents, (account, agent), expires_at_ms)


def revoke_agent(state: State, account: bytes, agent: bytes) -> None:
    """Remove an agent's approval; InvalidAction if it was not approved."""
    if (account, agent) not in state.agents:
        raise InvalidAction(f"0x{agent.hex()} is not an agent of the account")
    delete_entry(state, TAG_AGENT, state.agents, (account, agent))


# --- transfers and withdrawals --------------------------------------------------------------------


def check_asset(state: State, asset_id: int) -> None:
    """Raise UnknownAsset unless the asset is listed."""
    if asset_id not in state.assets:
        raise UnknownAsset(f"asset {asset_id} is not listed")


def transfer(state: State, sender: bytes, to: bytes, asset_id: int, amount: int) -> None:
    """Move ``amount`` of free balance from ``sender`` to ``to`` (margin is checked by the caller)."""
    check_asset(state, asset_id)
    if amount <= 0:
        raise InvalidAction("transfer amount must be positive")
    if to == sender:
        raise InvalidAction("transfer to the same account")
    if to == ZERO_ADDRESS:
        raise InvalidAction("transfer to the zero address")
    debit_free(state, sender, asset_id, amount)
    credit(state, to, asset_id, amount)


def withdraw(
    state: State, account: bytes, asset_id: int, amount: int, recipient: bytes, tz_block: int
) -> Withdrawal:
    """Debit ``amount`` of free balance and write a withdrawal record with the next sequential
    withdrawal id; only assets custodied by the bridge can be withdrawn."""
    check_asset(state, asset_id)
    if not state.assets[asset_id].l1_backed:
        raise InvalidAction(f"asset {asset_id} exists only in TradeZone and cannot be withdrawn")
    if amount <= 0:
        raise InvalidAction("withdrawal amount must be positive")
    if recipient == ZERO_ADDRESS:
        raise InvalidAction("withdrawal to the zero address")
    debit_free(state, account, asset_id, amount)
    return record_withdrawal(state, account, recipient, asset_id, amount, tz_block)


def record_withdrawal(
    state: State, account: bytes, recipient: bytes, asset_id: int, amount: int, tz_block: int
) -> Withdrawal:
    """Write a withdrawal record (the amount is already debited) and advance the id counter."""
    system = state.system
    record = Withdrawal(system.next_withdrawal_id, account, recipient, asset_id, amount, tz_block)
    set_entry(state, TAG_WITHDRAWAL, state.withdrawals, record.withdrawal_id, record)
    set_system(state, msgspec.structs.replace(system, next_withdrawal_id=system.next_withdrawal_id + 1))
    return record
