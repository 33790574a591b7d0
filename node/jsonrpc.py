"""A reusable JSON-RPC 2.0 layer for aiohttp (the eth_* server on 8545, the tz_* server on 8546).

`RpcServer` holds a method table. `RpcServer.handle_body(bytes)` turns one HTTP body into one
HTTP answer, following the JSON-RPC 2.0 specification:

- single requests, batches (answered in order, notifications left out), notifications;
- -32700 parse error, -32600 invalid request (also: empty batch, batch or body too large),
  -32601 method not found, -32602 invalid params, -32603 internal error (the exception is
  logged with its stack; the client sees only "internal error");
- an exception a handler raises is mapped by the registered error mappers (for example
  "execution reverted" -> code 3 with the revert data), else it is an internal error.

Every request gets an answer with a JSON body; nothing a client sends makes the server drop the
connection. Handlers are thin: they receive the raw `params` (a list or an object), decode them
(raise `InvalidParams` on bad input), call one core function, and return a JSON-ready value.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

log = logging.getLogger(__name__)

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
SERVER_ERROR = -32000  # implementation-defined server errors: -32000 to -32099
EXECUTION_REVERTED = 3  # the code geth and other clients use for a reverted eth_call

LIMIT_EXCEEDED = -32005  # EIP-1474: request exceeds a defined limit

DEFAULT_MAX_BODY_BYTES = 5 * 1024 * 1024
DEFAULT_MAX_BATCH = 1000

Params = list[Any] | dict[str, Any]

# The address of the client whose request is being handled (set by the HTTP handler and by
# WebSocket servers for each connection): handlers that limit clients read it.
client_address: contextvars.ContextVar[str] = contextvars.ContextVar("rpc_client_address", default="")
Handler = Callable[[Params], Any] | Callable[[Params], Awaitable[Any]]

_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
}


class RpcError(Exception):
    """An error answered to the client as-is: `code`, `message` and optional `data`."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


class InvalidParams(RpcError):
    """The params of a request do not fit its method."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(INVALID_PARAMS, f"invalid params: {message}", data)


class InvalidRequest(RpcError):
    def __init__(self, message: str) -> None:
        super().__init__(INVALID_REQUEST, f"invalid request: {message}")


class MethodNotFound(RpcError):
    def __init__(self, method: str) -> None:
        super().__init__(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")


ErrorMapper = Callable[[Exception], RpcError | None]


@dataclass(frozen=True)
class HttpAnswer:
    """What to send back: an HTTP status and a JSON body (None: no content)."""

    status: int
    body: bytes | None


def positional(params: Params, minimum: int, maximum: int) -> list[Any]:
    """Return `params` as a list of exactly `maximum` items, missing optional ones as None.

    Raises InvalidParams unless `params` is a list with between `minimum` and `maximum` items.
    """
    if not isinstance(params, list):
        raise InvalidParams("expected a list of positional params")
    if not minimum <= len(params) <= maximum:
        expected = str(minimum) if minimum == maximum else f"{minimum} to {maximum}"
        raise InvalidParams(f"expected {expected} params, got {len(params)}")
    return list(params) + [None] * (maximum - len(params))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def decode_bytes(value: Any, what: str, length: int | None = None, max_length: int | None = None) -> bytes:
    """0x-prefixed hex (of exactly ``length`` bytes, or at most ``max_length``) -> bytes; raises
    InvalidParams naming ``what`` otherwise. Shared by the eth_* and tz_* servers."""
    if not isinstance(value, str) or value[:2] not in ("0x", "0X"):
        raise InvalidParams(f"{what} must be 0x-prefixed hex, got {_short(value)}")
    if max_length is not None and len(value) > 2 + 2 * max_length:
        raise InvalidParams(f"{what} is longer than {max_length} bytes")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError as exc:
        raise InvalidParams(f"{what} is not valid hex") from exc
    if length is not None and len(data) != length:
        raise InvalidParams(f"{what} must be {length} bytes, got {len(data)}")
    return data


def decode_address(value: Any, what: str = "address") -> bytes:
    return decode_bytes(value, what, 20)


def decode_hash(value: Any, what: str = "hash") -> bytes:
    return decode_bytes(value, what, 32)


class RpcServer:
    """A JSON-RPC 2.0 method table served over aiohttp."""

    def __init__(
        self,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_batch: int = DEFAULT_MAX_BATCH,
        name: str = "jsonrpc",
    ) -> None:
        self.methods: dict[str, Handler] = {}
        self.error_mappers: list[ErrorMapper] = []
        self.max_body_bytes = max_body_bytes
        self.max_batch = max_batch
        self.name = name

    def register(self, name: str, handler: Handler) -> None:
        """Serve `handler` as method `name` (replacing any previous one)."""
        self.methods[name] = handler

    def method(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator form of `register`."""

        def decorate(handler: Handler) -> Handler:
            self.register(name, handler)
            return handler

        return decorate

    def add_error_mapper(self, mapper: ErrorMapper) -> None:
        """`mapper(exc)` returns the RpcError to answer for a handler exception, or None to
        let later mappers (and finally "internal error") decide."""
        self.error_mappers.append(mapper)

    # -- dispatch -----------------------------------------------------------------------------

    async def handle_body(self, body: bytes) -> HttpAnswer:
        """Answer one HTTP body (a request or a batch). Never raises."""
        try:
            message = msgspec.json.decode(body)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return _answer(_error_response(None, RpcError(PARSE_ERROR, "parse error")))
        if isinstance(message, list):
            if not message:
                return _answer(_error_response(None, InvalidRequest("empty batch")))
            if len(message) > self.max_batch:
                return _answer(
                    _error_response(None, InvalidRequest(f"batch longer than {self.max_batch}"))
                )
            responses = [r for r in [await self.handle_request(item) for item in message] if r is not None]
            return self._answer(responses) if responses else HttpAnswer(204, None)
        response = await self.handle_request(message)
        return self._answer(response) if response is not None else HttpAnswer(204, None)

    def _answer(self, payload: dict[str, Any] | list[dict[str, Any]]) -> HttpAnswer:
        """Encode responses; a result that cannot be encoded becomes an internal error of its
        own request (logged), never a failed HTTP answer."""
        try:
            return _answer(payload)
        except (TypeError, ValueError, msgspec.EncodeError):
            items = payload if isinstance(payload, list) else [payload]
            safe = []
            for item in items:
                try:
                    msgspec.json.encode(item)
                    safe.append(item)
                except (TypeError, ValueError, msgspec.EncodeError):
                    log.exception("%s: cannot encode the result of request id %r", self.name, item.get("id"))
                    safe.append(_error_response(item.get("id"), RpcError(INTERNAL_ERROR, "internal error")))
            return _answer(safe if isinstance(payload, list) else safe[0])

    async def handle_request(self, request: Any) -> dict[str, Any] | None:
        """Answer one decoded request object; None for a valid notification. Never raises."""
        if not isinstance(request, dict):
            return _error_response(None, InvalidRequest("a request is a JSON object"))
        is_notification = "id" not in request
        request_id = request.get("id")
        if not _valid_id(request_id):
            return _error_response(None, InvalidRequest("id must be a string, a number or null"))
        if request.get("jsonrpc") != "2.0":
            return _error_response(request_id, InvalidRequest('"jsonrpc" must be "2.0"'))
        method = request.get("method")
        if not isinstance(method, str):
            return _error_response(request_id, InvalidRequest('"method" must be a string'))
        params = request.get("params", [])
        if not isinstance(params, list | dict):
            return _error_response(request_id, InvalidRequest('"params" must be an array or an object'))
        try:
            result = await self.call(method, params)
        except Exception as exc:  # every failure becomes an error response
            error = self._to_rpc_error(method, exc)
            return None if is_notification else _error_response(request_id, error)
        if is_notification:
            return None
        return {"jsonrpc": "2.0", "id": request_id, "result": result}

    async def call(self, method: str, params: Params) -> Any:
        """Run a method's handler directly (raises what the handler raises)."""
        handler = self.methods.get(method)
        if handler is None:
            raise MethodNotFound(method)
        result = handler(params)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _to_rpc_error(self, method: str, exc: Exception) -> RpcError:
        if isinstance(exc, RpcError):
            return exc
        for mapper in self.error_mappers:
            mapped = mapper(exc)
            if mapped is not None:
                return mapped
        log.exception("%s: internal error in %s", self.name, method, exc_info=exc)
        return RpcError(INTERNAL_ERROR, "internal error")

    # -- aiohttp --------------------------------------------------------------------------------

    async def http_handler(self, request: web.Request) -> web.StreamResponse:
        """aiohttp handler: POST a JSON-RPC body, get its answer (CORS allowed)."""
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=_CORS_HEADERS)
        if request.method != "POST":
            return _http(HttpAnswer(405, msgspec.json.encode(
                _error_response(None, InvalidRequest("JSON-RPC requests are POSTed")))))
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return _http(self._too_large())
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > self.max_body_bytes:
                return _http(self._too_large())
            chunks.append(chunk)
        client_address.set(request.remote or "")
        return _http(await self.handle_body(b"".join(chunks)))

    def _too_large(self) -> HttpAnswer:
        error = InvalidRequest(f"request body larger than {self.max_body_bytes} bytes")
        return HttpAnswer(413, msgspec.json.encode(_error_response(None, error)))

    def make_app(self, path: str = "/") -> web.Application:
        """An aiohttp application serving this table at `path`."""
        app = web.Application(client_max_size=self.max_body_bytes + 1024)
        app.router.add_route("*", path, self.http_handler)
        return app


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, int | float | str) and not isinstance(value, bool))


def _error_response(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def _answer(payload: Any) -> HttpAnswer:
    return HttpAnswer(200, msgspec.json.encode(payload))


def _http(answer: HttpAnswer) -> web.Response:
    if answer.body is None:
        return web.Response(status=answer.status, headers=_CORS_HEADERS)
    return web.Response(
        status=answer.status, body=answer.body, content_type="application/json", headers=_CORS_HEADERS
    )


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve `app` on host:port (port 0 picks a free one); return the runner and the bound port.

    Stop with `await runner.cleanup()`.
    """
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:  # (host, port, ...) of each listening socket
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound
