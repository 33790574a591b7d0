"""The TradeZone VM's exception tree.

Every failure a user can cause is one named class with typed fields, so that a receipt can
record a stable reason code (``exc.reason``) and a log line alone explains what went wrong.

    TradeZoneError
    ├── InvalidTransaction              a transaction is rejected; the block goes on
    │   ├── DecodeError                 bytes are not a canonical transaction
    │   │   ├── NonCanonicalEncoding
    │   │   ├── OversizedInput
    │   │   ├── ValueOutOfRange
    │   │   └── UnknownTransactionType
    │   ├── BadSignature
    │   ├── NonceMismatch(expected, got)
    │   ├── UnauthorizedSigner
    │   └── ...                         the engines' rule violations
    ├── InvalidBlock                    a block is rejected as a whole
    │   ├── BlockDecodeError
    │   ├── InvalidHeader
    │   │   ├── ParentHashMismatch(got, expected)
    │   │   ├── BlockNumberMismatch(got, expected)
    │   │   ├── TimestampNotIncreasing(got, parent)
    │   │   ├── L1OriginDecreasing(got, parent)
    │   │   └── L1CursorMismatch(got, expected)
    │   ├── L1MessageOutOfOrder(expected, got)
    │   └── RootMismatch(which, got, expected)
    └── InvalidMerkleProof              an inclusion proof against a transactions or receipts root fails

Every exception pickles (its ``args`` rebuild it), so worker processes can return them.
"""

from __future__ import annotations


class TradeZoneError(Exception):
    """Base of every error the TradeZone VM raises on purpose."""

    reason: str = "error"


# --------------------------------------------------------------------------- transactions


class InvalidTransaction(TradeZoneError):
    """A transaction is invalid; it is rejected with a receipt and leaves no state behind."""

    reason = "invalid_transaction"


class DecodeError(InvalidTransaction):
    """The bytes are not the canonical encoding of any transaction."""

    reason = "decode_error"


class NonCanonicalEncoding(DecodeError):
    """The bytes decode, but not from the one canonical encoding (leading zeros, long forms...)."""

    reason = "non_canonical_encoding"


class OversizedInput(DecodeError):
    """The input is longer than the protocol allows."""

    reason = "oversized_input"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(size, limit)
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return f"input of {self.size} bytes exceeds the limit of {self.limit}"


class ValueOutOfRange(DecodeError):
    """A field's value is outside its type's range (or a bytes field has the wrong length)."""

    reason = "value_out_of_range"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(field, detail)
        self.field = field
        self.detail = detail

    def __str__(self) -> str:
        return f"field {self.field!r}: {self.detail}"


class UnknownTransactionType(DecodeError):
    """The leading type byte names no transaction type."""

    reason = "unknown_transaction_type"

    def __init__(self, type_id: int) -> None:
        super().__init__(type_id)
        self.type_id = type_id

    def __str__(self) -> str:
        return f"unknown transaction type 0x{self.type_id:02x}"


class BadSignature(InvalidTransaction):
    """The signature is malformed (range, high s, v) or recovers no public key."""

    reason = "bad_signature"


class NonceMismatch(InvalidTransaction):
    """The nonce is not the signing key's next nonce (a replayed, stale or future action)."""

    reason = "nonce_mismatch"

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(expected, got)
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        return f"nonce {self.got} is not the signer's next nonce {self.expected}"


class UnauthorizedSigner(InvalidTransaction):
    """The recovered signer may not act for the account (not its key, not a live agent of it,
    an agent attempting a transfer or withdrawal, or not the market's oracle/resolver key)."""

    reason = "unauthorized_signer"


class AgentExpired(UnauthorizedSigner):
    """The agent key was approved, but its approval has expired at the block's time."""

    reason = "agent_expired"


class UnknownMarket(InvalidTransaction):
    """The market id is not in the state."""

    reason = "unknown_market"


class UnknownAsset(InvalidTransaction):
    """The asset id is not in the state."""

    reason = "unknown_asset"


class MarketClosed(InvalidTransaction):
    """The market no longer trades (resolved, halted or delisted)."""

    reason = "market_closed"


class InvalidOrder(InvalidTransaction):
    """The order breaks a market rule: tick or lot size, price bounds, zero size, batch size."""

    reason = "invalid_order"


class WouldCross(InvalidOrder):
    """A post-only order would have taken liquidity."""

    reason = "post_only_would_cross"


class ReduceOnlyViolation(InvalidOrder):
    """A reduce-only order would open or increase a position."""

    reason = "reduce_only_violation"


class OrderNotFound(InvalidTransaction):
    """No open order of the account has that order id (or client order id) in that market."""

    reason = "order_not_found"


class DuplicateClientOrderId(InvalidOrder):
    """The account already has an open order with that client order id in that market."""

    reason = "duplicate_client_order_id"


class InsufficientBalance(InvalidTransaction):
    """The account's free balance of the asset does not cover the action."""

    reason = "insufficient_balance"

    def __init__(self, asset_id: int, needed: int, available: int) -> None:
        super().__init__(asset_id, needed, available)
        self.asset_id = asset_id
        self.needed = needed
        self.available = available

    def __str__(self) -> str:
        return f"asset {self.asset_id}: needs {self.needed}, {self.available} available"


class InsufficientMargin(InvalidTransaction):
    """The account's margin would fall below the initial margin requirement."""

    reason = "insufficient_margin"


class InvalidAction(InvalidTransaction):
    """An action that decodes but makes no sense in the state (self-transfer, zero amount,
    resolving an unresolvable market, an oracle price out of bounds...)."""

    reason = "invalid_action"


# --------------------------------------------------------------------------- blocks


class InvalidBlock(TradeZoneError):
    """A block is invalid as a whole; none of it is applied."""

    reason = "invalid_block"


class BlockDecodeError(InvalidBlock):
    """The bytes are not the canonical encoding of a block or header (including a transaction
    inside it that does not decode; ``__cause__`` holds the transaction's DecodeError)."""

    reason = "block_decode_error"


class InvalidHeader(InvalidBlock):
    """The header does not follow its parent."""

    reason = "invalid_header"


class _GotExpected(InvalidHeader):
    """A header field that differs from what the parent implies; carries both values."""

    def __init__(self, got: int | bytes, expected: int | bytes) -> None:
        super().__init__(got, expected)
        self.got = got
        self.expected = expected

    def __str__(self) -> str:
        return f"{self.reason}: got {_show(self.got)}, expected {_show(self.expected)}"


class ParentHashMismatch(_GotExpected):
    """The header's parent hash is not the hash of the parent header."""

    reason = "parent_hash_mismatch"


class BlockNumberMismatch(_GotExpected):
    """The header's number is not the parent's number plus one."""

    reason = "block_number_mismatch"


class TimestampNotIncreasing(_GotExpected):
    """The header's timestamp is not strictly after the parent's (``expected`` = parent's)."""

    reason = "timestamp_not_increasing"


class L1OriginDecreasing(_GotExpected):
    """The header's L1 origin is before the parent's (``expected`` = parent's)."""

    reason = "l1_origin_decreasing"


class L1CursorMismatch(_GotExpected):
    """The header's L1 cursor is not the parent's cursor plus the L1 messages in the block."""

    reason = "l1_cursor_mismatch"


class L1MessageOutOfOrder(InvalidBlock):
    """The block's L1 messages are not the queue's next messages in order (``expected`` is the
    index the message at that position must have)."""

    reason = "l1_message_out_of_order"

    def __init__(self, expected: int, got: int) -> None:
        super().__init__(expected, got)
        self.expected = expected
        self.got = got

    def __str__(self) -> str:
        return f"L1 message {self.got} is not the next in queue order ({self.expected})"


class RootMismatch(InvalidBlock):
    """A recomputed root differs from the header's; ``which`` is 'state', 'transactions' or
    'receipts'."""

    reason = "root_mismatch"

    def __init__(self, which: str, got: bytes, expected: bytes) -> None:
        super().__init__(which, got, expected)
        self.which = which
        self.got = got
        self.expected = expected

    def __str__(self) -> str:
        return f"{self.which} root mismatch: got 0x{self.got.hex()}, expected 0x{self.expected.hex()}"


class InvalidMerkleProof(TradeZoneError):
    """An inclusion proof against a transactions or receipts root does not hold (the message
    says why: index outside the count, malformed or missing siblings, or another root)."""

    reason = "invalid_merkle_proof"


def _show(value: int | bytes) -> str:
    return "0x" + value.hex() if isinstance(value, bytes) else str(value)
