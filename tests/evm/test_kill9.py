"""kill -9 at any moment loses no mined block and leaves no half-written one.

Starts `exos devnet` as a real process, streams transactions into it, SIGKILLs it at several
moments (some while it mines a large block), restarts it on the same data directory and checks
that every block it reported before the kill is there with the same hash, that the chain links
up, that every mined transaction has its receipt, and that state at every block matches the
transactions mined up to it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from node.config import L1_CHAIN_ID
from tests.evm.conftest import FUNDED_KEYS, sign

pytestmark = pytest.mark.slow

KEY = FUNDED_KEYS[0]
RECIPIENT = b"\x5a" * 20
BLOCK_LINE = re.compile(r"L1 block\s+(\d+)\s+0x([0-9a-f]{12})")
URL_LINE = re.compile(r"eth_\* JSON-RPC on (http://\S+),")


def rpc(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if "error" in answer:
        raise RuntimeError(answer["error"])
    return answer["result"]


def rpc_batch(url: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    body = json.dumps(
        [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
    ).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Node:
    """One `exos devnet` process and the block lines it printed."""

    def __init__(self, data_dir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--data-dir", str(data_dir), "--eth-port", "0",
             "--tz-port", "0", "--l1-block-time", "0.1", "--no-sequencer"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.reported: dict[int, str] = {}
        self.url: str | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(60) or self.url is None:
            self.process.kill()
            raise AssertionError("devnet did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            url = URL_LINE.search(line)
            if url:
                self.url = url.group(1)
                self._ready.set()
            block = BLOCK_LINE.search(line)
            if block:
                self.reported[int(block.group(1))] = block.group(2)
        self._ready.set()

    def kill9(self) -> dict[int, str]:
        """SIGKILL; return the blocks reported before the kill."""
        reported = dict(self.reported)
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)
        self._reader.join(10)
        return reported


def signed_bursts(nonce: int, burst: int, count: int) -> list[list[bytes]]:
    """`count` bursts of signed transfers from `nonce` on (value = nonce + 1)."""
    return [
        [sign(KEY, nonce=n, to=RECIPIENT, value=n + 1, maxFeePerGas=10**11) for n in range(start, start + burst)]
        for start in range(nonce, nonce + burst * count, burst)
    ]


def stream_transactions(url: str, stop: threading.Event, bursts: list[list[bytes]]) -> None:
    """Send the bursts until stopped; failures after the kill are expected."""
    for raws in bursts:
        if stop.is_set():
            return
        try:
            answers = rpc_batch(url, [("eth_sendRawTransaction", ["0x" + r.hex()]) for r in raws])
        except OSError:
            return
        errors = [a["error"] for a in answers if "error" in a]
        if errors:
            print("send errors:", len(errors), errors[:2])
        time.sleep(0.05)


def check_chain(url: str, reported: dict[int, str]) -> tuple[int, int]:
    """Verify the restarted chain against what was reported; return its head and the number
    of transactions it holds."""
    head = int(rpc(url, "eth_blockNumber", []), 16)
    assert head >= max(reported, default=0), "a reported block is missing after the restart"
    parent = rpc(url, "eth_getBlockByNumber", ["0x0", False])["hash"]
    transferred = mined = 0
    for number in range(1, head + 1):
        block = rpc(url, "eth_getBlockByNumber", [hex(number), True])
        assert block["parentHash"] == parent, f"block {number} does not link to its parent"
        if number in reported:
            assert block["hash"][2:14] == reported[number], f"block {number} changed after the kill"
        hashes = [t["hash"] for t in block["transactions"]]
        receipts = rpc_batch(url, [("eth_getTransactionReceipt", [h]) for h in hashes]) if hashes else []
        assert all(r["result"] is not None and r["result"]["status"] == "0x1" for r in receipts)
        transferred += sum(int(t["value"], 16) for t in block["transactions"] if t["to"] == "0x" + RECIPIENT.hex())
        mined += len(hashes)
        balance = int(rpc(url, "eth_getBalance", ["0x" + RECIPIENT.hex(), hex(number)]), 16)
        assert balance == transferred, f"state at block {number} does not match its transactions"
        parent = block["hash"]
    return head, mined


def test_kill_9_at_several_moments_loses_no_reported_block(tmp_path: Path) -> None:
    data_dir = tmp_path / "devnet"
    all_reported: dict[int, str] = {}
    for round_number, (delay, burst) in enumerate([(0.4, 20), (0.9, 200), (2.5, 200), (0.7, 50)]):
        node = Node(data_dir)
        assert node.url is not None
        if round_number:
            check_chain(node.url, all_reported)
        nonce = int(rpc(node.url, "eth_getTransactionCount", ["0x" + bytes.fromhex(
            "f39Fd6e51aad88F6F4ce6aB8827279cffFb92266".lower()).hex(), "pending"]), 16)
        bursts = signed_bursts(nonce, burst, 3)
        stop = threading.Event()
        sender = threading.Thread(target=stream_transactions, args=(node.url, stop, bursts), daemon=True)
        sender.start()
        time.sleep(delay)
        reported = node.kill9()
        print(f"round {round_number}: killed after {delay} s;", "".join(node.lines[-2:]).strip())
        stop.set()
        sender.join(30)
        assert reported, "no block was reported before the kill"
        all_reported.update(reported)
    node = Node(data_dir)
    assert node.url is not None
    head, mined = check_chain(node.url, all_reported)
    assert mined > 200, "the kills should interrupt a chain that is mining transactions"
    assert int(rpc(node.url, "eth_chainId", []), 16) == L1_CHAIN_ID
    assert head >= max(all_reported)
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(30) == 0
    assert any("stopped cleanly" in line for line in node.lines)
