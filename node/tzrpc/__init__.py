"""The TradeZone JSON-RPC server (tz_*, port 8546) with WebSocket subscriptions; see docs/rpc.md."""

from node.tzrpc.server import (
    INCLUSION_TIMEOUT,
    NEEDS_WEBSOCKET,
    STATE_UNAVAILABLE,
    TX_REJECTED,
    TzRpc,
    TzRpcConfig,
)

__all__ = ["INCLUSION_TIMEOUT", "NEEDS_WEBSOCKET", "STATE_UNAVAILABLE", "TX_REJECTED", "TzRpc", "TzRpcConfig"]
