"""The TradeZone state-transition function.

``state_transition(state, parent, block)`` validates the header against its parent, applies the
body, recomputes each root and compares it with the header, one step each. ``apply_block`` is
the body: pure and deterministic (no clock but the header's, integer arithmetic, no iteration
order that could differ between nodes).

Transactions are applied in maker-first order, whatever order the block lists them in: first
every action that can take no liquidity (L1 messages, post-only placements, agent, transfer and
withdrawal actions, oracle updates, resolutions), then cancels, then actions that can take
(GTC/IOC placements, modifies); within each group in block order. Receipt ``i`` belongs to
``block.transactions[i]``.

Nonces are checked first, in block order (so that the reordering never breaks a key's nonce
sequence): a user transaction with a bad signature or not the signer's next nonce is rejected and
changes nothing; otherwise its nonce is consumed (the signed action can never be replayed). Its
signer's authority and the action itself are then checked when it is applied, inside a
snapshot: if anything fails, everything it did is rolled back and its receipt carries the
reason. L1 messages are never rejected (the bridge already accepted them): they
advance the queue cursor and rolling hash even when their effect is void.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import msgspec

from node.tradezone import accounts
from node.tradezone.blocks import Block, Header, transactions_root, validate_header
from node.tradezone.eip712 import DEVNET_DOMAIN, Domain, recover_signer
from node.tradezone.errors import (
    InvalidAction,
    InvalidTransaction,
    L1MessageOutOfOrder,
    NonceMismatch,
    RootMismatch,
    TradeZoneError,
)
from node.tradezone.merkle import merkle_root
from node.tradezone.oracle import apply_oracle_update
from node.tradezone.outcome import check_resolver, pay_out_resolution
from node.tradezone.receipts import (
    ORDER_REJECTED,
    REMOVED_FORCED,
    REMOVED_RESOLVED,
    Events,
    OrderResult,
    Receipt,
    encode_receipts,
    rejected,
)
from node.tradezone.settlement import settle_variation_margin
from node.tradezone.state import (
    TAG_NONCE,
    TAG_STAKE,
    State,
    begin_transaction,
    commit_transaction,
    compute_state_root,
    rollback_transaction,
    set_entry,
    set_system,
)
from node.tradezone.trading import (
    adjust_isolated_margin,
    cancel_all,
    cancel_by_client_id,
    cancel_order,
    check_margin_after_debit,
    modify_order,
    place_order,
    release_isolated_excess,
    remove_resting,
    set_margin_mode,
    withdrawable,
)
from node.tradezone.transactions import (
    ALL_MARKETS,
    TIF_POST_ONLY,
    AdjustIsolatedMargin,
    ApproveAgent,
    CancelAll,
    CancelByClientId,
    CancelOrder,
    DepositMessage,
    ForcedWithdrawalMessage,
    L1Message,
    ModifyOrder,
    OracleUpdate,
    PlaceOrder,
    PlaceOrders,
    ResolveMarket,
    RevokeAgent,
    SetMarginMode,
    SignedTx,
    StakeMessage,
    Transaction,
    Transfer,
    Withdraw,
    next_rolling_hash,
)

GROUP_NON_TAKING = 0
GROUP_CANCEL = 1
GROUP_TAKING = 2

_CANCELS = (CancelOrder, CancelByClientId, CancelAll)


def transaction_group(tx: Transaction) -> int:
    """The maker-first group of a transaction (see the module docstring)."""
    if not isinstance(tx, SignedTx):
        return GROUP_NON_TAKING
    action = tx.action
    kind = type(action)
    if kind is PlaceOrder:
        return GROUP_NON_TAKING if action.tif == TIF_POST_ONLY else GROUP_TAKING  # type: ignore[attr-defined]
    if kind is PlaceOrders:
        orders = action.orders  # type: ignore[attr-defined]
        return GROUP_NON_TAKING if all(o.tif == TIF_POST_ONLY for o in orders) else GROUP_TAKING
    if kind is ModifyOrder:
        return GROUP_TAKING
    if kind in _CANCELS:
        return GROUP_CANCEL
    return GROUP_NON_TAKING


def maker_first_order(transactions: Sequence[Transaction]) -> list[int]:
    """Indexes of ``transactions`` in maker-first application order (stable within groups)."""
    non_taking: list[int] = []
    cancels: list[int] = []
    taking: list[int] = []
    for index, tx in enumerate(transactions):
        # transaction_group, with the two most common kinds decided here without a call
        if type(tx) is SignedTx:
            action = tx.action
            kind = type(action)
            if kind is PlaceOrder:
                (non_taking if action.tif == TIF_POST_ONLY else taking).append(index)  # type: ignore[attr-defined]
                continue
            if kind is CancelOrder:
                cancels.append(index)
                continue
        group = transaction_group(tx)
        (non_taking if group == GROUP_NON_TAKING else cancels if group == GROUP_CANCEL else taking).append(index)
    return non_taking + cancels + taking


class BlockContext(msgspec.Struct, frozen=True):
    """What the body of a block may read besides the state: its header's number and time."""

    number: int
    timestamp_ms: int
    domain: Domain


# --- L1 messages ----------------------------------------------------------------------------------


def apply_l1_message(state: State, message: L1Message, ctx: BlockContext) -> Receipt:
    """Apply the next L1 queue message: advance cursor and rolling hash, then its effect.

    Raises L1MessageOutOfOrder (a block-level error) unless ``message.index`` is the next index.
    A deposit of an asset TradeZone does not know, or a forced withdrawal with nothing to pay,
    is consumed with a rejected receipt (its effect is void, the queue still advances).
    """
    system = state.system
    if message.index != system.l1_next_index:
        raise L1MessageOutOfOrder(system.l1_next_index, message.index)
    set_system(
        state,
        msgspec.structs.replace(
            system,
            l1_next_index=system.l1_next_index + 1,
            l1_rolling_hash=next_rolling_hash(system.l1_rolling_hash, message),
        ),
    )
    events = Events()
    begin_transaction(state)
    try:
        if isinstance(message, DepositMessage):
            asset = state.assets.get(message.asset_id)
            if asset is None or not asset.l1_backed:
                raise InvalidAction(f"asset {message.asset_id} is not an L1 asset of TradeZone")
            if message.amount:
                accounts.credit(state, message.recipient, message.asset_id, message.amount)
        elif isinstance(message, StakeMessage):
            old = state.stakes.get(message.staker, 0)
            set_entry(state, TAG_STAKE, state.stakes, message.staker, message.new_stake)
            current = state.system
            set_system(state, msgspec.structs.replace(current, stakes_total=current.stakes_total - old
                                                      + message.new_stake))
        elif isinstance(message, ForcedWithdrawalMessage):
            events.withdrawal_id = forced_withdrawal(state, message.account, message.asset_id, events, ctx)
    except InvalidTransaction as err:
        rollback_transaction(state)
        return rejected(err.reason, str(err))
    commit_transaction(state)
    return events.receipt()


def forced_withdrawal(state: State, account: bytes, asset_id: int, events: Events, ctx: BlockContext) -> int:
    """Cancel the account's resting orders that reserve ``asset_id`` or are margined in it
    (perpetuals settled in it), return the isolated margin in it that no position needs, then
    withdraw everything it can take out of that asset to itself. Returns the withdrawal id."""
    accounts.check_asset(state, asset_id)
    if not state.assets[asset_id].l1_backed:
        raise InvalidAction(f"asset {asset_id} exists only in TradeZone")
    cancel_all(state, account, ALL_MARKETS, events, asset_filter=asset_id, why=REMOVED_FORCED)
    release_isolated_excess(state, account, asset_id)
    amount = withdrawable(state, account, asset_id)
    if amount <= 0:
        raise InvalidAction("nothing to withdraw")
    accounts.debit_free(state, account, asset_id, amount)
    return accounts.record_withdrawal(state, account, account, asset_id, amount, ctx.number).withdrawal_id


# --- user transactions ----------------------------------------------------------------------------


def admit_signed_transactions(
    state: State, transactions: Sequence[Transaction], ctx: BlockContext
) -> dict[int, Receipt]:
    """The nonce pass, in block order: recover each user transaction's signer (cached signers
    are used as they are) and accept it only if its nonce is the signer's next nonce counting
    the signer's earlier transactions of this block; accepted nonces are consumed. Returns the
    rejected receipts by transaction index (those transactions change nothing)."""
    refused: dict[int, Receipt] = {}
    expected: dict[bytes, int] = {}
    separator = ctx.domain.separator
    nonces = state.nonces
    for index, tx in enumerate(transactions):
        if not isinstance(tx, SignedTx):
            continue
        cached = tx._signer  # the signer recovered under ``separator``, as ``cached_signer``
        if cached is not None and cached[0] == separator:
            signer = cached[1]
        else:
            try:
                signer = recover_signer(tx, ctx.domain)
            except InvalidTransaction as err:
                refused[index] = rejected(err.reason, str(err))
                continue
        nonce = expected.get(signer)
        if nonce is None:
            nonce = nonces.get(signer, 0)  # accounts.next_nonce
        if tx.nonce != nonce:
            mismatch = NonceMismatch(nonce, tx.nonce)
            refused[index] = rejected(mismatch.reason, str(mismatch))
            continue
        expected[signer] = nonce + 1
    for signer, nonce in expected.items():
        set_entry(state, TAG_NONCE, state.nonces, signer, nonce)
    return refused


def apply_signed_transaction(state: State, tx: SignedTx, ctx: BlockContext) -> Receipt:
    """Apply an admitted user transaction: check the signer may act for the account, then run
    the action in a snapshot; on any rule it breaks, roll back and return the reason."""
    action = tx.action
    cached = tx._signer  # as tx.cached_signer(ctx.domain.separator), without the call
    signer = cached[1] if cached is not None and cached[0] == ctx.domain.separator else recover_signer(tx, ctx.domain)
    events = Events()
    begin_transaction(state)
    try:
        accounts.authorize_signer(state, tx.account, signer, action.AGENT_ALLOWED, ctx.timestamp_ms)
        apply_action(state, tx.account, signer, action, events, ctx)
    except InvalidTransaction as err:
        rollback_transaction(state)
        return rejected(err.reason, str(err))
    commit_transaction(state)
    return events.receipt()


def apply_action(
    state: State, account: bytes, signer: bytes, action: object, events: Events, ctx: BlockContext
) -> None:
    """Apply one authorized user action to ``account``, gathering what it did in ``events``; raises a named
    InvalidTransaction on any rule it breaks (the caller rolls back)."""
    kind = type(action)
    if kind is PlaceOrder:
        events.orders.append(place_order(state, account, action, events))  # type: ignore[arg-type]
    elif kind is PlaceOrders:
        for order in action.orders:  # type: ignore[attr-defined]
            begin_transaction(state)
            try:
                result = place_order(state, account, order, events)
            except InvalidTransaction as err:
                rollback_transaction(state)
                events.orders.append(OrderResult(0, ORDER_REJECTED, 0, 0, err.reason))
                continue
            commit_transaction(state)
            events.orders.append(result)
    elif kind is CancelOrder:
        cancel_order(state, account, action.market_id, action.order_id, events)  # type: ignore[attr-defined]
    elif kind is CancelByClientId:
        cancel_by_client_id(state, account, action.market_id, action.client_order_id, events)  # type: ignore[attr-defined]
    elif kind is CancelAll:
        cancel_all(state, account, action.market_id, events)  # type: ignore[attr-defined]
    elif kind is ModifyOrder:
        m: ModifyOrder = action  # type: ignore[assignment]
        events.orders.append(modify_order(state, account, m.market_id, m.order_id, m.new_price, m.new_size, events))
    elif kind is ApproveAgent:
        a: ApproveAgent = action  # type: ignore[assignment]
        accounts.approve_agent(state, account, a.agent, a.expires_at_ms, ctx.timestamp_ms)
    elif kind is RevokeAgent:
        accounts.revoke_agent(state, account, action.agent)  # type: ignore[attr-defined]
    elif kind is Transfer:
        t: Transfer = action  # type: ignore[assignment]
        accounts.transfer(state, account, t.to, t.asset_id, t.amount)
        check_margin_after_debit(state, account, t.asset_id)
    elif kind is Withdraw:
        w: Withdraw = action  # type: ignore[assignment]
        record = accounts.withdraw(state, account, w.asset_id, w.amount, w.recipient, ctx.number)
        check_margin_after_debit(state, account, w.asset_id)
        events.withdrawal_id = record.withdrawal_id
    elif kind is SetMarginMode:
        mode: SetMarginMode = action  # type: ignore[assignment]
        set_margin_mode(state, account, mode.market_id, mode.isolated)
    elif kind is AdjustIsolatedMargin:
        adjust: AdjustIsolatedMargin = action  # type: ignore[assignment]
        adjust_isolated_margin(state, account, adjust.market_id, adjust.amount, adjust.add)
    elif kind is OracleUpdate:
        o: OracleUpdate = action  # type: ignore[assignment]
        apply_oracle_update(state, signer, o.market_id, o.price, o.timestamp_ms, ctx.timestamp_ms)
    elif kind is ResolveMarket:
        r: ResolveMarket = action  # type: ignore[assignment]
        market = check_resolver(state, r.market_id, signer)
        if r.outcome not in (0, 1):
            raise InvalidAction(f"outcome {r.outcome} is neither NO (0) nor YES (1)")
        for order in list(state.books[market.market_id].orders()):
            remove_resting(state, order, REMOVED_RESOLVED, events, in_book=True)
        pay_out_resolution(state, state.markets[market.market_id], r.outcome)
    else:
        raise InvalidAction(f"{kind.__name__} is not a user action")


# --- blocks ---------------------------------------------------------------------------------------


def apply_block(state: State, block: Block, domain: Domain = DEVNET_DOMAIN) -> list[Receipt]:
    """Apply a block's transactions in maker-first order; return one receipt per transaction in
    block order. Raises L1MessageOutOfOrder (InvalidBlock) if the L1 messages skip or repeat
    (the state is then partly applied: callers validate the header first, as
    ``state_transition`` does, or discard the state)."""
    header = block.header
    ctx = BlockContext(header.number, header.timestamp_ms, domain)
    transactions = block.transactions
    receipts: list[Receipt | None] = [None] * len(transactions)
    with collector_paused():
        refused = admit_signed_transactions(state, transactions, ctx)
        for index in maker_first_order(transactions):
            tx = transactions[index]
            if index in refused:
                receipts[index] = refused[index]
            elif isinstance(tx, SignedTx):
                receipts[index] = apply_signed_transaction(state, tx, ctx)
            else:
                receipts[index] = apply_l1_message(state, tx, ctx)
        settle_variation_margin(state)
        system = state.system
        set_system(state, msgspec.structs.replace(system, block_number=header.number,
                                                  timestamp_ms=header.timestamp_ms))
    return receipts  # type: ignore[return-value]


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the body with Python's cyclic garbage collector paused, then (if it was running) let
    it look at everything the body allocated in one young-generation pass.

    A block allocates hundreds of thousands of small objects (journal entries, balance tuples,
    receipts); with the collector running, a pass every 700 of them (and the older generations
    they push into) costs about a third of the block. Nothing here changes what is computed."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
            gc.collect(0)


def receipts_root(receipts: Sequence[Receipt]) -> bytes:
    """The receipts root: the Merkle root (``node.tradezone.merkle``) over the receipts'
    canonical encodings, in block order (``EMPTY_MERKLE_ROOT`` for none)."""
    return merkle_root(encode_receipts(receipts))


def state_transition(state: State, parent: Header, block: Block, domain: Domain = DEVNET_DOMAIN) -> list[Receipt]:
    """Validate ``block`` against ``parent``, apply it, and check every root of its header.

    Raises the named InvalidHeader subclass before anything is applied, or RootMismatch (with
    got and expected) after; on RootMismatch the state holds the block's effects and must be
    discarded by the caller (rebuilt from the parent), as with any invalid block.
    """
    header = block.header
    validate_header(header, parent, block.transactions)
    tx_root = transactions_root(block.transactions)
    if tx_root != header.transactions_root:
        raise RootMismatch("transactions", tx_root, header.transactions_root)
    receipts = apply_block(state, block, domain)
    rc_root = receipts_root(receipts)
    if rc_root != header.receipts_root:
        raise RootMismatch("receipts", rc_root, header.receipts_root)
    st_root = compute_state_root(state)
    if st_root != header.state_root:
        raise RootMismatch("state", st_root, header.state_root)
    return receipts


def seal_block(
    state: State, parent: Header, transactions: Sequence[Transaction], timestamp_ms: int, l1_origin: int,
    domain: Domain = DEVNET_DOMAIN,
) -> tuple[Block, list[Receipt]]:
    """Build the next block over ``parent`` from ``transactions`` (the sequencer's and tests'
    producer side): apply them, compute every root, and return the sealed block and receipts."""
    from node.tradezone.blocks import header_hash

    txs = tuple(transactions)
    l1_cursor = parent.l1_cursor + sum(1 for tx in txs if isinstance(tx, L1Message))
    draft = Header(parent.number + 1, header_hash(parent), timestamp_ms, l1_origin, l1_cursor,
                   b"", b"", b"")
    receipts = apply_block(state, Block(draft, txs), domain)
    header = msgspec.structs.replace(
        draft,
        transactions_root=transactions_root(txs),
        receipts_root=receipts_root(receipts),
        state_root=compute_state_root(state),
    )
    return Block(header, txs), receipts


__all__ = [
    "BlockContext",
    "TradeZoneError",
    "collector_paused",
    "apply_block",
    "maker_first_order",
    "receipts_root",
    "seal_block",
    "state_transition",
    "transaction_group",
]
