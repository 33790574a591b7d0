"""Decoding of tz_* params and the JSON shapes of TradeZone objects.

Conventions (docs/rpc.md): hashes, addresses, raw transactions and proof nodes are 0x-hex;
block numbers, indexes, ids, prices (ticks) and sizes (lots) are JSON numbers; amounts of an
asset (balances, reserved, margin, PnL, costs) are decimal strings, because they may exceed
2**53 and JSON numbers are not exact beyond it in most clients. Decoders raise ``InvalidParams``
(-32602) with a message that names the parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from node.jsonrpc import InvalidParams, decode_hash
from node.sequencer.chainstore import BatchRecord
from node.tradezone.blocks import Block, Header, header_hash
from node.tradezone.state import Asset, Market
from node.tradezone.transactions import transaction_to_json, tx_hash

BLOCK_TAGS = ("latest", "pending", "safe", "finalized", "earliest")
BlockRef = int | str | bytes  # a number, a tag, or a 32-byte block hash


def hex_bytes(value: bytes) -> str:
    """0x-hex of a byte string."""
    return "0x" + value.hex()


def decode_int(value: Any, what: str, bits: int = 64) -> int:
    """A non-negative integer below 2**bits: a JSON number, a decimal string or a 0x-hex string."""
    if isinstance(value, bool):
        raise InvalidParams(f"{what} must be an integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value[:2] in ("0x", "0X") and len(value) > 2:
        try:
            number = int(value[2:], 16)
        except ValueError as exc:
            raise InvalidParams(f"{what} is not a hex number: {value!r}") from exc
    elif isinstance(value, str) and value.isdecimal() and value.isascii():
        number = int(value)
    else:
        raise InvalidParams(f"{what} must be an integer, got {value!r}")
    if number < 0 or number.bit_length() > bits:
        raise InvalidParams(f"{what} must be an unsigned {bits}-bit integer, got {number}")
    return number


def decode_block_ref(value: Any, default: str = "latest") -> BlockRef:
    """A block tag, a block number, or a 32-byte block hash."""
    if value is None:
        return default
    if isinstance(value, str) and value in BLOCK_TAGS:
        return value
    if isinstance(value, str) and len(value) == 66 and value[:2] in ("0x", "0X"):
        return decode_hash(value, "block hash")
    return decode_int(value, "block number")


def decode_bool(value: Any, what: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidParams(f"{what} must be true or false, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- encoders


def header_to_json(header: Header) -> dict[str, Any]:
    """A header with its hash."""
    return {
        "number": header.number,
        "hash": hex_bytes(header_hash(header)),
        "parentHash": hex_bytes(header.parent_hash),
        "timestampMs": header.timestamp_ms,
        "l1Origin": header.l1_origin,
        "l1Cursor": header.l1_cursor,
        "transactionsRoot": hex_bytes(header.transactions_root),
        "receiptsRoot": hex_bytes(header.receipts_root),
        "stateRoot": hex_bytes(header.state_root),
    }


def block_to_json(block: Block, full: bool) -> dict[str, Any]:
    """A block: its header fields, and its transactions as hashes or (``full``) JSON views."""
    if not full:
        return block_hashes_to_json(block.header, map(tx_hash, block.transactions))
    view = header_to_json(block.header)
    view["transactions"] = [transaction_to_json(tx) for tx in block.transactions]
    return view


def block_hashes_to_json(header: Header, hashes: Iterable[bytes]) -> dict[str, Any]:
    """A block without its full transactions: its header fields and its transactions' hashes."""
    view = header_to_json(header)
    view["transactions"] = [hex_bytes(hash_) for hash_ in hashes]
    return view


def asset_to_json(asset: Asset) -> dict[str, Any]:
    return {"assetId": asset.asset_id, "symbol": asset.symbol, "decimals": asset.decimals, "l1Backed": asset.l1_backed}


MARKET_KINDS = ("spot", "perp", "outcome")
RESOLUTIONS = ("unresolved", "yes", "no")


def market_to_json(market: Market, best_bid: int | None, best_ask: int | None) -> dict[str, Any]:
    """A market's parameters, its dynamic fields and its best prices."""
    return {
        "marketId": market.market_id,
        "venueId": market.venue_id,
        "kind": MARKET_KINDS[market.kind],
        "symbol": market.symbol,
        "baseAsset": market.base_asset,
        "quoteAsset": market.quote_asset,
        "noAsset": market.no_asset,
        "lotSize": str(market.lot_size),
        "tickSize": str(market.tick_size),
        "minPrice": market.min_price,
        "maxPrice": market.max_price,
        "makerFeePpm": market.maker_fee_ppm,
        "takerFeePpm": market.taker_fee_ppm,
        "maxLeverage": market.max_leverage,
        "oracle": hex_bytes(market.oracle),
        "resolver": hex_bytes(market.resolver),
        "markPrice": market.mark_price,
        "fundingIndex": str(market.funding_index),
        "openInterest": market.open_interest,
        "resolution": RESOLUTIONS[market.resolution] if 0 <= market.resolution < 3 else market.resolution,
        "lastOracleMs": market.last_oracle_ms,
        "deviationEvents": market.deviation_events,
        "bestBid": best_bid,
        "bestAsk": best_ask,
    }


def batch_to_json(record: BatchRecord, status: str) -> dict[str, Any]:
    """A batch posted to the bridge; ``status`` is inFlight, committed or finalized."""
    return {
        "index": record.index,
        "status": status,
        "firstBlock": record.first_block,
        "lastBlock": record.last_block,
        "stateRoot": hex_bytes(record.state_root),
        "l1Cursor": record.l1_cursor,
        "l1TransactionHash": hex_bytes(record.tx_hash) if record.tx_hash else None,
        "l1Block": record.l1_block or None,
        "dataSize": record.data_size,
        "withdrawals": record.withdrawals,
    }
