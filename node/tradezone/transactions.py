"""TradeZone transactions: user actions, the signed envelope, L1 system messages, and their
one canonical encoding.

A user transaction is ``SignedTx(action, account, nonce, signature)``: ``account`` is the
principal (20 bytes) the action acts for, ``nonce`` is the signing key's next nonce (one
sequential nonce per signing key: the account's own key or an agent key the account approved),
and ``signature`` is 65 bytes ``r ‖ s ‖ v`` over the action's EIP-712 typed data
(``node.tradezone.eip712``). System transactions carry no signature: the L1 messages of the
bridge's queue (``DepositMessage``, ``StakeMessage``, ``ForcedWithdrawalMessage``).

Every field is an integer (``bool`` for flags) or a fixed-length ``bytes``; every field has a
protocol range, checked when a transaction is decoded and when it is encoded.

Canonical encoding (typed-envelope style, like Ethereum's EIP-2718):

    user tx:    type_id (1 byte, 0x01-0x0c) ‖ RLP([account, nonce, [action fields...], signature])
    L1 message: type_id (1 byte, 0x70 + kind) ‖ RLP([index, payload fields...])

Integers are RLP's minimal big-endian byte strings, flags are 0 or 1, addresses are 20 bytes.
``decode_transaction`` accepts exactly the bytes ``encode_transaction`` produces, and raises a
named ``DecodeError`` for anything else. The transaction hash is ``keccak256`` of those bytes.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec
from eth_hash.auto import keccak

from node.tradezone.errors import (
    DecodeError,
    NonCanonicalEncoding,
    OversizedInput,
    UnknownTransactionType,
    ValueOutOfRange,
)
from node.tradezone.hashing import keccak256, native_module

# --------------------------------------------------------------------------- constants

BUY, SELL = 0, 1
TIF_GTC, TIF_IOC, TIF_POST_ONLY = 0, 1, 2

# CancelAll with this market id cancels the account's orders in every market.
ALL_MARKETS = 2**32 - 1

# A binary outcome market resolves to one of these (ResolveMarket.outcome).
OUTCOME_NO, OUTCOME_YES = 0, 1

# ApproveAgent.expires_at_ms == NEVER_EXPIRES: the approval lasts until revoked.
NEVER_EXPIRES = 0

# L1 message kinds, as the bridge's queue numbers them (docs/interfaces.md).
L1_DEPOSIT, L1_STAKE, L1_FORCED_WITHDRAWAL = 1, 2, 3

MAX_BATCH_ORDERS = 64
MAX_TX_BYTES = 4096
ADDRESS_LENGTH = 20
SIGNATURE_LENGTH = 65

# Field kinds: the protocol type of each field, used by the codec and by EIP-712.
U8, U32, U64, U256, BOOL, ADDRESS, ORDERS = "uint8", "uint32", "uint64", "uint256", "bool", "address", "orders"


# --------------------------------------------------------------------------- user actions


class Action(msgspec.Struct, frozen=True):
    """Base of the user actions. ``TYPE_ID`` is the envelope's leading byte, ``FIELDS`` the
    (attribute, kind) list in canonical order, ``AGENT_ALLOWED`` whether an approved agent key
    may sign it (agents may trade, never withdraw, transfer or manage agents)."""

    TYPE_ID: ClassVar[int] = 0
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = ()
    AGENT_ALLOWED: ClassVar[bool] = False


class PlaceOrder(Action, frozen=True):
    """Place one limit order. A market order is ``tif=TIF_IOC`` with a protective limit price."""

    TYPE_ID: ClassVar[int] = 0x01
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("market_id", U32),
        ("side", U8),
        ("price", U64),
        ("size", U64),
        ("tif", U8),
        ("reduce_only", BOOL),
        ("client_order_id", U64),
    )
    AGENT_ALLOWED: ClassVar[bool] = True

    market_id: int
    side: int  # BUY / SELL
    price: int  # ticks
    size: int  # lots
    tif: int = TIF_GTC  # TIF_GTC / TIF_IOC / TIF_POST_ONLY
    reduce_only: bool = False
    client_order_id: int = 0  # 0: none


class PlaceOrders(Action, frozen=True):
    """Place up to ``MAX_BATCH_ORDERS`` orders, each applied (and possibly rejected) on its own."""

    TYPE_ID: ClassVar[int] = 0x02
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("orders", ORDERS),)
    AGENT_ALLOWED: ClassVar[bool] = True

    orders: tuple[PlaceOrder, ...]


class CancelOrder(Action, frozen=True):
    """Cancel one open order of the account by its order id."""

    TYPE_ID: ClassVar[int] = 0x03
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("market_id", U32), ("order_id", U64))
    AGENT_ALLOWED: ClassVar[bool] = True

    market_id: int
    order_id: int


class CancelByClientId(Action, frozen=True):
    """Cancel one open order of the account by its client order id."""

    TYPE_ID: ClassVar[int] = 0x04
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("market_id", U32), ("client_order_id", U64))
    AGENT_ALLOWED: ClassVar[bool] = True

    market_id: int
    client_order_id: int


class CancelAll(Action, frozen=True):
    """Cancel every open order of the account in a market (``ALL_MARKETS``: in every market)."""

    TYPE_ID: ClassVar[int] = 0x05
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("market_id", U32),)
    AGENT_ALLOWED: ClassVar[bool] = True

    market_id: int = ALL_MARKETS


class ModifyOrder(Action, frozen=True):
    """Cancel-replace an open order; time priority is kept only when the price is unchanged and
    the size decreases."""

    TYPE_ID: ClassVar[int] = 0x06
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("market_id", U32),
        ("order_id", U64),
        ("new_price", U64),
        ("new_size", U64),
    )
    AGENT_ALLOWED: ClassVar[bool] = True

    market_id: int
    order_id: int
    new_price: int
    new_size: int


class ApproveAgent(Action, frozen=True):
    """Let ``agent`` sign trading actions for the account until ``expires_at_ms`` (block time,
    ``NEVER_EXPIRES`` = until revoked). Only the account's own key may sign this."""

    TYPE_ID: ClassVar[int] = 0x07
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("agent", ADDRESS), ("expires_at_ms", U64))

    agent: bytes
    expires_at_ms: int = NEVER_EXPIRES


class RevokeAgent(Action, frozen=True):
    """Withdraw an agent's approval. Only the account's own key may sign this."""

    TYPE_ID: ClassVar[int] = 0x08
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("agent", ADDRESS),)

    agent: bytes


class Transfer(Action, frozen=True):
    """Move ``amount`` of an asset from the account to another TradeZone account."""

    TYPE_ID: ClassVar[int] = 0x09
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("to", ADDRESS), ("asset_id", U32), ("amount", U256))

    to: bytes
    asset_id: int
    amount: int


class Withdraw(Action, frozen=True):
    """Debit ``amount`` and record a withdrawal claimable by ``recipient`` on the bridge."""

    TYPE_ID: ClassVar[int] = 0x0A
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("asset_id", U32),
        ("amount", U256),
        ("recipient", ADDRESS),
    )

    asset_id: int
    amount: int
    recipient: bytes


class OracleUpdate(Action, frozen=True):
    """An oracle price (in the market's ticks) observed at ``timestamp_ms``; signed by the
    market's oracle key, which is the envelope's ``account``."""

    TYPE_ID: ClassVar[int] = 0x0B
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("market_id", U32),
        ("price", U64),
        ("timestamp_ms", U64),
    )

    market_id: int
    price: int
    timestamp_ms: int


class ResolveMarket(Action, frozen=True):
    """Resolve a binary outcome market (``OUTCOME_NO`` / ``OUTCOME_YES``); signed by the
    market's resolver key, which is the envelope's ``account``."""

    TYPE_ID: ClassVar[int] = 0x0C
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("market_id", U32), ("outcome", U8))

    market_id: int
    outcome: int


class SetMarginMode(Action, frozen=True):
    """Trade a perpetual market in isolated margin (``isolated``) or in cross margin, the default.
    Only while the account has no position and no open order in that market."""

    TYPE_ID: ClassVar[int] = 0x0D
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("market_id", U32), ("isolated", BOOL))
    AGENT_ALLOWED: ClassVar[bool] = True

    market_id: int
    isolated: bool


class AdjustIsolatedMargin(Action, frozen=True):
    """Move ``amount`` of the market's collateral from the free balance into the isolated margin
    of the account's position (``add``), or back out of it."""

    TYPE_ID: ClassVar[int] = 0x0E
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("market_id", U32), ("amount", U256), ("add", BOOL))
    AGENT_ALLOWED: ClassVar[bool] = True

    market_id: int
    amount: int
    add: bool


ACTION_TYPES: tuple[type[Action], ...] = (
    PlaceOrder,
    PlaceOrders,
    CancelOrder,
    CancelByClientId,
    CancelAll,
    ModifyOrder,
    ApproveAgent,
    RevokeAgent,
    Transfer,
    Withdraw,
    OracleUpdate,
    ResolveMarket,
    SetMarginMode,
    AdjustIsolatedMargin,
)
ACTION_BY_TYPE_ID: dict[int, type[Action]] = {cls.TYPE_ID: cls for cls in ACTION_TYPES}


# --------------------------------------------------------------------------- L1 messages


class L1Message(msgspec.Struct, frozen=True):
    """Base of the bridge queue's messages, applied strictly in ``index`` order. ``KIND`` is
    the queue's kind number; ``FIELDS`` the payload in the queue's ABI order."""

    KIND: ClassVar[int] = 0
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = ()

    index: int

    @property
    def kind(self) -> int:
        """The queue's kind number of this message."""
        return self.KIND


class DepositMessage(L1Message, frozen=True):
    """DEPOSIT: credit ``amount`` of ``asset_id`` to ``recipient``'s TradeZone account."""

    KIND: ClassVar[int] = L1_DEPOSIT
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("depositor", ADDRESS),
        ("recipient", ADDRESS),
        ("asset_id", U32),
        ("amount", U256),
    )

    depositor: bytes
    recipient: bytes
    asset_id: int
    amount: int


class StakeMessage(L1Message, frozen=True):
    """STAKE: the staker's total active stake on L1 after the change."""

    KIND: ClassVar[int] = L1_STAKE
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("staker", ADDRESS), ("new_stake", U256))

    staker: bytes
    new_stake: int


class ForcedWithdrawalMessage(L1Message, frozen=True):
    """FORCED_WITHDRAWAL: withdraw the account's whole free balance of ``asset_id`` to itself."""

    KIND: ClassVar[int] = L1_FORCED_WITHDRAWAL
    FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (("account", ADDRESS), ("asset_id", U32))

    account: bytes
    asset_id: int


L1_MESSAGE_TYPES: tuple[type[L1Message], ...] = (DepositMessage, StakeMessage, ForcedWithdrawalMessage)
L1_MESSAGE_BY_KIND: dict[int, type[L1Message]] = {cls.KIND: cls for cls in L1_MESSAGE_TYPES}
L1_TYPE_ID_BASE = 0x70


# --------------------------------------------------------------------------- signed envelope


class SignedTx:
    """A user action signed by the account's key or by an agent key the account approved.

    Equality, hashing and the encoding cover ``action, account, nonce, signature`` only. The
    recovered signer may be cached on the object (``cache_signer``) together with the EIP-712
    domain separator it was recovered under: it travels with the object through pickle, so a
    worker process can recover and the VM does not recover again. Its canonical encoding and
    transaction hash are cached the same way, once computed.
    """

    __slots__ = ("action", "account", "nonce", "signature", "_signer", "_encoded", "_hash")
    _signer: tuple[bytes, bytes] | None
    _encoded: bytes | None
    _hash: bytes | None

    action: Action
    account: bytes
    nonce: int
    signature: bytes

    def __init__(self, action: Action, account: bytes, nonce: int, signature: bytes) -> None:
        setter = object.__setattr__  # the immutability guard in __setattr__ is for callers only
        setter(self, "action", action)
        setter(self, "account", account)
        setter(self, "nonce", nonce)
        setter(self, "signature", signature)
        setter(self, "_signer", None)
        setter(self, "_encoded", None)
        setter(self, "_hash", None)

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("action", "account", "nonce", "signature") and hasattr(self, name):
            raise AttributeError(f"SignedTx.{name} is immutable")
        object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SignedTx):
            return NotImplemented
        return (
            self.action == other.action
            and self.account == other.account
            and self.nonce == other.nonce
            and self.signature == other.signature
        )

    def __hash__(self) -> int:
        return hash((self.action, self.account, self.nonce, self.signature))

    def __repr__(self) -> str:
        return (
            f"SignedTx(action={self.action!r}, account=0x{self.account.hex()}, nonce={self.nonce}, "
            f"signature=0x{self.signature.hex()})"
        )

    def __getstate__(
        self,
    ) -> tuple[Action, bytes, int, bytes, tuple[bytes, bytes] | None, bytes | None, bytes | None]:
        return (self.action, self.account, self.nonce, self.signature, self._signer, self._encoded, self._hash)

    def __setstate__(
        self, state: tuple[Action, bytes, int, bytes, tuple[bytes, bytes] | None, bytes | None, bytes | None]
    ) -> None:
        for name, value in zip(self.__slots__, state, strict=True):
            object.__setattr__(self, name, value)

    def cache_signer(self, domain_separator: bytes, signer: bytes) -> None:
        """Remember the signer recovered under ``domain_separator`` (not part of the encoding)."""
        object.__setattr__(self, "_signer", (domain_separator, signer))

    def cached_signer(self, domain_separator: bytes) -> bytes | None:
        """The signer cached for this domain, or None if it was not recovered under it."""
        cached = self._signer
        if cached is not None and cached[0] == domain_separator:
            return cached[1]
        return None


Transaction = SignedTx | L1Message


# --------------------------------------------------------------------------- RLP codec
#
# A small strict RLP codec: the encoder emits the one canonical form, the decoder accepts only
# it (no leading zeros in lengths or integers, a single byte below 0x80 is never wrapped, the
# short forms are used whenever they fit, nothing trails). Tested against the `rlp` package.

RlpItem = bytes | list["RlpItem"]


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(length_bytes),)) + length_bytes


def rlp_encode_bytes(value: bytes) -> bytes:
    """The RLP encoding of a byte string."""
    if len(value) == 1 and value[0] < 0x80:
        return value
    return _length_prefix(len(value), 0x80) + value


def rlp_encode_int(value: int) -> bytes:
    """The RLP encoding of a non-negative integer (minimal big-endian, 0 is the empty string)."""
    if value < 0x80:
        return b"\x80" if value == 0 else bytes((value,))
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return _length_prefix(len(raw), 0x80) + raw


def rlp_encode_list(encoded_items: list[bytes]) -> bytes:
    """The RLP encoding of a list whose items are already RLP-encoded."""
    payload = b"".join(encoded_items)
    return _length_prefix(len(payload), 0xC0) + payload


def rlp_encode(item: RlpItem | int) -> bytes:
    """The RLP encoding of nested lists of byte strings and non-negative integers."""
    if isinstance(item, bytes):
        return rlp_encode_bytes(item)
    if isinstance(item, int):
        return rlp_encode_int(item)
    return rlp_encode_list([rlp_encode(sub) for sub in item])


MAX_RLP_DEPTH = 8  # a transaction nests 4 lists deep (envelope, fields, orders, order); a block 2
_native = native_module()
_native_rlp_decode = _native.rlp_decode if _native is not None else None


def rlp_decode(data: bytes, max_depth: int = MAX_RLP_DEPTH) -> RlpItem:
    """Decode one RLP item that spans ``data`` exactly; raise ``NonCanonicalEncoding`` for
    anything that is not the canonical encoding of an item (including trailing bytes), and
    ``ValueOutOfRange`` for lists nested deeper than ``max_depth`` (so hostile input cannot
    exhaust the stack).

    With the native extension, the extension's decoder (the same rules, about 10x faster) takes
    bytes first; whatever it refuses goes through the decoder below, which names the fault."""
    if _native_rlp_decode is not None and type(data) is bytes:
        try:
            return _native_rlp_decode(data, max_depth)  # type: ignore[no-any-return]
        except ValueError:
            pass
    item, end = _decode_item(data, 0, len(data), max_depth)
    if end != len(data):
        raise NonCanonicalEncoding(f"{len(data) - end} trailing bytes after the RLP item")
    return item


def _decode_length(data: bytes, pos: int, limit: int, length_of_length: int) -> tuple[int, int]:
    start = pos + 1
    end = start + length_of_length
    if end > limit:
        raise NonCanonicalEncoding("RLP length runs past the end of the input")
    if data[start] == 0:
        raise NonCanonicalEncoding("RLP length with a leading zero byte")
    length = int.from_bytes(data[start:end], "big")
    if length < 56:
        raise NonCanonicalEncoding("RLP long form used for a short payload")
    return length, end


def _decode_item(data: bytes, pos: int, limit: int, depth: int) -> tuple[RlpItem, int]:
    if pos >= limit:
        raise NonCanonicalEncoding("RLP item runs past the end of the input")
    prefix = data[pos]
    if prefix < 0x80:
        return data[pos : pos + 1], pos + 1
    if prefix < 0xB8:
        length, start = prefix - 0x80, pos + 1
        end = start + length
        if end > limit:
            raise NonCanonicalEncoding("RLP string runs past the end of the input")
        if length == 1 and data[start] < 0x80:
            raise NonCanonicalEncoding("RLP single byte below 0x80 wrapped in a string prefix")
        return data[start:end], end
    if prefix < 0xC0:
        length, start = _decode_length(data, pos, limit, prefix - 0xB7)
        end = start + length
        if end > limit:
            raise NonCanonicalEncoding("RLP string runs past the end of the input")
        return data[start:end], end
    if prefix < 0xF8:
        length, start = prefix - 0xC0, pos + 1
    else:
        length, start = _decode_length(data, pos, limit, prefix - 0xF7)
    end = start + length
    if end > limit:
        raise NonCanonicalEncoding("RLP list runs past the end of the input")
    if depth <= 0:
        raise ValueOutOfRange("rlp", "lists nested too deep")
    items: list[RlpItem] = []
    cursor = start
    while cursor < end:
        item, cursor = _decode_item(data, cursor, end, depth - 1)
        items.append(item)
    return items, end


# --------------------------------------------------------------------------- field codec

_BITS = {U8: 8, U32: 32, U64: 64, U256: 256}


def _check_int(name: str, kind: str, value: object) -> int:
    if type(value) is not int:
        if isinstance(value, int) and not isinstance(value, bool):
            value = int(value)
        else:
            raise ValueOutOfRange(name, f"expected an integer, got {type(value).__name__}")
    if value < 0 or value.bit_length() > _BITS[kind]:
        raise ValueOutOfRange(name, f"{value} is not a {kind}")
    return value


def _check_address(name: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != ADDRESS_LENGTH:
        raise ValueOutOfRange(name, "expected 20 bytes")
    return value


def _encode_fields(fields: tuple[tuple[str, str], ...], obj: object) -> list[bytes]:
    encoded: list[bytes] = []
    for name, kind in fields:
        value = getattr(obj, name)
        if kind == ADDRESS:
            encoded.append(rlp_encode_bytes(_check_address(name, value)))
        elif kind == BOOL:
            if value not in (0, 1) or not isinstance(value, int):
                raise ValueOutOfRange(name, "expected a bool")
            encoded.append(b"\x01" if value else b"\x80")
        elif kind == ORDERS:
            if not isinstance(value, tuple) or not 1 <= len(value) <= MAX_BATCH_ORDERS:
                raise ValueOutOfRange(name, f"expected a tuple of 1 to {MAX_BATCH_ORDERS} orders")
            parts = []
            for order in value:
                if type(order) is not PlaceOrder:
                    raise ValueOutOfRange(name, "expected PlaceOrder items")
                parts.append(rlp_encode_list(_encode_fields(PlaceOrder.FIELDS, order)))
            encoded.append(rlp_encode_list(parts))
        else:
            encoded.append(rlp_encode_int(_check_int(name, kind, value)))
    return encoded


def _decode_int(name: str, kind: str, item: RlpItem) -> int:
    if not isinstance(item, bytes):
        raise ValueOutOfRange(name, "expected a string, got a list")
    if item[:1] == b"\x00":
        raise NonCanonicalEncoding(f"field {name!r}: integer with a leading zero byte")
    if len(item) * 8 > _BITS[kind]:
        raise ValueOutOfRange(name, f"more than {_BITS[kind]} bits")
    return int.from_bytes(item, "big")


def _decode_fields(fields: tuple[tuple[str, str], ...], items: RlpItem) -> list[object]:
    if not isinstance(items, list) or len(items) != len(fields):
        raise ValueOutOfRange("fields", f"expected a list of {len(fields)} fields")
    values: list[object] = []
    for (name, kind), item in zip(fields, items, strict=True):
        if kind == ADDRESS:
            if not isinstance(item, bytes) or len(item) != ADDRESS_LENGTH:
                raise ValueOutOfRange(name, "expected 20 bytes")
            values.append(item)
        elif kind == BOOL:
            if item == b"":
                values.append(False)
            elif item == b"\x01":
                values.append(True)
            else:
                raise ValueOutOfRange(name, "expected a bool (empty string or 0x01)")
        elif kind == ORDERS:
            if not isinstance(item, list) or not 1 <= len(item) <= MAX_BATCH_ORDERS:
                raise ValueOutOfRange(name, f"expected a list of 1 to {MAX_BATCH_ORDERS} orders")
            values.append(tuple(PlaceOrder(*_decode_fields(PlaceOrder.FIELDS, sub)) for sub in item))  # type: ignore[arg-type]
        else:
            values.append(_decode_int(name, kind, item))
    return values


# --------------------------------------------------------------------------- transactions


def encode_action_fields(action: Action) -> list[bytes]:
    """The RLP-encoded fields of an action, in canonical order; ``ValueOutOfRange`` if a field
    is outside its protocol range."""
    return _encode_fields(action.FIELDS, action)


def encode_transaction(tx: Transaction) -> bytes:
    """The canonical encoding of a transaction. Guarantees ``decode_transaction`` of the result
    gives an equal transaction; raises ``ValueOutOfRange`` (nothing is cached) if any field is
    outside its protocol range or the result exceeds ``MAX_TX_BYTES``."""
    if isinstance(tx, SignedTx):
        cached = tx._encoded
        if cached is not None:
            return cached
        action = tx.action
        if type(action) not in _ACTION_TYPE_SET:
            raise ValueOutOfRange("action", f"{type(action).__name__} is not an action")
        if not isinstance(tx.signature, bytes) or len(tx.signature) != SIGNATURE_LENGTH:
            raise ValueOutOfRange("signature", "expected 65 bytes")
        body = rlp_encode_list(
            [
                rlp_encode_bytes(_check_address("account", tx.account)),
                rlp_encode_int(_check_int("nonce", U64, tx.nonce)),
                rlp_encode_list(_encode_fields(action.FIELDS, action)),
                rlp_encode_bytes(tx.signature),
            ]
        )
        encoded = bytes((action.TYPE_ID,)) + body
        if len(encoded) > MAX_TX_BYTES:
            raise OversizedInput(len(encoded), MAX_TX_BYTES)
        object.__setattr__(tx, "_encoded", encoded)
        return encoded
    if type(tx) not in _L1_TYPE_SET:
        raise ValueOutOfRange("transaction", f"{type(tx).__name__} is not a transaction")
    fields = [rlp_encode_int(_check_int("index", U64, tx.index))]
    fields.extend(_encode_fields(tx.FIELDS, tx))
    return bytes((L1_TYPE_ID_BASE + tx.KIND,)) + rlp_encode_list(fields)


def decode_transaction(data: bytes) -> Transaction:
    """Decode the canonical encoding of a transaction.

    Raises ``OversizedInput`` beyond ``MAX_TX_BYTES``, ``UnknownTransactionType`` for an unknown
    leading byte, ``NonCanonicalEncoding`` for any non-canonical RLP, ``ValueOutOfRange`` for a
    field outside its range or a wrong field count. Guarantees ``encode_transaction`` of the
    result returns ``data`` byte for byte. The signature is not checked here (see eip712).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_TX_BYTES:
        raise OversizedInput(len(data), MAX_TX_BYTES)
    if not data:
        raise DecodeError("empty input")
    type_id = data[0]
    body = rlp_decode(data[1:])
    action_cls = ACTION_BY_TYPE_ID.get(type_id)
    if action_cls is not None:
        if not isinstance(body, list) or len(body) != 4:
            raise ValueOutOfRange("envelope", "expected [account, nonce, fields, signature]")
        account_item, nonce_item, fields_item, signature = body
        if not isinstance(account_item, bytes) or len(account_item) != ADDRESS_LENGTH:
            raise ValueOutOfRange("account", "expected 20 bytes")
        nonce = _decode_int("nonce", U64, nonce_item)
        action = action_cls(*_decode_fields(action_cls.FIELDS, fields_item))
        if not isinstance(signature, bytes) or len(signature) != SIGNATURE_LENGTH:
            raise ValueOutOfRange("signature", "expected 65 bytes")
        tx = SignedTx(action, account_item, nonce, signature)
        object.__setattr__(tx, "_encoded", data)
        return tx
    message_cls = L1_MESSAGE_BY_KIND.get(type_id - L1_TYPE_ID_BASE)
    if message_cls is None:
        raise UnknownTransactionType(type_id)
    if not isinstance(body, list) or not body:
        raise ValueOutOfRange("message", "expected [index, payload fields...]")
    index = _decode_int("index", U64, body[0])
    return message_cls(index, *_decode_fields(message_cls.FIELDS, body[1:]))


def tx_hash(tx: Transaction) -> bytes:
    """The transaction hash: keccak256 of the canonical encoding. A user transaction keeps its
    hash (like its encoding, it travels through pickle), so it is computed once per object."""
    if isinstance(tx, SignedTx):
        cached = tx._hash
        if cached is None:
            cached = keccak256(encode_transaction(tx))
            object.__setattr__(tx, "_hash", cached)
        return cached
    return keccak256(encode_transaction(tx))


_ACTION_TYPE_SET = frozenset(ACTION_TYPES)
_L1_TYPE_SET = frozenset(L1_MESSAGE_TYPES)


# --------------------------------------------------------------------------- L1 queue hashing


def _abi_word(kind: str, value: int | bytes) -> bytes:
    if kind == ADDRESS:
        return bytes(12) + value  # type: ignore[operator]
    return value.to_bytes(32, "big")  # type: ignore[union-attr]


def l1_message_hash(message: L1Message) -> bytes:
    """The queue's ``msgHash = keccak256(abi.encode(index, kind, payload fields...))`` (every
    field is a static ABI type, so each is one 32-byte word)."""
    words = [message.index.to_bytes(32, "big"), message.KIND.to_bytes(32, "big")]
    words.extend(_abi_word(kind, getattr(message, name)) for name, kind in message.FIELDS)
    return keccak(b"".join(words))


def next_rolling_hash(previous: bytes, message: L1Message) -> bytes:
    """``rolling[i] = keccak256(rolling[i-1] ‖ msgHash[i])``; ``rolling[-1]`` is 32 zero bytes."""
    return keccak(previous + l1_message_hash(message))


def l1_message_from_event(index: int, kind: int, payload: bytes) -> L1Message:
    """Build the L1 message of a ``MessageQueued`` event from its index, kind and
    ``payload = abi.encode(fields...)``. Raises ``UnknownTransactionType`` for an unknown kind,
    ``ValueOutOfRange`` for a payload that is not the canonical ABI encoding of the kind's
    fields within their ranges."""
    message_cls = L1_MESSAGE_BY_KIND.get(kind)
    if message_cls is None:
        raise UnknownTransactionType(L1_TYPE_ID_BASE + kind if 0 <= kind < 0x90 else 0xFF)
    fields = message_cls.FIELDS
    if len(payload) != 32 * len(fields):
        raise ValueOutOfRange("payload", f"expected {32 * len(fields)} bytes, got {len(payload)}")
    values: list[object] = []
    for position, (name, field_kind) in enumerate(fields):
        word = payload[32 * position : 32 * position + 32]
        if field_kind == ADDRESS:
            if word[:12] != bytes(12):
                raise ValueOutOfRange(name, "address word has non-zero high bytes")
            values.append(word[12:])
        else:
            value = int.from_bytes(word, "big")
            values.append(_check_int(name, field_kind, value))
    return message_cls(_check_int("index", U64, index), *values)


# --------------------------------------------------------------------------- JSON view


def _camel_case(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _json_fields(fields: tuple[tuple[str, str], ...], obj: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, kind in fields:
        value = getattr(obj, name)
        if kind == ADDRESS:
            out[_camel_case(name)] = "0x" + value.hex()
        elif kind == ORDERS:
            out[_camel_case(name)] = [_json_fields(PlaceOrder.FIELDS, order) for order in value]
        elif kind == BOOL:
            out[_camel_case(name)] = bool(value)
        elif kind == U256 or kind == U64:
            out[_camel_case(name)] = str(value)  # beyond 2**53: JSON numbers lose precision
        else:
            out[_camel_case(name)] = value
    return out


def transaction_to_json(tx: Transaction) -> dict[str, object]:
    """A JSON-ready view of a transaction for RPC answers and logs: ``type``, ``hash``, the
    envelope and the fields in camelCase; addresses, hashes and signatures as 0x-hex, uint64 and
    uint256 values as decimal strings (JSON numbers are not exact beyond 2**53). ``raw`` is the
    canonical encoding, the one form to feed back into ``decode_transaction``."""
    raw = encode_transaction(tx)
    view: dict[str, object] = {"type": type(tx).__name__ if isinstance(tx, L1Message) else type(tx.action).__name__}
    view["hash"] = "0x" + keccak(raw).hex()
    if isinstance(tx, SignedTx):
        view["account"] = "0x" + tx.account.hex()
        view["nonce"] = str(tx.nonce)
        view["action"] = _json_fields(tx.action.FIELDS, tx.action)
        view["signature"] = "0x" + tx.signature.hex()
    else:
        view["index"] = str(tx.index)
        view["kind"] = tx.KIND
        view["payload"] = _json_fields(tx.FIELDS, tx)
    view["raw"] = "0x" + raw.hex()
    return view
