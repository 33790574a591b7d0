"""End to end on real processes: `exos devnet` (EVM chain, sequencer, batcher, TradeZone RPC),
web3.py as the users' wallet on L1, the TradeZone RPC for trading, and the `exos escape` CLI.

1. Two users deposit USDT and trade a perpetual; a batch commits it; the devnet is killed (SIGKILL) and
   restarted with the sequencer halted (`--no-sequencer`); a forced withdrawal is requested, the
   EVM chain passes its deadline, anyone freezes; both users escape with the CLI (one proof
   rebuilt from the EVM chain's calldata, one from a proof file written by `exos escape prove`)
   and receive exactly their committed balances; a second escape is refused by the CLI ("already
   withdrawn") and reverts on the chain; one user cannot take the other's balance; a deposit
   queued while the sequencer was down is refunded to its depositor.
2. While the sequencer is alive it serves a forced withdrawal before its deadline (the amount
   becomes claimable and is claimed) and no freeze is possible, even past that deadline.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode as abi_encode

from node.config import BRIDGE_ADDRESS, dev_accounts
from node.evm.bridge import BATCH_COMMITTED_TOPIC, decode_commit_batch, selector
from node.evm.l1 import JsonRpcL1Client, L1Receipt, send_transaction
from node.sdk import L1Bridge, TradeZoneClient
from node.tradezone.signing import Signer
from node.tradezone.transactions import BUY, SELL, TIF_IOC, TIF_POST_ONLY, PlaceOrder

pytestmark = pytest.mark.slow

EXOS = [sys.executable, "-m", "node.cli"]  # the `exos` command
ETH_LINE = re.compile(r"eth_\* JSON-RPC on (http://\S+),")
TZ_LINE = re.compile(r"tz_\* JSON-RPC and WebSocket on (http://\S+) ")
USDT = 1
BTC_PERP = 2
MARK = 1_000_000
ALICE, BOB, CAROL = dev_accounts()[5], dev_accounts()[6], dev_accounts()[7]
DAVE = dev_accounts()[4]  # a bystander who freezes and sends refunds


class Devnet:
    """A real `exos devnet` process on ``data_dir``; its URLs are read from its output."""

    def __init__(self, data_dir: Path, *extra: str, block_time: float = 0.2) -> None:
        self.process = subprocess.Popen(
            [*EXOS, "devnet", "--data-dir", str(data_dir), "--eth-port", "0", "--tz-port", "0",
             "--l1-block-time", str(block_time), "--tz-block-ms", "50", "--no-demo", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.lines: list[str] = []
        self.eth_url: str | None = None
        self.tz_url: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while self.eth_url is None:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("devnet did not start:\n" + "".join(self.lines))
            time.sleep(0.05)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            if (m := ETH_LINE.search(line)) is not None:
                self.eth_url = m.group(1)
            if (m := TZ_LINE.search(line)) is not None:
                self.tz_url = m.group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(30) == 0, "".join(self.lines[-30:])
        self._reader.join(5)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._reader.join(5)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "devnet"


@pytest.fixture
def devnet(data_dir: Path) -> Iterator[Devnet]:
    node = Devnet(data_dir)
    try:
        yield node
    finally:
        node.kill()


def escape(eth_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `exos escape ARGS --l1-rpc URL` and return the finished process."""
    return subprocess.run([*EXOS, "escape", *args, "--l1-rpc", eth_url], capture_output=True, text=True,
                          timeout=300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], words: str) -> str:
    """A refusal: exit 1, one line on stderr that says ``words``."""
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.stderr
    return lines[0]


def status(eth_url: str) -> dict[str, str]:
    out = ok(escape(eth_url, "status"))
    return {line[:16].strip(): line[16:].strip() for line in out.splitlines() if len(line) > 16}


def wait_until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def committed_tz_block(wallet: L1Bridge) -> int:
    bridge = wallet.bridge.functions
    count = bridge.batchCount().call()
    return int(bridge.batches(count - 1).call()[1]) if count else 0


def send_raw_escape(eth_url: str, key: bytes, value: bytes, proof: list[bytes]) -> L1Receipt:
    """escapeWithdraw sent straight to the chain with a fixed gas limit (no estimate, no checks),
    so that a refusal is an on-chain revert."""
    import asyncio

    data = selector("escapeWithdraw(uint32,bytes,bytes[])") + abi_encode(
        ["uint32", "bytes", "bytes[]"], [USDT, value, proof])

    async def send() -> L1Receipt:
        async with JsonRpcL1Client(eth_url) as l1:
            return await send_transaction(l1, key, BRIDGE_ADDRESS, data, gas=1_000_000, require_success=False)

    return asyncio.run(send())


def read_proof(path: Path) -> tuple[bytes, list[bytes]]:
    import json

    entry = json.loads(path.read_text())["balances"][0]
    return bytes.fromhex(entry["value"][2:]), [bytes.fromhex(n[2:]) for n in entry["proof"]]


def test_escape_after_the_sequencer_halts_pays_each_user_their_committed_balance(
        data_dir: Path, tmp_path: Path) -> None:
    node = Devnet(data_dir)
    try:
        assert node.eth_url is not None
        wait_until("the TradeZone RPC", lambda: node.tz_url)
        assert node.tz_url is not None
        alice_l1, bob_l1 = L1Bridge(node.eth_url, ALICE.private_key), L1Bridge(node.eth_url, BOB.private_key)
        alice_l1.deposit(USDT, 20_000_000_000)
        bob_l1.deposit(USDT, 20_000_000_000)
        alice = TradeZoneClient(node.tz_url, Signer(ALICE.private_key))
        bob = TradeZoneClient(node.tz_url, Signer(BOB.private_key))
        wait_until("both deposits credited", lambda: all(
            int(c.get_proof([USDT])["balances"][0]["balance"]) > 0 for c in (alice, bob)))
        alice.send(PlaceOrder(BTC_PERP, SELL, MARK, 50, TIF_POST_ONLY, False, 0), wait=True)
        bob.send(PlaceOrder(BTC_PERP, BUY, MARK, 50, TIF_IOC, False, 0), wait=True)
        traded_at = int(alice.block_number())
        wait_until("a batch past the trade", lambda: committed_tz_block(alice_l1) >= traded_at)
        committed = {
            who: int(c.get_proof([USDT], block=committed_tz_block(alice_l1))["balances"][0]["balance"])
            for who, c in (("alice", alice), ("bob", bob))
        }
        assert committed["alice"] == 20_000_000_000 and 0 < committed["bob"] < 20_000_000_000  # taker fee
        account = alice.call("tz_getAccount", "0x" + ALICE.address.hex())
        assert account["positions"], "the trade left Alice short"
    finally:
        node.kill()  # kill -9: the sequencer dies without any chance to finish anything

    # the sequencer stays down; the EVM chain carries on from where it was (blocks every 0.5 s,
    # so that the 20-block deadline leaves time to see a freeze refused before it)
    node = Devnet(data_dir, "--no-sequencer", block_time=0.5)
    try:
        assert node.eth_url is not None
        url = node.eth_url
        assert node.tz_url is None
        before = status(url)
        assert before["frozen"] == "no"
        alice_l1, bob_l1 = L1Bridge(url, ALICE.private_key), L1Bridge(url, BOB.private_key)
        carol_l1 = L1Bridge(url, CAROL.private_key)
        carol_before = carol_l1.token_balance(USDT)
        carol_l1.deposit(USDT, 7_000_000)  # never included: refundable after the freeze
        refused(escape(url, "freeze", "--key", DAVE.private_key.hex()), "deadline not passed")
        ok(escape(url, "request", "--key", "0x" + ALICE.private_key.hex(), "--asset", "USDT"))
        refused(escape(url, "withdraw", "--key", ALICE.private_key.hex(), "--asset", "USDT"), "not frozen yet")
        wait_until("the deadline to pass", lambda: status(url)["can freeze"] == "yes")
        ok(escape(url, "freeze", "--key", DAVE.private_key.hex()))
        assert status(url)["frozen"] == "yes"

        alice_before, bob_before = alice_l1.token_balance(USDT), bob_l1.token_balance(USDT)
        # Alice: proof rebuilt from the EVM chain's calldata by the CLI itself
        out = ok(escape(url, "withdraw", "--key", ALICE.private_key.hex(), "--asset", "USDT"))
        assert f"escaped {committed['alice']} of asset 1" in out
        assert alice_l1.token_balance(USDT) == alice_before + committed["alice"]
        # Bob: a proof file written by `exos escape prove`, kept as a key file holds a key
        key_file = tmp_path / "bob.key"
        key_file.write_text(BOB.private_key.hex() + "\n")
        proof_file = tmp_path / "bob-proof.json"
        ok(escape(url, "prove", "--account", "0x" + BOB.address.hex(), "--asset", "1", "--out", str(proof_file)))
        # Alice cannot use Bob's proof: refused by the CLI, and reverted by the chain
        refused(escape(url, "withdraw", "--key", ALICE.private_key.hex(), "--asset", "USDT",
                       "--proof-file", str(proof_file)), "already withdrawn")
        refused(escape(url, "withdraw", "--key", CAROL.private_key.hex(), "--asset", "USDT",
                       "--proof-file", str(proof_file)), "the proof is for account")
        value, nodes = read_proof(proof_file)
        carol_mid = carol_l1.token_balance(USDT)
        assert send_raw_escape(url, CAROL.private_key, value, nodes).status == 0
        assert carol_l1.token_balance(USDT) == carol_mid and bob_l1.token_balance(USDT) == bob_before
        out = ok(escape(url, "withdraw", "--key", str(key_file), "--asset", "USDT", "--proof-file", str(proof_file)))
        assert bob_l1.token_balance(USDT) == bob_before + committed["bob"]

        # a second escape: the CLI says so, and the chain reverts it
        refused(escape(url, "withdraw", "--key", BOB.private_key.hex(), "--asset", "USDT",
                       "--proof-file", str(proof_file)), "already withdrawn")
        assert send_raw_escape(url, BOB.private_key, value, nodes).status == 0
        assert bob_l1.token_balance(USDT) == bob_before + committed["bob"]

        # Carol's deposit never reached TradeZone: refunded to her, once
        index = int(alice_l1.bridge.functions.messageCount().call()) - 2
        refused(escape(url, "refund", "--key", DAVE.private_key.hex(), "--index", "0"), "consumed by a committed batch")
        ok(escape(url, "refund", "--key", DAVE.private_key.hex(), "--index", str(index)))
        assert carol_l1.token_balance(USDT) == carol_before
        refused(escape(url, "refund", "--key", DAVE.private_key.hex(), "--index", str(index)), "already refunded")
        refused(escape(url, "request", "--key", BOB.private_key.hex(), "--asset", "USDT"), "frozen")
    finally:
        node.stop()


def test_live_sequencer_serves_a_forced_withdrawal_before_its_deadline_and_no_freeze_is_possible(
        devnet: Devnet) -> None:
    assert devnet.eth_url is not None
    url = devnet.eth_url
    # a freeze watcher runs the whole time: it must never find a freeze possible
    watcher = subprocess.Popen([*EXOS, "escape", "watch", "--key", DAVE.private_key.hex(), "--poll", "0.2",
                                "--l1-rpc", url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        served_in_time(url)
        assert watcher.poll() is None, watcher.communicate()[0]
    finally:
        watcher.terminate()
        watcher.wait(10)
    assert not L1Bridge(url, ALICE.private_key).bridge.functions.frozen().call()


def served_in_time(url: str) -> None:
    wallet = L1Bridge(url, ALICE.private_key)
    wallet.deposit(USDT, 3_000_000_000)
    wait_until("the deposit committed", lambda: int(wallet.bridge.functions.committedCursor().call()) >= 1)
    refused(escape(url, "freeze", "--key", DAVE.private_key.hex()), "no pending L1 message")
    out = ok(escape(url, "request", "--key", ALICE.private_key.hex(), "--asset", "USDT"))
    index, deadline = (int(x) for x in re.search(r"index (\d+).*deadline (\d+)", out).groups())  # type: ignore[union-attr]
    wait_until("the request consumed by a committed batch",
               lambda: int(wallet.bridge.functions.committedCursor().call()) > index)
    assert wallet.w3.eth.block_number <= deadline  # served in time

    # find the withdrawal the batch made claimable in the batch's calldata, and claim it
    import asyncio

    async def find() -> tuple[int, int]:
        async with JsonRpcL1Client(url) as l1:
            for log in await l1.get_logs(0, "latest", BRIDGE_ADDRESS, (BATCH_COMMITTED_TOPIC,)):
                tx = await l1.get_transaction(log.transaction_hash)
                assert tx is not None
                for w in decode_commit_batch(tx.input).withdrawals:
                    if w.recipient == ALICE.address and w.asset_id == USDT:
                        return w.withdrawal_id, w.amount
        raise AssertionError("no claimable forced withdrawal")

    withdrawal_id, amount = asyncio.run(find())
    assert amount == 3_000_000_000  # the full free balance
    before = wallet.token_balance(USDT)
    wallet.claim(withdrawal_id, ALICE.address, USDT, amount)
    assert wallet.token_balance(USDT) == before + amount

    wait_until("the request's deadline to pass", lambda: wallet.w3.eth.block_number > deadline + 2)
    assert status(url)["can freeze"] == "no"
    refused(escape(url, "freeze", "--key", DAVE.private_key.hex()), "no pending L1 message")
    assert not wallet.bridge.functions.frozen().call()
