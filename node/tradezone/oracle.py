"""The oracle engine: mark prices from the market's designated oracle key.

Rules: only the market's oracle key may update it; the price must lie within the market's
price bounds; observation times must increase and may not be after the block's time (no wall
clock: the block header's time is the only clock). A jump beyond ``DEVIATION_THRESHOLD_PPM``
of the previous mark is accepted but counted in the market's ``deviation_events`` (recorded in
state as slashing evidence for governance).
"""

from __future__ import annotations

import msgspec

from node.tradezone.errors import InvalidAction, UnauthorizedSigner, UnknownMarket
from node.tradezone.state import MARKET_OUTCOME, PPM, TAG_MARKET, Market, State, set_entry, set_index

DEVIATION_THRESHOLD_PPM = 100_000  # a 10% move between two updates is recorded


def apply_oracle_update(
    state: State, signer: bytes, market_id: int, price: int, observed_ms: int, now_ms: int
) -> Market:
    """Set the market's mark price; returns the updated market. Raises UnknownMarket,
    UnauthorizedSigner or InvalidAction (outcome market, price out of bounds, stale or future
    observation)."""
    market = state.markets.get(market_id)
    if market is None:
        raise UnknownMarket(f"market {market_id} is not listed")
    if market.kind == MARKET_OUTCOME:
        raise InvalidAction("outcome markets are resolved, not priced by an oracle")
    if signer != market.oracle:
        raise UnauthorizedSigner(f"0x{signer.hex()} is not the oracle of market {market_id}")
    if not market.min_price <= price <= market.max_price:
        raise InvalidAction(f"oracle price {price} outside [{market.min_price}, {market.max_price}]")
    if observed_ms > now_ms:
        raise InvalidAction(f"oracle observation at {observed_ms} ms is after the block time {now_ms}")
    if observed_ms <= market.last_oracle_ms:
        raise InvalidAction(f"oracle observation at {observed_ms} ms is not newer than {market.last_oracle_ms}")
    deviations = market.deviation_events
    if market.mark_price and abs(price - market.mark_price) * PPM > DEVIATION_THRESHOLD_PPM * market.mark_price:
        deviations += 1
    updated = msgspec.structs.replace(
        market, mark_price=price, last_oracle_ms=observed_ms, deviation_events=deviations
    )
    set_entry(state, TAG_MARKET, state.markets, market_id, updated)
    set_index(state, state.marked, market_id, None)
    return updated
