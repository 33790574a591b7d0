"""The JSON-RPC 2.0 layer: error codes, batches, notifications, size limit, never a dropped
connection; served for real over aiohttp on a free port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from node.jsonrpc import InvalidParams, RpcServer, positional, start_site

Check = Callable[[aiohttp.ClientSession, str], Awaitable[None]]


def make_server() -> RpcServer:
    server = RpcServer(max_body_bytes=10_000, max_batch=5)

    @server.method("echo")
    def echo(params: Any) -> Any:
        (value,) = positional(params, 1, 1)
        return value

    @server.method("add")
    async def add(params: Any) -> int:
        a, b = positional(params, 2, 2)
        if not isinstance(a, int) or not isinstance(b, int):
            raise InvalidParams("add takes two integers")
        return a + b

    @server.method("unencodable")
    def unencodable(params: Any) -> Any:
        return {"value": object()}

    @server.method("boom")
    def boom(params: Any) -> None:
        raise RuntimeError("secret internal detail")

    return server


def serve(check: Check) -> None:
    async def main() -> None:
        runner, port = await start_site(make_server().make_app(), "127.0.0.1", 0)
        try:
            async with aiohttp.ClientSession() as session:
                await check(session, f"http://127.0.0.1:{port}/")
        finally:
            await runner.cleanup()

    asyncio.run(main())


async def post(session: aiohttp.ClientSession, url: str, body: bytes | str) -> tuple[int, Any]:
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text else None)


def request(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    out: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        out["params"] = params
    return out


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ("{not json", -32700),
        ("", -32700),
        ("5", -32600),
        ("[]", -32600),
        (json.dumps({"method": "echo", "params": [1], "id": 1}), -32600),
        (json.dumps({"jsonrpc": "2.0", "method": 5, "id": 1}), -32600),
        (json.dumps({"jsonrpc": "2.0", "method": "echo", "params": 5, "id": 1}), -32600),
        (json.dumps({"jsonrpc": "2.0", "method": "echo", "params": [1], "id": True}), -32600),
        (json.dumps(request("nope")), -32601),
        (json.dumps(request("echo", [])), -32602),
        (json.dumps(request("add", ["1", 2])), -32602),
        (json.dumps(request("echo", {"value": 1})), -32602),
        (json.dumps([request("echo", [i], i) for i in range(6)]), -32600),
    ],
)
def test_malformed_requests_get_the_standard_error_code(body: str, code: int) -> None:
    async def check(session: aiohttp.ClientSession, url: str) -> None:
        status, answer = await post(session, url, body)
        assert status == 200
        assert answer["jsonrpc"] == "2.0" and answer["error"]["code"] == code

    serve(check)


def test_internal_error_is_logged_not_leaked(caplog: pytest.LogCaptureFixture) -> None:
    async def check(session: aiohttp.ClientSession, url: str) -> None:
        status, answer = await post(session, url, json.dumps(request("boom", [], "x")))
        assert status == 200 and answer["id"] == "x"
        assert answer["error"] == {"code": -32603, "message": "internal error"}
        assert "secret" not in json.dumps(answer)

    serve(check)
    assert "secret internal detail" in caplog.text


def test_batch_answers_in_order_and_leaves_out_notifications() -> None:
    async def check(session: aiohttp.ClientSession, url: str) -> None:
        batch = [
            request("echo", ["a"], 1),
            {"jsonrpc": "2.0", "method": "echo", "params": ["note"]},
            request("nope", [], 2),
            request("add", [2, 3], 3),
            7,
        ]
        status, answer = await post(session, url, json.dumps(batch))
        assert status == 200
        assert [a.get("id") for a in answer] == [1, 2, 3, None]
        assert answer[0]["result"] == "a" and answer[2]["result"] == 5
        assert answer[1]["error"]["code"] == -32601 and answer[3]["error"]["code"] == -32600

    serve(check)


def test_notifications_alone_get_no_content() -> None:
    async def check(session: aiohttp.ClientSession, url: str) -> None:
        note = {"jsonrpc": "2.0", "method": "echo", "params": [1]}
        assert (await post(session, url, json.dumps(note)))[0] == 204
        assert (await post(session, url, json.dumps([note, note])))[0] == 204

    serve(check)


def test_oversized_body_is_answered_and_the_server_keeps_serving() -> None:
    async def check(session: aiohttp.ClientSession, url: str) -> None:
        big = json.dumps(request("echo", ["x" * 20_000]))
        status, answer = await post(session, url, big)
        assert status == 413 and answer["error"]["code"] == -32600
        assert "larger than 10000 bytes" in answer["error"]["message"]
        status, answer = await post(session, url, json.dumps(request("echo", ["still here"])))
        assert status == 200 and answer["result"] == "still here"

    serve(check)


def test_get_is_refused_with_a_json_answer() -> None:
    async def check(session: aiohttp.ClientSession, url: str) -> None:
        async with session.get(url) as r:
            assert r.status == 405
            assert (await r.json())["error"]["code"] == -32600

    serve(check)


def test_a_result_that_cannot_be_encoded_is_an_internal_error_of_its_own_request() -> None:
    async def check(session: aiohttp.ClientSession, url: str) -> None:
        status, answer = await post(session, url, json.dumps([request("unencodable", [], 1), request("echo", [2], 2)]))
        assert status == 200
        assert answer[0]["error"]["code"] == -32603 and answer[1]["result"] == 2
        status, answer = await post(session, url, json.dumps(request("unencodable", [], 3)))
        assert status == 200 and answer["error"]["code"] == -32603 and answer["id"] == 3

    serve(check)
