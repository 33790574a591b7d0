"""Named refusals of the escape hatch.

Every refusal the bridge can give to a forced withdrawal request, a freeze, an escape withdrawal
or a deposit refund has a class here. The client checks each one locally before it sends
anything, so the user reads a sentence instead of a revert; if the chain refuses anyway (the
state moved between the check and the block), :func:`error_for_revert` maps the bridge's revert
reason to the same class.
"""

from __future__ import annotations


class EscapeError(Exception):
    """Base of every escape-hatch refusal; ``str(err)`` is one sentence for the user."""


class BridgeFrozen(EscapeError):
    """The bridge is frozen: no forced withdrawal request (and no deposit) is possible any more."""


class AlreadyFrozen(EscapeError):
    """freeze() was asked of a bridge that is already frozen."""


class NotFrozen(EscapeError):
    """An escape withdrawal or a refund was asked before the bridge was frozen."""


class NoPendingMessage(EscapeError):
    """freeze() needs an L1 message that no committed batch consumed; the queue is fully consumed."""


class DeadlineNotPassed(EscapeError):
    """The oldest unconsumed L1 message is not yet past its deadline."""

    @classmethod
    def at(cls, index: int, deadline: int, next_block: int) -> DeadlineNotPassed:
        """The refusal for queue head ``index`` with ``deadline``, the next L1 block being ``next_block``."""
        return cls(
            f"deadline not passed: queue head {index} has deadline L1 block {deadline}; "
            f"freeze is possible from L1 block {deadline + 1} ({deadline + 1 - next_block} blocks to go)"
        )


class AssetNotListed(EscapeError):
    """The asset is not one the bridge holds (not L1-backed)."""


class WrongFee(EscapeError):
    """The forced-withdrawal fee sent differs from the bridge's fee."""


class AlreadyWithdrawn(EscapeError):
    """The account already escaped this asset (once per account and asset)."""


class NothingToWithdraw(EscapeError):
    """The account's committed balance leaf for the asset is absent or holds a zero balance."""


class ProofMismatch(EscapeError):
    """The escape proof does not prove the account's leaf against the last committed root."""


class BridgeShort(EscapeError):
    """The bridge holds less of the asset than the committed balance it would pay (see
    docs/escape.md on open perpetual positions): the escape would revert."""


class ProofSourceError(EscapeError):
    """The proof could not be obtained from its source (file, TradeZone node, replay)."""


class NoSuchMessage(EscapeError):
    """The L1 queue has no message at that index."""


class NotADeposit(EscapeError):
    """The L1 message at that index is not a deposit (only deposits are refunded)."""


class DepositConsumed(EscapeError):
    """The deposit was consumed by a committed batch: it lives in the committed state, escape it."""


class AlreadyRefunded(EscapeError):
    """The deposit was already refunded."""


class InsufficientFunds(EscapeError):
    """The sending key cannot pay the fee or the gas."""


class ChainRefused(EscapeError):
    """The bridge refused with a reason that has no more specific class."""


# Revert reasons of Bridge.vy (docs/contracts.md) -> the refusal they mean.
REVERT_REASONS: dict[str, type[EscapeError]] = {
    "Bridge: frozen": BridgeFrozen,
    "Bridge: already frozen": AlreadyFrozen,
    "Bridge: not frozen": NotFrozen,
    "Bridge: no pending message": NoPendingMessage,
    "Bridge: deadline not passed": DeadlineNotPassed,
    "Bridge: asset not listed": AssetNotListed,
    "Bridge: wrong forced withdrawal fee": WrongFee,
    "Bridge: already escaped": AlreadyWithdrawn,
    "Bridge: no balance leaf for this account and asset": NothingToWithdraw,
    "Bridge: nothing to withdraw": NothingToWithdraw,
    "Bridge: leaf value does not match the proof": ProofMismatch,
    "Bridge: no such message": NoSuchMessage,
    "Bridge: deposit was consumed by a batch": DepositConsumed,
    "Bridge: already refunded": AlreadyRefunded,
    "Bridge: not this deposit": NotADeposit,
}

_MESSAGES: dict[type[EscapeError], str] = {
    BridgeFrozen: "the bridge is frozen",
    AlreadyFrozen: "the bridge is already frozen",
    NotFrozen: "not frozen yet: the bridge pays escapes and refunds only after a freeze",
    NoPendingMessage: "no pending L1 message: every queued message was consumed by a committed batch",
    DeadlineNotPassed: "deadline not passed: the queue head is not yet past its deadline",
    AssetNotListed: "the asset is not listed on the bridge",
    WrongFee: "wrong forced withdrawal fee",
    AlreadyWithdrawn: "already withdrawn: this account escaped this asset before",
    NothingToWithdraw: "nothing to withdraw: the committed balance of this account and asset is zero",
    ProofMismatch: "the proof does not match the committed root",
    NoSuchMessage: "no such L1 message",
    DepositConsumed: "the deposit was consumed by a committed batch (escape it instead)",
    AlreadyRefunded: "the deposit was already refunded",
    NotADeposit: "the L1 message is not this deposit",
}


def error_for_revert(reason: str | None) -> EscapeError:
    """The refusal a bridge revert reason means (ChainRefused with the raw reason otherwise)."""
    if reason is not None:
        kind = REVERT_REASONS.get(reason)
        if kind is not None:
            return kind(f"{_MESSAGES[kind]} (the chain refused: {reason})")
        if reason.startswith("MPT: "):
            return ProofMismatch(f"the proof does not match the committed root (the chain refused: {reason})")
    return ChainRefused(f"the bridge refused: {reason or 'execution reverted without a reason'}")
