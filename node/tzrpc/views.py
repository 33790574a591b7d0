"""Read views of the TradeZone state for the tz_* RPC: accounts, orders, books, proofs.

Each function reads the state (never changes it) and returns a JSON-ready value in the shapes
of docs/rpc.md. Margin figures come from the margin engine (``node.tradezone.margin``), so the
RPC shows exactly what the VM checks. A query about something that does not exist (a market, an
asset) raises ``QueryError``; the server answers it with -32602.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from node.tradezone.blocks import Header, header_hash
from node.tradezone.margin import (
    initial_rate_ppm,
    isolated_summary,
    maintenance_rate_ppm,
    margin_summary,
    position_notional,
    unrealized_pnl,
)
from node.tradezone.receipts import FillEvent
from node.tradezone.state import MARGIN_ISOLATED, MARKET_OUTCOME, MARKET_PERP, PPM, Market, State, balance_key
from node.tradezone.transactions import (
    DepositMessage,
    ForcedWithdrawalMessage,
    SignedTx,
    Transaction,
    Transfer,
)
from node.tzrpc.codec import asset_to_json, hex_bytes, market_to_json
from proofs.verify import decode_string, split_node, verify_proof

MAX_DEPTH = 1000
MAX_PROOF_ASSETS = 64
SIDES = ("buy", "sell")
OUTCOMES = ("no", "yes")
MARGIN_MODES = ("cross", "isolated")


class QueryError(ValueError):
    """A read names something the state does not have, or asks for too much."""


@runtime_checkable
class ProvingTrie(Protocol):
    """The part of ``proofs.engine.CommitEngine`` a proof needs."""

    def prove(self, key: bytes, root: bytes | None = None) -> list[bytes]: ...


def _ceil_ppm(value: int, rate_ppm: int) -> int:
    return -((-value * rate_ppm) // PPM)


def _market(state: State, market_id: int) -> Market:
    market = state.markets.get(market_id)
    if market is None:
        raise QueryError(f"unknown market {market_id}")
    return market


# --------------------------------------------------------------------------- accounts


def balances_view(state: State, account: bytes) -> list[dict[str, Any]]:
    """Every asset the account holds: balance, reserved (locked by resting orders) and free."""
    out = []
    for asset_id in sorted(state.assets):
        value = state.balances.get((account, asset_id))
        if value is None:
            continue
        balance, reserved = value
        out.append({
            "assetId": asset_id,
            "symbol": state.assets[asset_id].symbol,
            "balance": str(balance),
            "reserved": str(reserved),
            "free": str(balance - reserved),
        })
    return out


def positions_view(state: State, account: bytes) -> list[dict[str, Any]]:
    """The account's perpetual positions (and markets where it only has open perp orders or chose
    isolated margin), with the margin engine's figures at the mark price: notional, unrealized PnL,
    initial and maintenance requirement of the position, the notional of its open orders, and for
    an isolated position its equity (isolated margin plus unrealized PnL)."""
    out = []
    for market_id in state.perp_markets_of.get(account, ()):
        market = state.markets[market_id]
        position = state.positions.get((account, market_id))
        open_notional = state.order_notional.get((account, market_id), 0)
        size = position.size if position is not None else 0
        notional = position_notional(market, size)
        out.append({
            "marketId": market_id,
            "symbol": market.symbol,
            "size": size,
            "side": "long" if size > 0 else "short" if size < 0 else "flat",
            "cost": str(position.cost if position is not None else 0),
            "markPrice": market.mark_price,
            "notional": str(notional),
            "unrealizedPnl": str(unrealized_pnl(market, position) if position is not None else 0),
            "initialMargin": str(_ceil_ppm(notional, initial_rate_ppm(market))),
            "maintenanceMargin": str(_ceil_ppm(notional, maintenance_rate_ppm(market))),
            "openOrderNotional": str(open_notional),
            "openOrderMargin": str(_ceil_ppm(open_notional, initial_rate_ppm(market))),
            "marginMode": MARGIN_MODES[position.margin_mode] if position is not None else "cross",
            "isolatedMargin": str(position.isolated_margin if position is not None else 0),
            "isolatedEquity": str(isolated_summary(market, position, open_notional).equity)
            if position is not None and position.margin_mode == MARGIN_ISOLATED else None,
            "fundingIndex": str(position.funding_index if position is not None else market.funding_index),
        })
    return out


def margin_view(state: State, account: bytes) -> list[dict[str, Any]]:
    """Cross-margin summary per collateral asset the account's perpetuals use
    (``margin.margin_summary``): equity, initial and maintenance requirements, health flags."""
    collaterals = sorted({state.markets[m].quote_asset for m in state.perp_markets_of.get(account, ())})
    out = []
    for collateral in collaterals:
        summary = margin_summary(state, account, collateral)
        out.append({
            "collateral": collateral,
            "equity": str(summary.equity),
            "unrealizedPnl": str(summary.unrealized_pnl),
            "initialMargin": str(summary.initial),
            "maintenanceMargin": str(summary.maintenance),
            "meetsInitial": summary.meets_initial,
            "meetsMaintenance": summary.meets_maintenance,
        })
    return out


def open_orders_view(state: State, account: bytes, market_id: int | None = None) -> list[dict[str, Any]]:
    """The account's resting orders (optionally of one market), oldest order id first."""
    if market_id is not None:
        _market(state, market_id)
    out = []
    for order_id in sorted(state.orders_of.get(account, ())):
        meta = state.orders.get(order_id)
        if meta is None or (market_id is not None and meta.market_id != market_id):
            continue
        order = state.books[meta.market_id].get(order_id)
        if order is None:
            continue
        market = state.markets[meta.market_id]
        view: dict[str, Any] = {
            "orderId": order_id,
            "marketId": meta.market_id,
            "side": SIDES[meta.user_side],
            "price": meta.user_price,
            "size": order.size,
            "bookSide": SIDES[order.side],
            "bookPrice": order.price,
            "clientOrderId": str(order.client_order_id),
            "reduceOnly": order.reduce_only,
            "seq": order.seq,
            "reservedAsset": meta.reserved_asset if market.kind != MARKET_PERP else None,
            "reserved": str(meta.reserved),
        }
        if market.kind == MARKET_OUTCOME:
            view["outcome"] = OUTCOMES[meta.outcome]
        out.append(view)
    return out


def account_view(state: State, account: bytes, pending_nonce: int, block: int) -> dict[str, Any]:
    """Everything the state holds about one account, as of ``block`` (the head it was read at).

    ``nonce`` is the next nonce of the account's own key in the state; ``pendingNonce`` counts
    its transactions waiting in the mempool too (the nonce its next action must carry)."""
    return {
        "address": hex_bytes(account),
        "blockNumber": block,
        "nonce": state.nonces.get(account, 0),
        "pendingNonce": pending_nonce,
        "balances": balances_view(state, account),
        "positions": positions_view(state, account),
        "margin": margin_view(state, account),
        "openOrders": open_orders_view(state, account),
    }


# --------------------------------------------------------------------------- markets


def order_book_view(state: State, market_id: int, depth: int, block: int) -> dict[str, Any]:
    """Aggregated price levels of a market's book: up to ``depth`` levels a side, ``[price,
    total size]``, bids from the best (highest) down, asks from the best (lowest) up."""
    _market(state, market_id)
    if not 1 <= depth <= MAX_DEPTH:
        raise QueryError(f"depth must be 1 to {MAX_DEPTH}")
    bids, asks = state.books[market_id].depth(depth)
    return {
        "marketId": market_id,
        "blockNumber": block,
        "bids": [[price, size] for price, size in bids],
        "asks": [[price, size] for price, size in asks],
    }


def markets_view(state: State) -> list[dict[str, Any]]:
    """Every listed market with its parameters, dynamic fields and best prices."""
    out = []
    for market_id in sorted(state.markets):
        book = state.books[market_id]
        out.append(market_to_json(state.markets[market_id], book.best_bid(), book.best_ask()))
    return out


def assets_view(state: State) -> list[dict[str, Any]]:
    """Every asset TradeZone knows."""
    return [asset_to_json(state.assets[a]) for a in sorted(state.assets)]


# --------------------------------------------------------------------------- proofs


def decode_balance_leaf(value: bytes) -> tuple[int, int]:
    """``RLP([balance, reserved])`` (docs/interfaces.md) -> (balance, reserved); absent -> (0, 0)."""
    if not value:
        return 0, 0
    items = split_node(value)
    if len(items) < 2:
        raise ValueError("a balance leaf holds at least [balance, reserved]")
    return int.from_bytes(decode_string(items[0]), "big"), int.from_bytes(decode_string(items[1]), "big")


def balance_proofs(
    trie: ProvingTrie, header: Header, account: bytes, asset_ids: Sequence[int], batch: dict[str, Any] | None
) -> dict[str, Any]:
    """EIP-1186-shaped proofs of ``account``'s balance leaves at ``header``'s state root.

    For each asset: the trie key ``keccak256(0x01 ‖ account ‖ assetId)``, the leaf value
    (``RLP([balance, reserved])``, "0x" when absent), the decoded figures and the node list from
    the root to the leaf. Every proof is verified against the root before it is returned, so a
    node never serves a proof it cannot stand behind. ``batch`` names the committed batch whose
    root this is (None if the block is not a batch's last block)."""
    if len(asset_ids) > MAX_PROOF_ASSETS:
        raise QueryError(f"at most {MAX_PROOF_ASSETS} assets per proof")
    root = header.state_root
    entries = []
    for asset_id in asset_ids:
        key = balance_key(account, asset_id)
        proof = trie.prove(key, root)
        value = verify_proof(root, key, proof)
        balance, reserved = decode_balance_leaf(value)
        entries.append({
            "assetId": asset_id,
            "key": hex_bytes(key),
            "value": hex_bytes(value),
            "balance": str(balance),
            "reserved": str(reserved),
            "proof": [hex_bytes(node) for node in proof],
        })
    return {
        "address": hex_bytes(account),
        "blockNumber": header.number,
        "blockHash": hex_bytes(header_hash(header)),
        "stateRoot": hex_bytes(root),
        "batch": batch,
        "balances": entries,
    }


def touched_accounts(transactions: Iterable[Transaction], fills: Iterable[FillEvent]) -> set[bytes]:
    """Accounts a block's transactions and fills changed directly: the accounts transactions act
    for, transfer recipients, deposit recipients, forced-withdrawal accounts, makers and takers."""
    touched: set[bytes] = set()
    for tx in transactions:
        if isinstance(tx, SignedTx):
            touched.add(tx.account)
            if isinstance(tx.action, Transfer):
                touched.add(tx.action.to)
        elif isinstance(tx, DepositMessage):
            touched.add(tx.recipient)
        elif isinstance(tx, ForcedWithdrawalMessage):
            touched.add(tx.account)
    for fill in fills:
        touched.add(fill.maker)
        touched.add(fill.taker)
    return touched
