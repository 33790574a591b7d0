"""Receipts: what every transaction of a block did, or why it was rejected.

Each transaction gets exactly one receipt, in block order (after the maker-first reordering).
A rejected transaction's receipt carries the error's stable ``reason`` code and message; an
accepted one carries its events: the orders it placed (and how each ended), every fill with
maker, taker, price, size and both fees, every order it cancelled or that expired, and the
withdrawal it recorded.

Canonical encoding (the receipts root is the Merkle root of ``merkle.py`` over it): msgpack (msgspec) of
``[status, reason, detail, [orders...], [fills...], [removed...], withdrawal_id or nil]`` with

* order:   ``[order_id, status, filled, remaining, reason]``
* fill:    ``[market_id, maker_order_id, taker_order_id, maker, taker, price, size,
  maker_fee, taker_fee, kind, book_side]`` (addresses as msgpack bin, fees signed ints)
* removed: ``[order_id, why]``

msgpack integers and strings use their shortest form, so the encoding is canonical.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

STATUS_REJECTED = 0
STATUS_OK = 1

# How a placed order ended within its transaction.
ORDER_RESTING = 0  # rests in the book (maybe partly filled)
ORDER_FILLED = 1  # completely filled
ORDER_DONE = 2  # IOC: matched what it could, the rest cancelled
ORDER_REJECTED = 3  # rejected (PlaceOrders: each order stands alone); see ``reason``
ORDER_STOPPED = 4  # matching stopped (the taker could pay no more); the rest cancelled

# Fill kinds (outcome markets settle three ways; spot and perps always trade).
FILL_TRADE = 0
FILL_MINT = 1
FILL_MERGE = 2

# Why an order left the book other than by filling.
REMOVED_CANCELLED = 0  # cancelled by its owner (or by a modify)
REMOVED_SELF_TRADE = 1  # expired by self-trade prevention
REMOVED_UNFUNDED = 2  # its owner could no longer pay or margin it when it was met
REMOVED_RESOLVED = 3  # the market resolved
REMOVED_FORCED = 4  # cancelled by a forced withdrawal


class OrderResult(msgspec.Struct, frozen=True, array_like=True):
    """How one order placed by the transaction ended."""

    order_id: int
    status: int
    filled: int
    remaining: int
    reason: str = ""


class FillEvent(msgspec.Struct, frozen=True, array_like=True):
    """One fill. ``price`` and ``book_side`` (the taker's side) are in the book's terms (YES
    terms for an outcome market); fees are in the market's collateral, a negative maker fee is
    a rebate."""

    market_id: int
    maker_order_id: int
    taker_order_id: int
    maker: bytes
    taker: bytes
    price: int
    size: int
    maker_fee: int
    taker_fee: int
    kind: int
    book_side: int


class RemovedOrder(msgspec.Struct, frozen=True, array_like=True):
    """An order that left a book other than by filling, and why."""

    order_id: int
    why: int


class Receipt(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The receipt of one transaction.

    Sealed once the transaction is done (``Events.receipt``), and never tracked by Python's
    cyclic garbage collector: it holds only atoms and tuples of atom-only structs, so it can be
    part of no cycle, and a block's ten thousand receipts then add nothing to the collector's
    pass at the end of the block."""

    status: int
    reason: str = ""
    detail: str = ""
    orders: tuple[OrderResult, ...] = ()
    fills: tuple[FillEvent, ...] = ()
    removed: tuple[RemovedOrder, ...] = ()
    withdrawal_id: int | None = None

    @property
    def ok(self) -> bool:
        """True when the transaction was applied."""
        return self.status == STATUS_OK


class Events:
    """What a transaction did, gathered while it runs: the orders it placed, its fills, the
    orders it removed, the withdrawal it recorded. ``receipt()`` seals them into its receipt."""

    __slots__ = ("orders", "fills", "removed", "withdrawal_id")

    def __init__(self) -> None:
        self.orders: list[OrderResult] = []
        self.fills: list[FillEvent] = []
        self.removed: list[RemovedOrder] = []
        self.withdrawal_id: int | None = None

    def receipt(self) -> Receipt:
        """The receipt of the applied transaction."""
        return Receipt(STATUS_OK, "", "", tuple(self.orders), tuple(self.fills), tuple(self.removed),
                       self.withdrawal_id)


def rejected(reason: str, detail: str) -> Receipt:
    """The receipt of a rejected transaction."""
    return Receipt(STATUS_REJECTED, reason, detail)


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(Receipt)


def encode_receipt(receipt: Receipt) -> bytes:
    """Canonical encoding of a receipt: msgpack of the array-like structs (see the module
    docstring); equal receipts always encode to the same bytes."""
    return _ENCODER.encode(receipt)


def encode_receipts(receipts: Iterable[Receipt]) -> list[bytes]:
    """:func:`encode_receipt` of each receipt, in order."""
    encode = _ENCODER.encode
    return [encode(receipt) for receipt in receipts]


def decode_receipt(data: bytes) -> Receipt:
    """Inverse of :func:`encode_receipt`; raises ``msgspec.DecodeError`` on malformed input."""
    return _DECODER.decode(data)


def receipt_to_json(receipt: Receipt) -> dict[str, object]:
    """A JSON-friendly view of a receipt (addresses as 0x-hex), for RPC and test vectors."""
    return {
        "status": receipt.status,
        "reason": receipt.reason,
        "detail": receipt.detail,
        "orders": [[o.order_id, o.status, o.filled, o.remaining, o.reason] for o in receipt.orders],
        "fills": [
            {
                "market_id": f.market_id,
                "maker_order_id": f.maker_order_id,
                "taker_order_id": f.taker_order_id,
                "maker": "0x" + f.maker.hex(),
                "taker": "0x" + f.taker.hex(),
                "price": f.price,
                "size": f.size,
                "maker_fee": f.maker_fee,
                "taker_fee": f.taker_fee,
                "kind": f.kind,
                "book_side": f.book_side,
            }
            for f in receipt.fills
        ],
        "removed": [[r.order_id, r.why] for r in receipt.removed],
        "withdrawal_id": receipt.withdrawal_id,
    }
