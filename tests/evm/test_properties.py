"""Property tests: the JSON-RPC layer answers anything with JSON; database units behave like a
dict that commits whole or not at all."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.db import LevelDBStore
from node.evm.db import EvmDatabase
from node.jsonrpc import RpcServer, positional

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
requests = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]),
        "method": st.sampled_from(["echo", "nope", 5]),
        "params": json_values,
        "id": json_values,
    },
)


def make_server() -> RpcServer:
    server = RpcServer(max_batch=10)

    @server.method("echo")
    def echo(params: Any) -> Any:
        (value,) = positional(params, 1, 1)
        return value

    return server


@settings(max_examples=150, deadline=None)
@given(body=st.one_of(st.binary(max_size=64), requests.map(json.dumps), st.lists(requests, max_size=12).map(json.dumps)))
def test_every_body_gets_a_json_answer_or_no_content(body: bytes | str) -> None:
    raw = body.encode() if isinstance(body, str) else body
    answer = asyncio.run(make_server().handle_body(raw))
    if answer.body is None:
        assert answer.status == 204
        return
    decoded = json.loads(answer.body)
    items = decoded if isinstance(decoded, list) else [decoded]
    assert items
    for item in items:
        assert item["jsonrpc"] == "2.0" and "id" in item
        assert ("result" in item) != ("error" in item)
        if "error" in item:
            assert item["error"]["code"] in (-32700, -32600, -32601, -32602, -32603)


operations = st.lists(
    st.tuples(
        st.sampled_from(["set", "delete", "batch-set", "batch-delete"]),
        st.binary(min_size=1, max_size=2),
        st.binary(max_size=3),
    ),
    max_size=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(units=st.lists(st.tuples(operations, st.booleans()), min_size=1, max_size=5))
def test_units_commit_whole_or_not_at_all(tmp_path: Path, units: list[tuple[list[Any], bool]]) -> None:
    path = tmp_path / f"db{abs(hash(repr(units)))}"
    store = LevelDBStore(path, sync=False)
    db = EvmDatabase(store)
    model: dict[bytes, bytes] = {}
    try:
        for ops, fail in units:
            pending = dict(model)
            try:
                with db.unit():
                    for op, key, value in ops:
                        if op == "set":
                            db[key] = value
                            pending[key] = value
                        elif op == "delete" and key in pending:
                            del db[key]
                            del pending[key]
                        elif op == "batch-set":
                            with db.atomic_batch() as batch:
                                batch[key] = value
                            pending[key] = value
                        elif op == "batch-delete" and key in pending:
                            with db.atomic_batch() as batch:
                                del batch[key]
                            del pending[key]
                        for k, v in pending.items():
                            assert db[k] == v
                    if fail:
                        raise RuntimeError("abort")
                model = pending
            except RuntimeError:
                pass
        store.close()
        reopened = LevelDBStore(path, sync=False)
        assert dict(reopened.iterate_prefix(b"")) == model
        reopened.close()
    finally:
        store.close()
