"""The TradeZone genesis: assets, venues, markets and initial balances, from a JSON file.

``genesis/tradezone-devnet.json`` is the devnet's: OKB (0), USDT (1), WBTC (2) backed by the
bridge; a regular venue with BTC/USDT spot, BTC-PERP and ETH-PERP; and the simulated "2026 World
Cup Outcomes" venue whose markets trade YES/NO shares against WCP, a points asset with no
real-world value (ids from 1000, TradeZone only). The oracle and resolver key is devnet
account 8.

The genesis block is number 0 with a zero parent hash, the file's timestamp, L1 origin 0,
L1 cursor 0, empty transaction and receipt roots, and the state root of the loaded state.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from node.tradezone.blocks import ZERO_HASH, Header
from node.tradezone.merkle import EMPTY_MERKLE_ROOT
from node.tradezone.state import (
    MARKET_OUTCOME,
    MARKET_PERP,
    MARKET_SPOT,
    SYSTEM_KEY,
    TAG_ASSET,
    TAG_SYSTEM,
    TAG_VENUE,
    Asset,
    Market,
    State,
    TrieEngine,
    Venue,
    add_market,
    compute_state_root,
    set_balance,
    set_entry,
)
from node.tradezone.venues import check_market_params

DEVNET_GENESIS_PATH = Path(__file__).resolve().parents[2] / "genesis" / "tradezone-devnet.json"
NO_ASSET = 2**32 - 1

_KINDS = {"spot": MARKET_SPOT, "perp": MARKET_PERP, "outcome": MARKET_OUTCOME}


class GenesisError(ValueError):
    """The genesis description is malformed or breaks a protocol bound."""


def _address(value: str, what: str) -> bytes:
    raw = bytes.fromhex(value[2:] if value.startswith("0x") else value)
    if len(raw) != 20:
        raise GenesisError(f"{what}: expected a 20-byte address, got {value!r}")
    return raw


def _default_trie() -> TrieEngine:
    from proofs.engine import CommitEngine
    from proofs.store import MemoryStore

    return CommitEngine(MemoryStore())


def load_genesis_spec(path: str | Path = DEVNET_GENESIS_PATH) -> dict[str, Any]:
    """Read a genesis JSON file."""
    return json.loads(Path(path).read_text())  # type: ignore[no-any-return]


def build_genesis_state(
    spec: Mapping[str, Any],
    trie: TrieEngine | None = None,
    book_factory: Callable[[int], Any] | None = None,
) -> State:
    """Build the genesis state from a spec (the format of ``genesis/tradezone-devnet.json``) and
    commit it: the returned state's trie root is the genesis state root. Raises GenesisError."""
    state = State(trie=trie if trie is not None else _default_trie())
    if book_factory is not None:
        state.book_factory = book_factory
    try:
        for item in spec.get("assets", []):
            asset = Asset(int(item["asset_id"]), str(item["symbol"]), int(item["decimals"]), bool(item["l1_backed"]))
            if asset.asset_id in state.assets:
                raise GenesisError(f"asset {asset.asset_id} listed twice")
            set_entry(state, TAG_ASSET, state.assets, asset.asset_id, asset)
        for item in spec.get("venues", []):
            venue = Venue(
                int(item["venue_id"]), str(item["name"]), _address(item["deployer"], "deployer"),
                _address(item["fee_account"], "fee_account"),
                _address(item["insurance_account"], "insurance_account"),
                bool(item["simulated"]), int(item["max_leverage_cap"]),
            )
            if venue.venue_id in state.venues:
                raise GenesisError(f"venue {venue.venue_id} listed twice")
            set_entry(state, TAG_VENUE, state.venues, venue.venue_id, venue)
        zero = "0x" + "00" * 20
        for item in spec.get("markets", []):
            kind = _KINDS.get(item["kind"])
            if kind is None:
                raise GenesisError(f"market {item.get('market_id')}: unknown kind {item['kind']!r}")
            market = Market(
                market_id=int(item["market_id"]), venue_id=int(item["venue_id"]), kind=kind,
                symbol=str(item["symbol"]), base_asset=int(item["base_asset"]),
                quote_asset=int(item["quote_asset"]), lot_size=int(item["lot_size"]),
                tick_size=int(item["tick_size"]), min_price=int(item["min_price"]),
                max_price=int(item["max_price"]), maker_fee_ppm=int(item["maker_fee_ppm"]),
                taker_fee_ppm=int(item["taker_fee_ppm"]), max_leverage=int(item.get("max_leverage", 1)),
                oracle=_address(item.get("oracle", zero), "oracle"),
                resolver=_address(item.get("resolver", zero), "resolver"),
                no_asset=int(item.get("no_asset", NO_ASSET)), mark_price=int(item.get("mark_price", 0)),
                max_open_interest=int(item.get("max_open_interest", 0)),
                settle_variation_margin=bool(item.get("settle_variation_margin", False)),
            )
            _check_market(state, market)
            add_market(state, market)
        for item in spec.get("balances", []):
            account = _address(item["account"], "balance account")
            asset_id = int(item["asset_id"])
            if asset_id not in state.assets:
                raise GenesisError(f"balance in unknown asset {asset_id}")
            amount = int(item["amount"])
            if amount <= 0:
                raise GenesisError("genesis balances must be positive")
            balance, reserved = state.balances.get((account, asset_id), (0, 0))
            set_balance(state, account, asset_id, balance + amount, reserved)
    except (KeyError, TypeError) as err:
        raise GenesisError(f"malformed genesis: {err!r}") from err
    state.dirty[TAG_SYSTEM].add(SYSTEM_KEY)
    compute_state_root(state)
    return state


def _check_market(state: State, market: Market) -> None:
    if market.market_id in state.markets:
        raise GenesisError(f"market {market.market_id} listed twice")
    venue = state.venues.get(market.venue_id)
    if venue is None:
        raise GenesisError(f"market {market.market_id}: unknown venue {market.venue_id}")
    if market.quote_asset not in state.assets:
        raise GenesisError(f"market {market.market_id}: unknown quote asset {market.quote_asset}")
    if market.kind != MARKET_PERP and market.base_asset not in state.assets:
        raise GenesisError(f"market {market.market_id}: unknown base asset {market.base_asset}")
    if market.kind == MARKET_OUTCOME and market.no_asset not in state.assets:
        raise GenesisError(f"market {market.market_id}: unknown NO asset {market.no_asset}")
    if market.kind == MARKET_PERP and market.max_leverage > venue.max_leverage_cap:
        raise GenesisError(f"market {market.market_id}: leverage above the venue's cap")
    try:
        check_market_params(market)
    except ValueError as err:
        raise GenesisError(str(err)) from err


def genesis_header(state: State, spec: Mapping[str, Any]) -> Header:
    """The genesis block header over a freshly built genesis state: no transactions and no
    receipts, so both of those roots are ``EMPTY_MERKLE_ROOT``."""
    return Header(0, ZERO_HASH, int(spec.get("timestamp_ms", 0)), 0, 0, EMPTY_MERKLE_ROOT, EMPTY_MERKLE_ROOT,
                  state.trie.root)


def load_devnet() -> tuple[State, Header]:
    """The devnet genesis state and header."""
    spec = load_genesis_spec()
    state = build_genesis_state(spec)
    return state, genesis_header(state, spec)


def devnet_genesis_root() -> bytes:
    """The devnet's genesis state root (what the bridge starts from)."""
    return load_devnet()[0].trie.root
