"""The light client against a real node (embedded EVM chain with the bridge, sequencer, batcher,
TradeZone RPC) and against a lying TradeZone node that rewrites the real node's answers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
import rlp
from aiohttp import web

from node.cli import main as exos_main
from node.config import BRIDGE_ADDRESS
from node.sdk import L1Bridge, TradeZoneClient
from node.tradezone.signing import Signer
from proofs.engine import CommitEngine
from proofs.lightclient import (
    BalanceEncodingError,
    ClaimMismatchError,
    InvalidBalanceProofError,
    ResponseShapeError,
    RpcError,
    UnanchoredProofError,
    balance_key,
    check_balance_answer,
    decode_balance_value,
    main,
    read_committed_state,
    verify_balance,
)
from proofs.store import MemoryStore
from tests.tzrpc.conftest import ACCOUNTS, USDT, Node

CAROL_KEY = ACCOUNTS[7].private_key
CAROL = Signer(CAROL_KEY).address
DAVE_KEY = ACCOUNTS[6].private_key
DAVE = Signer(DAVE_KEY).address
DEPOSIT = 25_000_000
WBTC = 2


def _wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _usdt(client: TradeZoneClient) -> int:
    account = client.get_account()
    return next((int(b["balance"]) for b in account["balances"] if b["assetId"] == USDT), 0)


class Liar:
    """A TradeZone RPC that forwards to the real node and rewrites tz_getProof answers."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.rewrite: Callable[[dict[str, Any], list[Any]], dict[str, Any]] = lambda result, params: result
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        async with aiohttp.ClientSession() as session:
            async with session.post(self.node.url, json=body) as response:
                answer = await response.json()
        if body.get("method") == "tz_getProof" and "result" in answer:
            answer["result"] = self.rewrite(answer["result"], body["params"])
        return web.json_response(answer)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    running = Node(tmp_path_factory.mktemp("lightclient")).start()
    carol = TradeZoneClient(running.url, Signer(CAROL_KEY))
    L1Bridge(running.eth_url, CAROL_KEY).deposit(USDT, DEPOSIT)
    _wait_until(lambda: _usdt(carol) >= DEPOSIT)
    _wait_until(lambda: running.step_batcher() or running.sequencer.store.head(b"safe") == running.sequencer.head.number)
    yield running
    running.stop()


@pytest.fixture
def liar(node: Node) -> Iterator[Liar]:
    server = Liar(node)
    node.run(server.start())
    yield server
    node.run(server.stop())


def test_an_honest_node_yields_the_deposit_anchored_to_the_last_batch(node: Node) -> None:
    committed = read_committed_state(node.eth_url, BRIDGE_ADDRESS)
    assert committed.root == L1Bridge(node.eth_url, CAROL_KEY).last_committed_root()
    assert committed.batch is not None and committed.batch.state_root == committed.root
    proven = verify_balance(node.eth_url, BRIDGE_ADDRESS, node.url, CAROL, USDT)
    assert proven.balance == DEPOSIT and proven.reserved == 0 and proven.free == DEPOSIT
    assert proven.state_root == committed.root and proven.batch == committed.batch and not proven.frozen
    absent = verify_balance(node.eth_url, BRIDGE_ADDRESS, node.url, CAROL, WBTC)
    assert (absent.balance, absent.value) == (0, b"")


def test_the_cli_prints_the_proven_balance_and_its_batch(node: Node, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--l1-rpc", node.eth_url, "--bridge", "0x" + BRIDGE_ADDRESS.hex(), "--tz-rpc", node.url,
            "--account", "0x" + CAROL.hex(), "--asset", "USDT"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"balance     {DEPOSIT} (reserved 0, free {DEPOSIT})" in out and "anchored to batch" in out
    assert main([*argv, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["balance"] == str(DEPOSIT) and shown["batch"]["index"] >= 0
    assert exos_main(["verify-proof", *argv]) == 0  # the node's `exos` CLI delegates to the light client
    assert f"balance     {DEPOSIT}" in capsys.readouterr().out


def test_the_lying_server_passes_honest_answers_through_unchanged(node: Node, liar: Liar) -> None:
    proven = verify_balance(node.eth_url, BRIDGE_ADDRESS, liar.url, CAROL, USDT)
    assert proven.balance == DEPOSIT  # so every refusal below comes from the rewrite alone


def _tamper_leaf(result: dict[str, Any], params: list[Any]) -> dict[str, Any]:
    entry = result["balances"][0]
    leaf = bytearray.fromhex(entry["proof"][-1][2:])
    leaf[-1] ^= 0x01
    entry["proof"][-1] = "0x" + leaf.hex()
    return result


def _inflate_claim(result: dict[str, Any], params: list[Any]) -> dict[str, Any]:
    entry = result["balances"][0]
    entry["value"] = "0x" + rlp.encode([10**12, 0]).hex()
    entry["balance"] = str(10**12)
    return result


def _forged_trie(claim_committed_root: bool) -> Callable[[dict[str, Any], list[Any]], dict[str, Any]]:
    def rewrite(result: dict[str, Any], params: list[Any]) -> dict[str, Any]:
        engine = CommitEngine(MemoryStore())
        key = balance_key(CAROL, USDT)
        engine.commit({key: rlp.encode([10**12, 0]), balance_key(DAVE, USDT): rlp.encode([1, 0])})
        entry = result["balances"][0]
        entry["value"] = "0x" + rlp.encode([10**12, 0]).hex()
        entry["balance"] = str(10**12)
        entry["proof"] = ["0x" + node.hex() for node in engine.prove(key)]
        if not claim_committed_root:
            result["stateRoot"] = "0x" + engine.root.hex()
        return result

    return rewrite


def _drop_last_node(result: dict[str, Any], params: list[Any]) -> dict[str, Any]:
    result["balances"][0]["proof"].pop()
    return result


def _no_entries(result: dict[str, Any], params: list[Any]) -> dict[str, Any]:
    result["balances"] = []
    return result


@pytest.mark.parametrize(
    ("rewrite", "error"),
    [
        (_tamper_leaf, InvalidBalanceProofError),
        (_inflate_claim, ClaimMismatchError),
        (_forged_trie(claim_committed_root=False), UnanchoredProofError),
        (_forged_trie(claim_committed_root=True), InvalidBalanceProofError),
        (_drop_last_node, InvalidBalanceProofError),
        (_no_entries, ResponseShapeError),
    ],
    ids=["tampered-node", "inflated-claim", "forged-trie", "forged-trie-on-committed-root", "truncated", "no-entry"],
)
def test_a_lying_node_is_refused(node: Node, liar: Liar, rewrite: Any, error: type[Exception],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    liar.rewrite = rewrite
    with pytest.raises(error):
        verify_balance(node.eth_url, BRIDGE_ADDRESS, liar.url, CAROL, USDT)
    argv = ["--l1-rpc", node.eth_url, "--bridge", "0x" + BRIDGE_ADDRESS.hex(), "--tz-rpc", liar.url,
            "--account", "0x" + CAROL.hex(), "--asset", "1"]
    assert main(argv) == 1
    assert "NOT VERIFIED" in capsys.readouterr().err


def test_another_accounts_proof_is_refused(node: Node, liar: Liar) -> None:
    honest_other = TradeZoneClient(node.url).get_proof([USDT], address=DAVE, block="safe")

    def swap(result: dict[str, Any], params: list[Any]) -> dict[str, Any]:
        entry = dict(honest_other["balances"][0])
        del entry["key"]  # pretend it is Carol's leaf
        result["balances"] = [entry]
        return result

    liar.rewrite = swap
    with pytest.raises((InvalidBalanceProofError, ClaimMismatchError)):
        verify_balance(node.eth_url, BRIDGE_ADDRESS, liar.url, CAROL, USDT)


def test_a_balance_that_is_not_in_the_committed_state_is_refused(node: Node, liar: Liar) -> None:
    dave = TradeZoneClient(node.url, Signer(DAVE_KEY))
    before = _usdt(dave)
    L1Bridge(node.eth_url, DAVE_KEY).deposit(USDT, 7_000_000)
    _wait_until(lambda: _usdt(dave) >= before + 7_000_000)  # in TradeZone, in no committed batch

    latest = TradeZoneClient(node.url).get_proof([USDT], address=DAVE, block="latest")
    assert int(latest["balances"][0]["balance"]) == before + 7_000_000  # honestly proven, at latest
    liar.rewrite = lambda result, params: latest
    with pytest.raises(UnanchoredProofError):
        verify_balance(node.eth_url, BRIDGE_ADDRESS, liar.url, DAVE, USDT)
    assert verify_balance(node.eth_url, BRIDGE_ADDRESS, node.url, DAVE, USDT).balance == before


def test_an_unreachable_chain_is_an_rpc_error(node: Node) -> None:
    with pytest.raises(RpcError):
        verify_balance("http://127.0.0.1:9", BRIDGE_ADDRESS, node.url, CAROL, USDT, timeout=2.0)


def test_answers_are_checked_field_by_field_without_a_network() -> None:
    engine = CommitEngine(MemoryStore())
    key = balance_key(CAROL, USDT)
    root = engine.commit({key: rlp.encode([500, 20]), balance_key(DAVE, USDT): rlp.encode([9, 0])})
    answer = {"address": "0x" + CAROL.hex(), "stateRoot": "0x" + root.hex(), "balances": [
        {"assetId": USDT, "key": "0x" + key.hex(), "value": "0x" + rlp.encode([500, 20]).hex(),
         "balance": "500", "reserved": "20", "proof": ["0x" + n.hex() for n in engine.prove(key)]}]}
    assert check_balance_answer(answer, root, CAROL, USDT) == (rlp.encode([500, 20]), 500, 20)
    renamed = {**answer, "assets": answer["balances"]}
    del renamed["balances"]
    assert check_balance_answer(renamed, root, CAROL, USDT)[1] == 500
    with pytest.raises(ClaimMismatchError):
        check_balance_answer({**answer, "address": "0x" + DAVE.hex()}, root, CAROL, USDT)
    wrong_reserved = json.loads(json.dumps(answer))
    wrong_reserved["balances"][0]["reserved"] = "0"
    with pytest.raises(ClaimMismatchError):
        check_balance_answer(wrong_reserved, root, CAROL, USDT)
    with pytest.raises(ResponseShapeError):
        check_balance_answer({**answer, "stateRoot": "0x1234"}, root, CAROL, USDT)
    odd = CommitEngine(MemoryStore())
    odd_root = odd.commit({key: rlp.encode([b"\x00\x05", 0])})
    odd_answer = {"stateRoot": "0x" + odd_root.hex(), "balances": [
        {"assetId": USDT, "proof": ["0x" + n.hex() for n in odd.prove(key)]}]}
    with pytest.raises(BalanceEncodingError):
        check_balance_answer(odd_answer, odd_root, CAROL, USDT)
    assert decode_balance_value(b"") == (0, 0)
