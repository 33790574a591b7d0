"""TradeZone consensus state: plain tables, explicit snapshots, and the state root.

Every piece of consensus state lives in one of the tables of :class:`State`. Code outside this
module reads the tables directly but changes them only through :func:`set_entry` /
:func:`delete_entry` (or the typed helpers built on them), so that

* every change is journaled and :func:`rollback_transaction` restores the exact previous
  contents (a rejected action leaves nothing behind), and
* every changed leaf is remembered in the dirty set, from which :func:`compute_state_root`
  updates the Merkle-Patricia trie once per block.

Key layout and leaf encodings are documented in ``docs/state.md``; the encoders live here so
that the document and the code sit next to each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from node.tradezone.hashing import keccak256

if TYPE_CHECKING:
    from node.tradezone.matching import OrderBook, RestingOrder

# --- table tags (also the first byte of each trie key) -----------------------------------------
TAG_BALANCE = 0x01
TAG_NONCE = 0x02
TAG_AGENT = 0x03
TAG_POSITION = 0x04
TAG_ORDER = 0x05
TAG_MARKET = 0x06
TAG_VENUE = 0x07
TAG_WITHDRAWAL = 0x08
TAG_SYSTEM = 0x09
TAG_ASSET = 0x0A
TAG_STAKE = 0x0B

SYSTEM_KEY = b"\x09"
ZERO_HASH = b"\x00" * 32
BLANK_ROOT = bytes.fromhex("56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421")

# Market kinds.
MARKET_SPOT = 0
MARKET_PERP = 1
MARKET_OUTCOME = 2

# Outcome of an order in an outcome market (which share the order trades), as in transactions.
OUTCOME_NO = 0
OUTCOME_YES = 1

# Market resolution (outcome markets).
UNRESOLVED = 0
RESOLVED_YES = 1
RESOLVED_NO = 2

# Margin modes of a perpetual position.
MARGIN_CROSS = 0
MARGIN_ISOLATED = 1

PPM = 1_000_000


class TrieEngine(Protocol):
    """The part of ``proofs.engine.CommitEngine`` the state needs (docs/interfaces.md)."""

    @property
    def root(self) -> bytes: ...

    def commit(self, dirty: Mapping[bytes, bytes]) -> bytes: ...


# --- records --------------------------------------------------------------------------------------


class Asset(msgspec.Struct, frozen=True):
    """An asset known to TradeZone; ``l1_backed`` assets are custodied by the bridge."""

    asset_id: int
    symbol: str
    decimals: int
    l1_backed: bool


class Venue(msgspec.Struct, frozen=True):
    """A market venue: who runs it, where its fees go, and its insurance fund account."""

    venue_id: int
    name: str
    deployer: bytes
    fee_account: bytes
    insurance_account: bytes
    simulated: bool
    max_leverage_cap: int


class Market(msgspec.Struct, frozen=True):
    """A market's parameters (fixed at listing) and its dynamic fields.

    Units: ``size`` is in lots, ``lot_size`` base units per lot; ``price`` is in ticks and the
    quote value of one lot at price ``p`` is ``p * tick_size`` quote units. Fee rates are in
    millionths of notional (``maker_fee_ppm`` may be negative: a rebate, never larger than the
    taker fee). Outcome markets: base = YES shares (asset ``yes_asset``), ``no_asset`` the NO
    shares, ``max_price * tick_size == lot_size`` so that a YES and a NO lot together are worth
    exactly one lot's units of collateral. ``max_open_interest`` caps a perpetual's open
    interest in lots (0: no cap). ``settle_variation_margin``: at the end of every block the
    unrealized PnL of the perpetual's positions is settled into their collateral balances.
    """

    market_id: int
    venue_id: int
    kind: int
    symbol: str
    base_asset: int
    quote_asset: int
    lot_size: int
    tick_size: int
    min_price: int
    max_price: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    max_leverage: int
    oracle: bytes
    resolver: bytes
    no_asset: int
    # dynamic
    mark_price: int = 0
    funding_index: int = 0
    open_interest: int = 0
    resolution: int = UNRESOLVED
    last_oracle_ms: int = 0
    deviation_events: int = 0
    max_open_interest: int = 0
    settle_variation_margin: bool = False


class Position(msgspec.Struct, frozen=True):
    """A perpetual position: signed size in lots, signed cost basis in collateral units.

    ``cost`` is the sum of ``size * price * tick_size`` over the open part (long positive), so the
    unrealized PnL at mark ``m`` is ``size * m * tick_size - cost``. ``funding_index`` is the
    market's cumulative funding index when funding was last settled into this position.
    """

    size: int
    cost: int
    funding_index: int
    margin_mode: int = MARGIN_CROSS
    isolated_margin: int = 0


class OrderMeta(msgspec.Struct, frozen=True):
    """What the VM keeps about an open order beside the book's :class:`RestingOrder`.

    ``reserved`` is what the order still holds of ``reserved_asset`` (spot and outcome orders);
    perp orders reserve nothing and are margined instead. ``outcome`` is the share the order
    trades in an outcome market, ``user_side``/``user_price`` the side and price as signed.
    """

    market_id: int
    account: bytes
    outcome: int
    user_side: int
    user_price: int
    reserved_asset: int
    reserved: int


class Withdrawal(msgspec.Struct, frozen=True):
    """A withdrawal written into state; the batch carrying it makes it claimable on the bridge."""

    withdrawal_id: int
    account: bytes
    recipient: bytes
    asset_id: int
    amount: int
    tz_block: int


class System(msgspec.Struct, frozen=True):
    """Global counters: the L1 queue cursor and rolling hash, the next ids, the last block."""

    l1_next_index: int = 0
    l1_rolling_hash: bytes = ZERO_HASH
    next_withdrawal_id: int = 0
    next_order_id: int = 1
    next_order_seq: int = 1
    block_number: int = -1
    block_hash: bytes = ZERO_HASH
    timestamp_ms: int = 0
    stakes_total: int = 0


_MISSING: Any = object()


@dataclass(slots=True)
class State:
    """The whole TradeZone state.

    Consensus tables (committed to the root): ``balances`` ((account, asset) -> (balance,
    reserved)), ``nonces`` (signer -> next nonce), ``agents`` ((account, agent) -> expiry ms, 0 =
    none), ``positions`` ((account, market) -> Position), ``orders`` (order id -> OrderMeta, with
    the size/price/priority living in the market's book), ``markets``, ``venues``, ``assets``,
    ``withdrawals``, ``stakes`` (staker -> stake) and ``system``.

    Derived indexes (rebuilt from the tables, never committed): ``books``, ``client_ids``
    ((account, market, client id) -> order id), ``perp_markets_of`` (account -> sorted market ids
    with a position or open perp order), ``order_notional`` ((account, market) -> sum of the
    notional of its open perp orders), ``holders`` (asset -> accounts that ever held it),
    ``orders_of`` (account -> ids of its resting orders), ``position_holders`` (market -> accounts
    with a position) and ``marked`` (markets whose mark price changed in the current block).
    ``trie_keys`` caches the hashed trie key of recurring leaves (tag -> table key -> keccak).
    """

    trie: TrieEngine
    book_factory: Callable[[int], OrderBook] = field(default_factory=lambda: _default_book_factory())
    balances: dict[tuple[bytes, int], tuple[int, int]] = field(default_factory=dict)
    nonces: dict[bytes, int] = field(default_factory=dict)
    agents: dict[tuple[bytes, bytes], int] = field(default_factory=dict)
    positions: dict[tuple[bytes, int], Position] = field(default_factory=dict)
    orders: dict[int, OrderMeta] = field(default_factory=dict)
    markets: dict[int, Market] = field(default_factory=dict)
    venues: dict[int, Venue] = field(default_factory=dict)
    assets: dict[int, Asset] = field(default_factory=dict)
    withdrawals: dict[int, Withdrawal] = field(default_factory=dict)
    stakes: dict[bytes, int] = field(default_factory=dict)
    system: System = field(default_factory=System)
    books: dict[int, OrderBook] = field(default_factory=dict)
    client_ids: dict[tuple[bytes, int, int], int] = field(default_factory=dict)
    perp_markets_of: dict[bytes, tuple[int, ...]] = field(default_factory=dict)
    order_notional: dict[tuple[bytes, int], int] = field(default_factory=dict)
    holders: dict[int, dict[bytes, None]] = field(default_factory=dict)
    orders_of: dict[bytes, dict[int, None]] = field(default_factory=dict)
    position_holders: dict[int, dict[bytes, None]] = field(default_factory=dict)
    marked: dict[int, None] = field(default_factory=dict)
    journal: list[tuple[Any, ...]] = field(default_factory=list)
    checkpoints: list[int] = field(default_factory=list)
    enlisted: list[list[OrderBook]] = field(default_factory=list)
    committed_order_floor: int = 1
    dirty: dict[int, set[Any]] = field(default_factory=lambda: {tag: set() for tag in _ENCODERS})
    trie_keys: dict[int, dict[Any, bytes]] = field(default_factory=dict)


def _default_book_factory() -> Callable[[int], OrderBook]:
    from node.tradezone.matching import OrderBook

    return OrderBook


# --- journaled writes -----------------------------------------------------------------------------


def set_entry(state: State, tag: int, table: dict[Any, Any], key: Any, value: Any) -> None:
    """Set ``table[key] = value``, journaled and marked dirty under ``tag``."""
    if state.checkpoints:
        state.journal.append((table, key, table.get(key, _MISSING)))
    table[key] = value
    state.dirty[tag].add(key)


def delete_entry(state: State, tag: int, table: dict[Any, Any], key: Any) -> None:
    """Delete ``table[key]`` if present, journaled and marked dirty under ``tag``."""
    old = table.pop(key, _MISSING)
    if old is _MISSING:
        return
    if state.checkpoints:
        state.journal.append((table, key, old))
    state.dirty[tag].add(key)


def set_index(state: State, table: dict[Any, Any], key: Any, value: Any) -> None:
    """Set a derived (uncommitted) index entry, journaled but never dirty."""
    if state.checkpoints:
        state.journal.append((table, key, table.get(key, _MISSING)))
    table[key] = value


def delete_index(state: State, table: dict[Any, Any], key: Any) -> None:
    """Delete a derived index entry if present, journaled."""
    old = table.pop(key, _MISSING)
    if old is not _MISSING and state.checkpoints:
        state.journal.append((table, key, old))


def record_undo(state: State, undo: Callable[[], None]) -> None:
    """Journal an arbitrary undo step (used for order-book changes)."""
    if state.checkpoints:
        state.journal.append((undo,))


def begin_transaction(state: State) -> None:
    """Open a snapshot (nestable); every change until the matching commit/rollback, order
    books included, can be undone. Books join the snapshot lazily, when first changed
    (:func:`enlist_book`), so the cost does not grow with the number of markets."""
    state.checkpoints.append(len(state.journal))
    state.enlisted.append([])


def enlist_book(state: State, book: OrderBook) -> None:
    """Make ``book`` part of every open snapshot before it is changed (idempotent)."""
    enlisted = state.enlisted
    if not enlisted:
        return  # no snapshot open
    top = enlisted[-1]
    if book in top:
        return  # a book in a snapshot is in every snapshot around it too
    if len(enlisted) == 1:
        top.append(book)
        book.begin_transaction()
        return
    for level in range(len(enlisted) - 1, -1, -1):
        books = enlisted[level]
        if book in books:
            break
        books.append(book)
    else:
        level = -1
    for _ in range(len(enlisted) - 1 - level):
        book.begin_transaction()


def commit_transaction(state: State) -> None:
    """Keep the changes since the last :func:`begin_transaction` (an enclosing snapshot can
    still undo them)."""
    mark = state.checkpoints.pop()
    if not state.checkpoints:
        del state.journal[mark:]
    for book in state.enlisted.pop():
        book.commit_transaction()


def rollback_transaction(state: State) -> None:
    """Undo every change since the last :func:`begin_transaction`, newest first.

    Dirty marks are kept: the leaf is then re-encoded from its restored value, which writes the
    same bytes as before and so leaves the root unchanged.
    """
    mark = state.checkpoints.pop()
    for book in state.enlisted.pop():
        book.rollback_transaction()
    journal = state.journal
    while len(journal) > mark:
        entry = journal.pop()
        size = len(entry)
        if size == 3:
            table, key, old = entry
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        elif size == 2:
            entry[0].system = entry[1]  # (state, old system record): see set_system
        else:
            entry[0]()


# --- typed accessors ------------------------------------------------------------------------------


def get_balance(state: State, account: bytes, asset_id: int) -> tuple[int, int]:
    """``(balance, reserved)`` of an account in an asset; ``(0, 0)`` if it never held it."""
    return state.balances.get((account, asset_id), (0, 0))


def set_balance(state: State, account: bytes, asset_id: int, balance: int, reserved: int) -> None:
    """Write a balance leaf; a ``(0, 0)`` balance removes the leaf.

    Raises ``ValueError`` for a negative amount or ``reserved > balance``: callers check funds
    first, so this is a broken invariant, never a user error.
    """
    if reserved < 0 or balance < reserved:
        raise ValueError(f"balance invariant broken: balance={balance} reserved={reserved}")
    key = (account, asset_id)
    if balance == 0:  # and so reserved == 0
        delete_entry(state, TAG_BALANCE, state.balances, key)
        return
    table = state.balances
    old = table.get(key, _MISSING)
    if old is _MISSING:
        # Only this function writes balances, so an account with a balance leaf is already
        # among the asset's holders; a new leaf may be its first.
        holders = state.holders.get(asset_id)
        if holders is None:
            holders = state.holders[asset_id] = {}
        if account not in holders:
            set_index(state, holders, account, None)
    if state.checkpoints:
        state.journal.append((table, key, old))
    table[key] = (balance, reserved)
    state.dirty[TAG_BALANCE].add(key)


def add_to_balance(state: State, account: bytes, asset_id: int, amount: int, reserved_change: int = 0) -> None:
    """Add ``amount`` to the account's balance and ``reserved_change`` to its reserved part
    (either may be negative): :func:`set_balance` of the sums, with the same checks."""
    balance, reserved = state.balances.get((account, asset_id), (0, 0))
    set_balance(state, account, asset_id, balance + amount, reserved + reserved_change)


def set_system(state: State, system: System) -> None:
    """Replace the system leaf."""
    state.dirty[TAG_SYSTEM].add(SYSTEM_KEY)
    if state.checkpoints:
        state.journal.append((state, state.system))
    state.system = system


def new_order_id(state: State) -> tuple[int, int]:
    """Allocate ``(order_id, seq)``: sequential, never reused."""
    sysrec = state.system
    set_system(
        state,
        msgspec.structs.replace(
            sysrec, next_order_id=sysrec.next_order_id + 1, next_order_seq=sysrec.next_order_seq + 1
        ),
    )
    return sysrec.next_order_id, sysrec.next_order_seq


def add_market(state: State, market: Market) -> None:
    """List a market and create its empty book; outside any snapshot (genesis, governance)."""
    if state.checkpoints:
        raise RuntimeError("markets are listed outside transaction snapshots")
    set_entry(state, TAG_MARKET, state.markets, market.market_id, market)
    state.books[market.market_id] = state.book_factory(market.market_id)


def book_add(state: State, market_id: int, order: RestingOrder) -> None:
    """Rest an order in its market's book and mark its leaf dirty (the book journals itself)."""
    book = state.books[market_id]
    if state.checkpoints:
        enlist_book(state, book)
    book.add(order)
    state.dirty[TAG_ORDER].add(order.order_id)


def book_remove(state: State, market_id: int, order_id: int) -> RestingOrder | None:
    """Remove an order from its market's book (if there) and mark its leaf dirty."""
    book = state.books[market_id]
    if state.checkpoints:
        enlist_book(state, book)
    order = book.remove(order_id)
    if order is not None:
        state.dirty[TAG_ORDER].add(order_id)
    return order


def book_reduce(state: State, market_id: int, order_id: int, new_size: int) -> None:
    """Reduce a resting order's size keeping its time priority, and mark its leaf dirty."""
    book = state.books[market_id]
    if state.checkpoints:
        enlist_book(state, book)
    book.reduce(order_id, new_size)
    state.dirty[TAG_ORDER].add(order_id)


# --- leaf encodings -------------------------------------------------------------------------------


_SMALL_INTS = [b"\x80"] + [bytes((i,)) for i in range(1, 0x80)]
_LIST_HEADERS = [bytes((0xC0 + length,)) for length in range(56)]
_STRING_HEADERS = [bytes((0x80 + length,)) for length in range(56)]
_keccak = keccak256
_INLINE_INT_LIMIT = 1 << (8 * 55)  # integers below this encode as a short RLP string


def _rlp_int(value: int) -> bytes:
    if value < 0x80:
        if value < 0:
            raise ValueError("RLP encodes unsigned integers only")
        return _SMALL_INTS[value]
    raw = value.to_bytes((value.bit_length() + 7) >> 3, "big")
    length = len(raw)
    if length < 56:
        return _STRING_HEADERS[length] + raw
    return _rlp_len(length, 0x80) + raw


def _rlp_bytes(value: bytes) -> bytes:
    if len(value) == 1 and value[0] < 0x80:
        return value
    return _rlp_len(len(value), 0x80) + value


def _rlp_len(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(raw),)) + raw


def rlp_list(items: list[int | bytes | str]) -> bytes:
    """Ethereum RLP of a flat list of unsigned ints, byte strings and (UTF-8) strings."""
    parts = []
    for item in items:
        kind = type(item)
        if kind is int:
            parts.append(_rlp_int(item))  # type: ignore[arg-type]
        elif kind is str:
            parts.append(_rlp_bytes(item.encode()))  # type: ignore[union-attr]
        elif kind is bool:
            parts.append(_rlp_int(int(item)))  # type: ignore[arg-type]
        else:
            parts.append(_rlp_bytes(item))  # type: ignore[arg-type]
    body = b"".join(parts)
    length = len(body)
    if length < 56:
        return bytes((0xC0 + length,)) + body
    return _rlp_len(length, 0xC0) + body


def zigzag(value: int) -> int:
    """Map a signed integer to an unsigned one (0, -1, 1, -2 ... -> 0, 1, 2, 3 ...)."""
    return value << 1 if value >= 0 else ((-value) << 1) - 1


def unzigzag(value: int) -> int:
    """Inverse of :func:`zigzag`."""
    return value >> 1 if value & 1 == 0 else -((value + 1) >> 1)


def balance_key(account: bytes, asset_id: int) -> bytes:
    """Trie key of a balance leaf (docs/interfaces.md)."""
    return _keccak(b"\x01" + account + asset_id.to_bytes(4, "big"))


def _u32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


# The hashed trie keys of the account-keyed tables (balances, nonces, positions) are cached per
# state: the same accounts recur block after block, and a dict lookup is cheaper than building
# and hashing the key again. A table's cache is dropped whenever it grows past this size, which
# bounds its memory whatever the number of accounts.
_KEY_CACHE_LIMIT = 1 << 20


def _key_cache(state: State, tag: int) -> dict[Any, bytes]:
    cache = state.trie_keys.get(tag)
    if cache is None or len(cache) > _KEY_CACHE_LIMIT:
        cache = state.trie_keys[tag] = {}
    return cache


def _put_balances(state: State, keys: Iterable[tuple[bytes, int]], out: dict[bytes, bytes]) -> None:
    new_hash = keccak256
    cache = _key_cache(state, TAG_BALANCE)
    table = state.balances
    small = _SMALL_INTS
    string_headers = _STRING_HEADERS
    for key in keys:
        trie_key = cache.get(key)
        if trie_key is None:
            trie_key = cache[key] = new_hash(b"\x01" + key[0] + key[1].to_bytes(4, "big"))
        value = table.get(key)
        if value is None:
            out[trie_key] = b""
            continue
        balance, reserved = value
        # _rlp_int inline for the usual sizes: a balance of 1 to 55 bytes, reserved 0 or likewise.
        if 0x80 <= balance < _INLINE_INT_LIMIT:
            raw = balance.to_bytes((balance.bit_length() + 7) >> 3, "big")
            body = string_headers[len(raw)] + raw
        else:
            body = small[balance] if 0 <= balance < 0x80 else _rlp_int(balance)
        body += small[reserved] if 0 <= reserved < 0x80 else _rlp_int(reserved)
        length = len(body)
        out[trie_key] = (_LIST_HEADERS[length] if length < 56 else _rlp_len(length, 0xC0)) + body


def _put_nonces(state: State, keys: Iterable[bytes], out: dict[bytes, bytes]) -> None:
    new_hash = keccak256
    cache = _key_cache(state, TAG_NONCE)
    table = state.nonces
    for signer in keys:
        trie_key = cache.get(signer)
        if trie_key is None:
            trie_key = cache[signer] = new_hash(b"\x02" + signer)
        value = table.get(signer)
        if not value:
            out[trie_key] = b""
            continue
        item = _SMALL_INTS[value] if value < 0x80 else _rlp_int(value)
        out[trie_key] = _LIST_HEADERS[len(item)] + item


def _put_positions(state: State, keys: Iterable[tuple[bytes, int]], out: dict[bytes, bytes]) -> None:
    new_hash = keccak256
    cache = _key_cache(state, TAG_POSITION)
    table = state.positions
    small = _SMALL_INTS
    for key in keys:
        trie_key = cache.get(key)
        if trie_key is None:
            trie_key = cache[key] = new_hash(b"\x04" + key[0] + key[1].to_bytes(4, "big"))
        pos = table.get(key)
        if pos is None:
            out[trie_key] = b""
            continue
        # zigzag and the one-byte RLP of small values inline (sizes, funding index, mode and
        # isolated margin are usually small; the cost basis rarely is).
        size, cost, funding = pos.size, pos.cost, pos.funding_index
        size = size << 1 if size >= 0 else ((-size) << 1) - 1
        cost = cost << 1 if cost >= 0 else ((-cost) << 1) - 1
        funding = funding << 1 if funding >= 0 else ((-funding) << 1) - 1
        mode, isolated = pos.margin_mode, pos.isolated_margin
        body = b"".join((
            small[size] if size < 0x80 else _rlp_int(size),
            small[cost] if cost < 0x80 else _rlp_int(cost),
            small[funding] if funding < 0x80 else _rlp_int(funding),
            small[mode] if 0 <= mode < 0x80 else _rlp_int(mode),
            small[isolated] if 0 <= isolated < 0x80 else _rlp_int(isolated),
        ))
        length = len(body)
        out[trie_key] = (_LIST_HEADERS[length] if length < 56 else _rlp_len(length, 0xC0)) + body


def _put_orders(state: State, keys: Iterable[int], out: dict[bytes, bytes]) -> None:
    new_hash = keccak256
    # Order ids are never reused, so their keys are hashed each time rather than cached.
    orders = state.orders
    books = state.books
    small = _SMALL_INTS
    for order_id in keys:
        trie_key = new_hash(b"\x05" + order_id.to_bytes(8, "big"))
        meta = orders.get(order_id)
        if meta is None:
            out[trie_key] = b""
            continue
        order = books[meta.market_id].get(order_id)
        if order is None:
            out[trie_key] = b""
            continue
        # Fields that are usually below 0x80 take their one-byte encoding from the table.
        market_id, side, size, cid = meta.market_id, order.side, order.size, order.client_order_id
        outcome, reserved_asset = meta.outcome, meta.reserved_asset
        body = b"".join(
            (
                small[market_id] if 0 <= market_id < 0x80 else _rlp_int(market_id),
                _rlp_bytes(meta.account),
                small[side] if 0 <= side < 0x80 else _rlp_int(side),
                _rlp_int(order.price),
                small[size] if 0 <= size < 0x80 else _rlp_int(size),
                _rlp_int(order.seq),
                small[cid] if 0 <= cid < 0x80 else _rlp_int(cid),
                small[1] if order.reduce_only else small[0],
                small[outcome] if 0 <= outcome < 0x80 else _rlp_int(outcome),
                small[reserved_asset] if 0 <= reserved_asset < 0x80 else _rlp_int(reserved_asset),
                _rlp_int(meta.reserved),
            )
        )
        length = len(body)
        out[trie_key] = (_LIST_HEADERS[length] if length < 56 else _rlp_len(length, 0xC0)) + body


def _enc_agent(state: State, key: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    value = state.agents.get(key)
    return _keccak(b"\x03" + key[0] + key[1]), (b"" if value is None else rlp_list([value]))


def _enc_market(state: State, market_id: int) -> tuple[bytes, bytes]:
    m = state.markets.get(market_id)
    trie_key = _keccak(b"\x06" + _u32(market_id))
    if m is None:
        return trie_key, b""
    return trie_key, rlp_list(
        [
            m.venue_id,
            m.kind,
            m.symbol,
            m.base_asset,
            m.quote_asset,
            m.lot_size,
            m.tick_size,
            m.min_price,
            m.max_price,
            zigzag(m.maker_fee_ppm),
            m.taker_fee_ppm,
            m.max_leverage,
            m.oracle,
            m.resolver,
            m.no_asset,
            m.mark_price,
            zigzag(m.funding_index),
            m.open_interest,
            m.resolution,
            m.last_oracle_ms,
            m.deviation_events,
            m.max_open_interest,
            int(m.settle_variation_margin),
        ]
    )


def _enc_venue(state: State, venue_id: int) -> tuple[bytes, bytes]:
    v = state.venues.get(venue_id)
    trie_key = _keccak(b"\x07" + _u32(venue_id))
    if v is None:
        return trie_key, b""
    return trie_key, rlp_list(
        [v.name, v.deployer, v.fee_account, v.insurance_account, int(v.simulated), v.max_leverage_cap]
    )


def _enc_withdrawal(state: State, withdrawal_id: int) -> tuple[bytes, bytes]:
    w = state.withdrawals.get(withdrawal_id)
    trie_key = _keccak(b"\x08" + _u64(withdrawal_id))
    if w is None:
        return trie_key, b""
    return trie_key, rlp_list([w.account, w.recipient, w.asset_id, w.amount, w.tz_block])


def _enc_system(state: State, _key: bytes) -> tuple[bytes, bytes]:
    s = state.system
    return _keccak(SYSTEM_KEY), rlp_list(
        [
            s.l1_next_index,
            s.l1_rolling_hash,
            s.next_withdrawal_id,
            s.next_order_id,
            s.next_order_seq,
            s.stakes_total,
        ]
    )


def _enc_asset(state: State, asset_id: int) -> tuple[bytes, bytes]:
    a = state.assets.get(asset_id)
    trie_key = _keccak(b"\x0a" + _u32(asset_id))
    if a is None:
        return trie_key, b""
    return trie_key, rlp_list([a.symbol, a.decimals, int(a.l1_backed)])


def _enc_stake(state: State, staker: bytes) -> tuple[bytes, bytes]:
    value = state.stakes.get(staker)
    return _keccak(b"\x0b" + staker), (b"" if not value else rlp_list([value]))


LeafWriter = Callable[[State, Iterable[Any], dict[bytes, bytes]], None]


def _per_key(encode: Callable[[State, Any], tuple[bytes, bytes]]) -> LeafWriter:
    """A leaf writer for a rarely changing table, from its one-key encoder."""

    def write(state: State, keys: Iterable[Any], out: dict[bytes, bytes]) -> None:
        for key in keys:
            trie_key, value = encode(state, key)
            out[trie_key] = value

    return write


# Each writer encodes the leaves of the given table keys into ``out`` as ``{trie key: value}``
# (``b""`` for an absent leaf); the key layout and encodings are those of docs/state.md.
_ENCODERS: dict[int, LeafWriter] = {
    TAG_BALANCE: _put_balances,
    TAG_NONCE: _put_nonces,
    TAG_AGENT: _per_key(_enc_agent),
    TAG_POSITION: _put_positions,
    TAG_ORDER: _put_orders,
    TAG_MARKET: _per_key(_enc_market),
    TAG_VENUE: _per_key(_enc_venue),
    TAG_WITHDRAWAL: _per_key(_enc_withdrawal),
    TAG_SYSTEM: _per_key(_enc_system),
    TAG_ASSET: _per_key(_enc_asset),
    TAG_STAKE: _per_key(_enc_stake),
}


def mark_order_dirty(state: State, order_id: int) -> None:
    """Mark an order leaf for re-encoding (its book entry changed outside :func:`book_add`)."""
    state.dirty[TAG_ORDER].add(order_id)


def dirty_leaves(state: State) -> dict[bytes, bytes]:
    """Encode every dirty leaf: ``{trie key: value}`` (``b""`` for a deleted leaf)."""
    out: dict[bytes, bytes] = {}
    floor = state.committed_order_floor
    for tag, keys in state.dirty.items():
        if not keys:
            continue
        if tag == TAG_ORDER:
            # An order id at or above the floor was allocated after the last commit, so its leaf
            # is not in the trie: if it is already gone again, there is nothing to delete.
            orders = state.orders
            keys = {k for k in keys if k < floor or k in orders}
        _ENCODERS[tag](state, keys, out)
    return out


def compute_state_root(state: State) -> bytes:
    """Commit the dirty leaves to the trie once and return the new state root.

    Must be called outside any open snapshot; clears the dirty set.
    """
    if state.checkpoints:
        raise RuntimeError("state root computed inside an open snapshot")
    leaves = dirty_leaves(state)
    root = state.trie.commit(leaves) if leaves else state.trie.root
    for keys in state.dirty.values():
        keys.clear()
    state.committed_order_floor = state.system.next_order_id
    return root


def all_leaves(state: State) -> Iterator[tuple[bytes, bytes]]:
    """Every leaf of the state (trie key, value), for rebuilding a trie from scratch."""
    for tag, write in _ENCODERS.items():
        if tag == TAG_SYSTEM:
            keys: list[Any] = [SYSTEM_KEY]
        elif tag == TAG_ORDER:
            keys = list(state.orders)
        else:
            keys = list(_tables_of(state)[tag])
        leaves: dict[bytes, bytes] = {}
        write(state, keys, leaves)
        for trie_key, value in leaves.items():
            if value:
                yield trie_key, value


def _tables_of(state: State) -> dict[int, dict[Any, Any]]:
    return {
        TAG_BALANCE: state.balances,
        TAG_NONCE: state.nonces,
        TAG_AGENT: state.agents,
        TAG_POSITION: state.positions,
        TAG_MARKET: state.markets,
        TAG_VENUE: state.venues,
        TAG_WITHDRAWAL: state.withdrawals,
        TAG_ASSET: state.assets,
        TAG_STAKE: state.stakes,
    }
