"""Admission of user transactions into the mempool: pure checks with the world passed in.

``check_admission`` is the sequencer's gate in front of the mempool. It raises the VM's named
``InvalidTransaction`` subclasses (or the mempool's own errors) so the JSON-RPC answer says
exactly what is wrong. It never changes the state: everything is read from it. Passing the gate
does not promise inclusion success (a fill can still find the account short of margin); it
promises that the transaction is well-formed, signed by a key with the right, next in its
signer's nonce sequence, and not obviously unfunded.
"""

from __future__ import annotations

from node.tradezone.accounts import authorize_signer, free_balance
from node.tradezone.errors import (
    InsufficientBalance,
    InvalidAction,
    InvalidOrder,
    MarketClosed,
    NonceMismatch,
    UnauthorizedSigner,
    UnknownAsset,
)
from node.tradezone.state import MARKET_OUTCOME, UNRESOLVED, Market, State
from node.tradezone.transactions import (
    AdjustIsolatedMargin,
    CancelAll,
    CancelByClientId,
    CancelOrder,
    ModifyOrder,
    OracleUpdate,
    PlaceOrder,
    PlaceOrders,
    ResolveMarket,
    SetMarginMode,
    SignedTx,
    Transfer,
    Withdraw,
)
from node.tradezone.venues import resolve_market_id, resolve_perp_market

ALL_MARKETS = 0xFFFFFFFF


def _market(state: State, market_id: int) -> Market:
    """The market an order's id names (an outcome market's NO side carries NO_SIDE_FLAG)."""
    return resolve_market_id(state, market_id)[0]


def _check_order_shape(market: Market, price: int, size: int) -> None:
    """Tick and lot rules: prices and sizes are integers in ticks and lots (so alignment is by
    construction); they must be inside the market's bounds and non-zero."""
    if size <= 0:
        raise InvalidOrder("order size must be at least one lot")
    if not market.min_price <= price <= market.max_price:
        raise InvalidOrder(
            f"price {price} is outside market {market.market_id}'s bounds [{market.min_price}, {market.max_price}]"
        )
    if market.kind == MARKET_OUTCOME and market.resolution != UNRESOLVED:
        raise MarketClosed(f"market {market.market_id} is resolved")


def _check_place(state: State, order: PlaceOrder) -> None:
    _check_order_shape(_market(state, order.market_id), order.price, order.size)


def check_admission(state: State, tx: SignedTx, signer: bytes, next_nonce: int) -> None:
    """Raise the named error that keeps ``tx`` out of the mempool, or return.

    ``signer`` is the recovered signing key; ``next_nonce`` the signer's next nonce counting the
    transactions of it already pending. Rules, one each:
    """
    action = tx.action
    # The nonce must be the signer's next one (pending transactions included): no gaps, no replays.
    if tx.nonce != next_nonce:
        raise NonceMismatch(next_nonce, tx.nonce)
    kind = type(action)
    # Oracle updates and resolutions are signed by the market's own designated key.
    if kind is OracleUpdate or kind is ResolveMarket:
        market = _market(state, action.market_id)  # type: ignore[attr-defined]
        designated = market.oracle if kind is OracleUpdate else market.resolver
        if signer != tx.account or signer != designated:
            raise UnauthorizedSigner(f"only market {market.market_id}'s designated key may sign {kind.__name__}")
        return
    # The signer is the account itself or an agent it approved, with the right for this action.
    authorize_signer(state, tx.account, signer, action.AGENT_ALLOWED, state.system.timestamp_ms)
    # Orders name a known, open market and fit its bounds.
    if kind is PlaceOrder:
        _check_place(state, action)  # type: ignore[arg-type]
    elif kind is PlaceOrders:
        for order in action.orders:  # type: ignore[attr-defined]
            _check_place(state, order)
    elif kind is ModifyOrder:
        market = _market(state, action.market_id)  # type: ignore[attr-defined]
        _check_order_shape(market, action.new_price, action.new_size)  # type: ignore[attr-defined]
    elif kind is CancelOrder or kind is CancelByClientId:
        _market(state, action.market_id)  # type: ignore[attr-defined]
    elif kind is CancelAll:
        if action.market_id != ALL_MARKETS:  # type: ignore[attr-defined]
            _market(state, action.market_id)  # type: ignore[attr-defined]
    # Margin modes and isolated margin name a perpetual; margin added must be free now.
    elif kind is SetMarginMode or kind is AdjustIsolatedMargin:
        market = resolve_perp_market(state, action.market_id)  # type: ignore[attr-defined]
        if kind is AdjustIsolatedMargin:
            amount = action.amount  # type: ignore[attr-defined]
            if amount <= 0:
                raise InvalidAction("amount must be positive")
            if action.add:  # type: ignore[attr-defined]
                free = free_balance(state, tx.account, market.quote_asset)
                if amount > free:
                    raise InsufficientBalance(market.quote_asset, amount, free)
    # Money leaving the account must be there now (the VM checks margin again when it applies).
    elif kind is Transfer or kind is Withdraw:
        asset_id = action.asset_id  # type: ignore[attr-defined]
        amount = action.amount  # type: ignore[attr-defined]
        if asset_id not in state.assets:
            raise UnknownAsset(f"unknown asset {asset_id}")
        if amount <= 0:
            raise InvalidAction("amount must be positive")
        free = free_balance(state, tx.account, asset_id)
        if amount > free:
            raise InsufficientBalance(asset_id, amount, free)
