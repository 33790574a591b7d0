"""kill -9 of a real `exos devnet` process (sequencer, batcher and demo traders running) at chosen
points: while a block is being produced, between a block and its batch, while a batch
transaction is in flight and just after it was mined. After a restart on the same data directory
the node resumes from the last durable block with the same state root, batches what was not yet
batched, credits no deposit twice, and every block it had reported is still there."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from node.config import BRIDGE_ADDRESS
from node.db import LevelDBStore
from node.evm.bridge import BatchInfo, BridgeClient
from node.evm.chain import EmbeddedChain
from node.evm.l1 import EmbeddedL1Client
from node.sequencer.chainstore import ChainStore
from node.tradezone.transactions import L1Message

pytestmark = pytest.mark.slow

BATCH_LINE = re.compile(r"TZ batch\s+(\d+)\s+blocks (\d+)\.\.(\d+).*root 0x([0-9a-f]{12})")


class DevnetProcess:
    def __init__(self, data_dir: Path, crash_at: str | None = None, *, l1_block_time: float = 0.2,
                 demo: bool = True) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("EXOS_CRASH_AT", None)
        if crash_at:
            env["EXOS_CRASH_AT"] = crash_at
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--data-dir", str(data_dir), "--eth-port", "0",
             "--tz-port", "0", "--l1-block-time", str(l1_block_time), "--tz-block-ms", "50",
             *([] if demo else ["--no-demo"])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
        )
        self.lines: list[str] = []
        self.batches: list[tuple[int, int, int, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            match = BATCH_LINE.search(line)
            if match:
                index, first, last, root = match.groups()
                self.batches.append((int(index), int(first), int(last), root))

    def wait_batches(self, count: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while len(self.batches) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"expected {count} batches:\n" + "".join(self.lines[-40:]))
            time.sleep(0.05)

    def wait_killed(self, timeout: float = 90) -> None:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired as err:
            self.process.kill()
            raise AssertionError("the crash point was never reached:\n" + "".join(self.lines[-40:])) from err
        self._reader.join(5)
        assert code == -signal.SIGKILL, "".join(self.lines[-40:])
        # the signature-recovery workers of the killed node exit on their own, soon
        deadline = time.monotonic() + 10
        while (left := processes_of(self.data_dir)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"processes of the killed node still running: {left}"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(30) == 0, "".join(self.lines[-40:])
        self._reader.join(5)


def processes_of(data_dir: Path) -> list[int]:
    """Processes whose command line names ``data_dir`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(data_dir).encode() in command:
            found.append(int(entry.name))
    return found


def check_offline(data_dir: Path, reported: list[tuple[int, int, int, str]]) -> None:
    """Open both stores after the run: every reported batch's block holds the reported root,
    batches tile the chain without gaps, each L1 message was applied exactly once, and the
    bridge's committed roots are the node's."""
    store = ChainStore(LevelDBStore(data_dir / "tz"))
    chain = EmbeddedChain.open(data_dir)
    try:
        for _index, _first, last, root in reported:
            header = store.get_header(last)
            assert header is not None and header.state_root.hex().startswith(root)
        records = sorted(store.batches(), key=lambda r: r.index)
        assert [r.index for r in records] == list(range(len(records)))
        for previous, record in zip(records, records[1:], strict=False):
            assert record.first_block == previous.last_block + 1
        seen: list[int] = []
        unsafe = store.head(b"unsafe") or 0
        for block in store.iter_blocks(1, unsafe):
            seen.extend(tx.index for tx in block.transactions if isinstance(tx, L1Message))
        assert seen == list(range(len(seen)))  # in order, none twice, none skipped

        async def bridge_batches() -> list[BatchInfo]:
            bridge = BridgeClient(EmbeddedL1Client(chain), BRIDGE_ADDRESS)
            return [await bridge.batch(i) for i in range(await bridge.batch_count())]

        committed = asyncio.run(bridge_batches())
        assert len(committed) >= len(records)
        for info in committed:
            header = store.get_header(info.tz_block)
            assert header is not None and header.state_root == info.state_root
    finally:
        store.kv.close()
        chain.close()


@pytest.mark.parametrize("crash_at", ["block-sealed:40", "block-stored:60", "batch-planned:4",
                                      "batch-sent:3", "batch-mined:5"])
def test_kill9_at_a_crash_point_then_restart_resumes_exactly(tmp_path: Path, crash_at: str) -> None:
    data_dir = tmp_path / "devnet"
    first = DevnetProcess(data_dir, crash_at)
    first.wait_killed()
    second = DevnetProcess(data_dir)
    try:
        second.wait_batches(2)
    finally:
        second.stop()
    # batches after the restart continue the numbering (after any the first run got mined but did
    # not report) and the block ranges of the first run (check_offline)
    if first.batches:
        assert second.batches[0][0] > first.batches[-1][0]
    check_offline(data_dir, first.batches + second.batches)


def test_kill9_from_outside_at_a_random_moment(tmp_path: Path) -> None:
    data_dir = tmp_path / "devnet"
    first = DevnetProcess(data_dir)
    first.wait_batches(3)
    time.sleep(0.37)
    first.process.kill()
    first.wait_killed()
    second = DevnetProcess(data_dir)
    try:
        second.wait_batches(2)
    finally:
        second.stop()
    check_offline(data_dir, first.batches + second.batches)


def test_kill9_with_several_batches_in_flight_then_restart_agrees_with_the_bridge(tmp_path: Path) -> None:
    """Single-order load faster than one batch per L1 block can carry, so the batcher keeps
    several batches in flight; kill -9 while it does. The restarted node commits everything it
    had, from whatever the bridge holds, and the bridge and the node agree."""
    from bench.bench_sequencer import fund, sign_stream
    from node.sdk import TradeZoneClient

    data_dir = tmp_path / "devnet"
    first = DevnetProcess(data_dir, l1_block_time=1.0, demo=False)
    deployment = data_dir / "deployment.json"
    deadline = time.monotonic() + 60
    while not deployment.exists():
        assert time.monotonic() < deadline and first.process.poll() is None, "".join(first.lines[-40:])
        time.sleep(0.1)
    time.sleep(0.5)
    url = json.loads(deployment.read_text())["tradezone"]["rpcUrl"]
    keys = 4
    fund(url, keys)
    streams = [sign_stream((index, 0, 4000, 1)) for index in range(keys)]
    client = TradeZoneClient(url)
    seen_in_flight = 0

    def load() -> None:
        for position in range(0, 4000, 500):
            for stream in streams:
                try:
                    client.call("tz_sendTransactions", stream[position:position + 500])
                except Exception:  # the node was killed mid-request
                    return

    sender = threading.Thread(target=load, daemon=True)
    sender.start()
    deadline = time.monotonic() + 60
    while seen_in_flight < 2 and time.monotonic() < deadline:
        try:
            seen_in_flight = client.sync_status()["batchesInFlight"] or 0
        except Exception:
            break
        time.sleep(0.02)
    first.process.kill()
    first.wait_killed()
    sender.join(30)
    assert seen_in_flight >= 2, "the batcher never had two batches in flight:\n" + "".join(first.lines[-40:])

    deployment.unlink()
    second = DevnetProcess(data_dir, l1_block_time=1.0, demo=False)
    try:
        deadline = time.monotonic() + 60
        while not deployment.exists():
            assert time.monotonic() < deadline and second.process.poll() is None, "".join(second.lines[-40:])
            time.sleep(0.1)
        time.sleep(0.5)
        restarted = TradeZoneClient(json.loads(deployment.read_text())["tradezone"]["rpcUrl"])
        deadline = time.monotonic() + 120
        while True:
            status = restarted.sync_status()
            if status["safe"] is not None and status["safe"]["number"] >= status["unsafe"]["number"]:
                break
            assert time.monotonic() < deadline, f"safe head never caught up: {status}"
            time.sleep(0.2)
    finally:
        second.stop()
    check_offline(data_dir, first.batches + second.batches)
