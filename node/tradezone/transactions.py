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
    worker process can recover and the VM does not recover again.
    """

    __slots__ = ("action", "account", "nonce", "signature", "_signer", "_encoded")

    action: Action
    account: bytes
    nonce: int
    signature: bytes

    def __init__(self, action: Action, account: bytes, nonce: int, signature: bytes) -> None:
        self.action = action
        self.account = account
        self.nonce = nonce
        self.signature = signature
        self._signer: tuple[bytes, bytes] | None = None
        self._encoded: bytes | None = None

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

    def __getstate__(self) -> tuple[Action, bytes, int, bytes, tuple[bytes, bytes] | None, bytes | None]:
        return (self.action, self.account, self.nonce, self.signature, self._signer, self._encoded)

    def __setstate__(
        self, state: tuple[Action, bytes, int, bytes, tuple[bytes, bytes] | None, bytes | None]
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
