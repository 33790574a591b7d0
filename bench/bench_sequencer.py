"""Sequencer throughput and inclusion latency, with a separate load-generator process.

The node is a real `exos devnet --no-demo` process; this process is the load generator and talks
to it over loopback only (HTTP `tz_sendTransactions` batches and WebSocket). Orders are signed
ahead of time (outside the timed phases) by bench accounts funded with the simulated WCP asset,
and go to the devnet's outcome market: 90% post-only bids on the YES or NO side that rest
(non-crossing), 10% IOC orders that take (and mint pairs).

Phases:
1. sustained, HTTP: concurrent connections send batches as fast as the node answers for
   `--seconds`; the figure is orders included in blocks per second of block time.
2. sustained, WebSocket: the same over pipelined WebSocket requests.
   After each sustained phase: how long the safe head takes to reach the phase's last block
   (its batches committed on the EVM chain), and how many batches, bytes and L1 blocks that took.
3. latency: a fixed offered load (`--rate`, default 10,000 orders/s) over HTTP; for each order
   the time from sending to the timestamp of the block that includes it; p50 and p99, compared
   with the block interval.
`--batch-orders N` signs N orders per transaction (PlaceOrders) instead of one.
`--max-pending-batches N` is passed to the node (batches in flight on the EVM chain at once).

Run: `python -m bench.bench_sequencer [--seconds 5] [--rate 10000] [--batch-orders 1]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp

from node.config import dev_accounts
from node.sdk import TradeZoneClient
from node.tradezone.signing import Signer
from node.tradezone.transactions import TIF_IOC, TIF_POST_ONLY, PlaceOrder, PlaceOrders, encode_transaction
from node.tradezone.venues import NO_SIDE_FLAG

MARKET = 100
WCP = 1000
TARGET_SUSTAINED = 40_000


def bench_key(index: int) -> bytes:
    return (0xBE5C0000 + index).to_bytes(32, "big")


def _order(rng: random.Random) -> PlaceOrder:
    market = MARKET | (NO_SIDE_FLAG if rng.random() < 0.5 else 0)
    if rng.random() < 0.9:
        return PlaceOrder(market, 0, rng.randint(1, 45), 1, TIF_POST_ONLY, False, 0)
    return PlaceOrder(market, 0, 60, 1, TIF_IOC, False, 0)


def sign_stream(args: tuple[int, int, int, int]) -> list[str]:
    """Signed raw transactions (hex) for one bench key: ``count`` transactions from nonce
    ``start``, each with ``per_tx`` orders."""
    index, start, count, per_tx = args
    signer = Signer(bench_key(index))
    rng = random.Random(index * 7919 + start)
    out = []
    for nonce in range(start, start + count):
        if per_tx == 1:
            action: Any = _order(rng)
        else:
            action = PlaceOrders(tuple(_order(rng) for _ in range(per_tx)))
        out.append("0x" + encode_transaction(signer.sign(action, nonce)).hex())
    return out


class Node:
    def __init__(self, data_dir: Path, block_ms: int, max_pending_batches: int = 4) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--data-dir", str(data_dir), "--eth-port", "0",
             "--tz-port", "0", "--no-demo", "--tz-block-ms", str(block_ms), "--l1-block-time", "1",
             "--max-pending-batches", str(max_pending_batches)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        path = data_dir / "deployment.json"
        deadline = time.monotonic() + 60
        while not path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the devnet did not start")
            time.sleep(0.1)
        time.sleep(0.5)
        self.tz_url = json.loads(path.read_text())["tradezone"]["rpcUrl"]

    def memory(self) -> str:
        """The node process's resident memory now and at its peak (Linux /proc)."""
        try:
            fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        except OSError:
            return "memory unknown"
        return f"node RSS {int(fields['VmRSS'].split()[0]) / 1024:,.0f} MiB (peak {int(fields['VmHWM'].split()[0]) / 1024:,.0f} MiB)"

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def fund(url: str, keys: int) -> None:
    """Account 0 (the devnet faucet) transfers WCP to every bench key."""
    faucet = TradeZoneClient(url, Signer(dev_accounts()[0].private_key))
    from node.tradezone.transactions import Transfer

    hashes = faucet.send_many([Transfer(Signer(bench_key(i)).address, WCP, 10**13) for i in range(keys)])
    faucet.wait_for_receipt(str(hashes[-1]), timeout=30)


async def send_http(session: aiohttp.ClientSession, url: str, raws: list[str]) -> list[Any]:
    payload = {"jsonrpc": "2.0", "id": 1, "method": "tz_sendTransactions", "params": [raws]}
    async with session.post(url, json=payload) as response:
        answer = await response.json()
    if "error" in answer:
        raise SystemExit(f"node refused a batch: {answer['error']}")
    return answer["result"]  # type: ignore[no-any-return]


async def sustained_http(url: str, streams: list[list[str]], seconds: float, batch: int) -> tuple[int, float]:
    sent = 0
    stop_at = time.monotonic() + seconds

    async def worker(stream: list[str]) -> None:
        nonlocal sent
        async with aiohttp.ClientSession() as session:
            position = 0
            while time.monotonic() < stop_at and position < len(stream):
                chunk = stream[position:position + batch]
                results = await send_http(session, url, chunk)
                accepted = sum(1 for r in results if isinstance(r, str))
                position += accepted
                sent += accepted
                if accepted < len(chunk):
                    await asyncio.sleep(0.05)  # mempool full: back off, resend the rest

    started = time.monotonic()
    await asyncio.gather(*(worker(s) for s in streams))
    return sent, time.monotonic() - started


async def sustained_ws(url: str, streams: list[list[str]], seconds: float, batch: int) -> tuple[int, float]:
    ws_url = url.replace("http://", "ws://") + "/ws"
    sent = 0
    stop_at = time.monotonic() + seconds

    async def worker(stream: list[str]) -> None:
        nonlocal sent
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
            position = 0
            request_id = 0
            while time.monotonic() < stop_at and position < len(stream):
                chunk = stream[position:position + batch]
                request_id += 1
                await ws.send_str(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tz_sendTransactions",
                                              "params": [chunk]}))
                answer = json.loads((await ws.receive()).data)
                if "result" not in answer:
                    raise SystemExit(f"node refused a batch: {answer.get('error')}")
                accepted = sum(1 for r in answer["result"] if isinstance(r, str))
                position += accepted
                sent += accepted
                if accepted < len(chunk):
                    await asyncio.sleep(0.05)

    started = time.monotonic()
    await asyncio.gather(*(worker(s) for s in streams))
    return sent, time.monotonic() - started


def drain(client: TradeZoneClient, timeout: float = 120.0) -> None:
    """Wait until the node's mempool is empty (what a phase sent is all in blocks), so the next
    phase does not measure the previous one's backlog."""
    deadline = time.monotonic() + timeout
    while client.sync_status()["mempoolSize"] and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)


def included_rate(client: TradeZoneClient, first_block: int, per_tx: int, block_ms: int) -> tuple[int, float, int]:
    """(orders included, seconds of block time, last block) for blocks after ``first_block``.
    The time is from the first to the last block holding orders, plus one block interval (the
    first block holds what arrived during the interval before it)."""
    last = int(str(client.block_number()), 0)
    orders = 0
    t0 = t1 = None
    for number in range(first_block + 1, last + 1):
        block = client.get_block(number)
        txs = len(block["transactions"])
        if not txs:
            continue
        ts = int(block["timestampMs"])
        t0 = ts if t0 is None else t0
        t1 = ts
        orders += txs * per_tx
    span = ((t1 or 0) - (t0 or 0) + block_ms) / 1000
    return orders, span, last


def next_batch_index(client: TradeZoneClient, start: int = 0) -> int:
    """The index of the first batch at or after ``start`` that is not committed yet."""
    index = start
    while (batch := client.get_batch(index)) is not None and batch["status"] != "inFlight":
        index += 1
    return index


def data_availability(client: TradeZoneClient, first_batch: int, timeout: float = 300.0) -> tuple[str, int]:
    """Wait until the safe head reaches the current unsafe head (every block of the phase is in a
    batch committed on the EVM chain); return a line describing it and the next batch index."""
    target = client.sync_status()["unsafe"]["number"]
    started = time.monotonic()
    safe = 0
    while time.monotonic() - started < timeout:
        head = client.sync_status()["safe"]
        safe = head["number"] if head else 0
        if safe >= target:
            break
        time.sleep(0.2)
    waited = time.monotonic() - started
    end = next_batch_index(client, first_batch)
    batches = [client.get_batch(index) for index in range(first_batch, end)]
    per_l1_block: dict[int, int] = {}
    for batch in batches:
        per_l1_block[batch["l1Block"]] = per_l1_block.get(batch["l1Block"], 0) + 1
    size = sum(batch["dataSize"] for batch in batches)
    reached = "reached" if safe >= target else f"did NOT reach (safe {safe})"
    line = (f"  batches: the safe head {reached} block {target} {waited:.1f} s after the last order was included; "
            f"{len(batches)} batches, {size / 1024:,.0f} KiB of data in {len(per_l1_block)} L1 blocks "
            f"(up to {max(per_l1_block.values(), default=0)} batches per L1 block)")
    return line, end


LATENCY_KEYS = 50


async def latency(url: str, streams: list[list[str]], rate: int, seconds: float,
                  per_tx: int) -> list[tuple[str, float]]:
    """Offer ``rate`` orders/s open-loop: every 10 ms a request is due, taken in turn from each
    key's stream. A key's requests go out in nonce order (each after the key's previous answer),
    but a request's clock starts when it is due, so a slow answer shows as latency instead of
    lowering the offered load. Returns (tx hash, due time in ms) of every admitted transaction."""
    per_tick = max(1, rate // 100 // per_tx)
    sent: list[tuple[str, float]] = []
    last: dict[int, asyncio.Task[None]] = {}
    positions = [0] * len(streams)

    async def send(session: aiohttp.ClientSession, before: asyncio.Task[None] | None, chunk: list[str],
                   due: float) -> None:
        if before is not None:
            await before
        results = await send_http(session, url, chunk)
        sent.extend((result, due) for result in results if isinstance(result, str))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.monotonic()
        tick = 0
        offered = 0
        while time.monotonic() - start < seconds:
            key = tick % len(streams)
            chunk = streams[key][positions[key]:positions[key] + per_tick]
            if not chunk:
                break
            positions[key] += len(chunk)
            offered += len(chunk)
            last[key] = asyncio.create_task(send(session, last.get(key), chunk, time.time() * 1000))
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * 0.01 - time.monotonic()))
        offered_rate = offered * per_tx / (time.monotonic() - start)
        await asyncio.gather(*last.values())
    print(f"latency phase: offered {offered_rate:,.0f} orders/s", flush=True)
    return sent


def block_intervals(client: TradeZoneClient, first: int, last: int) -> str:
    """A line describing the block cadence between two block numbers: intervals p50/p99/max."""
    stamps = [int(client.get_block(number)["timestampMs"]) for number in range(first + 1, last + 1)]
    gaps = sorted(b - a for a, b in zip(stamps, stamps[1:], strict=False))
    if not gaps:
        return "no blocks"
    return (f"{len(stamps)} blocks, interval p50 {statistics.median(gaps):.0f} ms, "
            f"p99 {gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))]} ms, max {gaps[-1]} ms")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each phase")
    parser.add_argument("--rate", type=int, default=10_000, help="offered load of the latency phase (orders/s)")
    parser.add_argument("--batch-orders", type=int, default=1, help="orders per signed transaction")
    parser.add_argument("--keys", type=int, default=8, help="bench accounts (one connection each)")
    parser.add_argument("--http-batch", type=int, default=500, help="transactions per request")
    parser.add_argument("--block-ms", type=int, default=100)
    parser.add_argument("--per-key", type=int, default=0, help="pre-signed transactions per key per phase")
    parser.add_argument("--phases", default="http,ws,latency", help="which phases to run (comma-separated)")
    parser.add_argument("--max-pending-batches", type=int, default=4,
                        help="batches the node keeps in flight on the EVM chain")
    args = parser.parse_args(argv)
    per_tx = args.batch_orders
    per_key = args.per_key or int(TARGET_SUSTAINED * 1.5 * args.seconds / per_tx / args.keys) + 1
    latency_count = int(args.rate * args.seconds / per_tx / LATENCY_KEYS) + 100

    print(f"pre-signing {per_key} transactions x {args.keys} keys x 2 phases + {latency_count} x {LATENCY_KEYS} "
          f"({per_tx} order(s) each)...", flush=True)
    with ProcessPoolExecutor() as pool:
        http_streams = list(pool.map(sign_stream, [(i, 0, per_key, per_tx) for i in range(args.keys)]))
        ws_streams = list(pool.map(sign_stream, [(args.keys + i, 0, per_key, per_tx) for i in range(args.keys)]))
        lat_streams = list(pool.map(sign_stream, [(2 * args.keys + i, 0, latency_count, per_tx)
                                                  for i in range(LATENCY_KEYS)]))

    # The pre-signed streams are millions of objects: keep the generator's own full collections
    # (pauses of its sending, which the open-loop latency would count against the node) off them.
    gc.collect()
    gc.freeze()
    data_dir = Path(tempfile.mkdtemp(prefix="exos-bench-"))
    node = Node(data_dir / "devnet", args.block_ms, args.max_pending_batches)
    try:
        client = TradeZoneClient(node.tz_url)
        fund(node.tz_url, 2 * args.keys + LATENCY_KEYS)
        print(f"node on {node.tz_url}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
        phases = set(args.phases.split(","))
        batch_index = next_batch_index(client)
        for name, phase, streams in (("HTTP", sustained_http, http_streams), ("WebSocket", sustained_ws, ws_streams)):
            if {"HTTP": "http", "WebSocket": "ws"}[name] not in phases:
                continue
            first = int(str(client.block_number()), 0)
            sent, elapsed = asyncio.run(phase(node.tz_url, streams, args.seconds, args.http_batch))
            drain(client)
            orders, span, _last = included_rate(client, first, per_tx, args.block_ms)
            rate = orders / span
            print(f"sustained {name:9}: admitted {sent * per_tx / elapsed:>9,.0f} orders/s, included {orders:,} "
                  f"orders in {span:.2f} s of blocks = {rate:>9,.0f} orders/s "
                  f"({rate / TARGET_SUSTAINED:.2f}x the {TARGET_SUSTAINED:,}/s target)", flush=True)
            line, batch_index = data_availability(client, batch_index)
            print(f"{line}; {node.memory()}", flush=True)
        if "latency" not in phases:
            return 0
        first = int(str(client.block_number()), 0)
        sent_at = asyncio.run(latency(node.tz_url, lat_streams, args.rate, args.seconds, per_tx))
        drain(client)
        last = int(str(client.block_number()), 0)
        block_time: dict[str, int] = {}
        for number in range(first + 1, last + 1):
            block = client.get_block(number)
            for tx in block["transactions"]:
                block_time[tx if isinstance(tx, str) else tx["hash"]] = int(block["timestampMs"])
        delays = sorted(block_time[h] - at for h, at in sent_at if h in block_time)
        if delays:
            p50 = statistics.median(delays)
            p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
            print(f"latency at {args.rate:,} orders/s offered: {len(delays):,} transactions "
                  f"({len(delays) * per_tx:,} orders), submit-to-inclusion "
                  f"p50 {p50:.0f} ms, p99 {p99:.0f} ms = {p99 / args.block_ms:.2f} block intervals "
                  f"(target <= 2); {block_intervals(client, first, last)}", flush=True)
    finally:
        node.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
