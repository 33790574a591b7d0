"""Proofs from a TradeZone node: a real node (embedded EVM chain, sequencer, tz_* RPC over real
sockets) whose batcher stops committing while the sequencer keeps running, so the bridge
freezes with a live TradeZone node that is ahead of the committed root. `exos escape withdraw
--tz-rpc URL` asks that node for the proof at the last committed batch's block, checks it
against the bridge's root and pays the committed balance, not the node's newer one."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import dev_accounts
from node.sdk import L1Bridge, TradeZoneClient
from node.tradezone.signing import Signer
from tests.tzrpc.conftest import Node

pytestmark = pytest.mark.slow

EXOS = [sys.executable, "-m", "node.cli"]  # the `exos` command
USDT = 1
ALICE, DAVE = dev_accounts()[5], dev_accounts()[4]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    running = Node(tmp_path / "node").start()
    yield running
    running.stop()


def escape(node: Node, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXOS, "escape", *args, "--l1-rpc", node.eth_url], capture_output=True, text=True,
                          timeout=120)


def wait_until(what: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_withdraw_with_a_proof_from_a_live_tradezone_node_pays_the_committed_balance(
        node: Node, tmp_path: Path) -> None:
    wallet = L1Bridge(node.eth_url, ALICE.private_key)
    tz = TradeZoneClient(node.url, Signer(ALICE.private_key))
    wallet.deposit(USDT, 4_000_000)
    wait_until("the deposit", lambda: int(tz.get_proof([USDT])["balances"][0]["balance"]) == 4_000_000)
    assert node.step_batcher()
    committed_root = wallet.last_committed_root()
    # the batcher stops; the sequencer applies the forced withdrawal but no batch commits it
    out = escape(node, "request", "--key", ALICE.private_key.hex(), "--asset", "USDT")
    assert out.returncode == 0, out.stderr
    wait_until("the forced withdrawal applied in TradeZone",
               lambda: int(tz.get_proof([USDT])["balances"][0]["balance"]) == 0)
    wait_until("the freeze", lambda: escape(node, "freeze", "--key", DAVE.private_key.hex()).returncode == 0)
    assert wallet.last_committed_root() == committed_root

    proof_file = tmp_path / "alice.json"
    out = escape(node, "prove", "--account", "0x" + ALICE.address.hex(), "--asset", "USDT", "--out",
                 str(proof_file), "--tz-rpc", node.url)
    assert out.returncode == 0 and "balance 4000000" in out.stdout, out.stderr
    before = wallet.token_balance(USDT)
    out = escape(node, "withdraw", "--key", ALICE.private_key.hex(), "--asset", "USDT", "--tz-rpc", node.url)
    assert out.returncode == 0, out.stderr
    assert "escaped 4000000 of asset 1" in out.stdout
    assert wallet.token_balance(USDT) == before + 4_000_000
    # an unreachable node is a clear refusal, not a traceback
    out = escape(node, "prove", "--account", "0x" + ALICE.address.hex(), "--asset", "USDT", "--out",
                 str(proof_file), "--tz-rpc", "http://127.0.0.1:9")
    assert out.returncode == 1 and "cannot reach the TradeZone node" in out.stderr, out.stderr
