"""Mined deposits per second: the node's path (eth_sendRawTransaction -> mined) next to raw py-evm.

    .venv/bin/python -m bench.bench_l1 [--n 800] [--block-time 0.2] [--url http://...]

Builds N signed `Bridge.depositNative` transactions from the eight first dev accounts, then in
one run:
1. raw: py-evm `MiningChain.mine_all` on an in-memory database from the same genesis, the same
   transactions, packed into blocks by the same gas-limit rule;
2. node: sends them in JSON-RPC batches through `eth_sendRawTransaction` to an `exos devnet`
   (started fresh in a temp dir unless --url is given) and waits until every one is mined
   (time from the first send to the last receipt);
3. raw again (the machine is shared: the mean of both raw runs is the reference).
Prints both rates and their ratio (target: node >= 80% of raw). Figures depend on machine load,
which is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from eth.db.atomic import AtomicDB
from eth.vm.forks import PragueVM
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector

from node.config import BRIDGE_ADDRESS, L1_CHAIN_ID, dev_accounts
from node.devnet import load_genesis
from node.evm.chain import ChainGenesis, chain_class_for
from node.evm.l1 import sign_transaction

DEPOSIT_GAS = 150_000
DEPOSIT_VALUE = 10**15
MAX_FEE = 100 * 10**9
SENDERS = 8
URL_LINE = re.compile(r"eth_\* JSON-RPC on (http://\S+),")


def rpc(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def call(url: str, method: str, params: list[Any]) -> Any:
    answer = rpc(url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    if "error" in answer:
        raise RuntimeError(f"{method}: {answer['error']}")
    return answer["result"]


def deposit_transactions(n: int, first_nonces: list[int]) -> list[bytes]:
    """N signed depositNative transactions, round-robin over the senders."""
    accounts = dev_accounts()[:SENDERS]
    selector = function_signature_to_4byte_selector("depositNative(address)")
    raws = []
    for i in range(n):
        account = accounts[i % SENDERS]
        raws.append(
            sign_transaction(
                account.private_key,
                chain_id=L1_CHAIN_ID,
                nonce=first_nonces[i % SENDERS] + i // SENDERS,
                to=BRIDGE_ADDRESS,
                data=selector + encode(["address"], [account.address]),
                value=DEPOSIT_VALUE,
                gas=DEPOSIT_GAS,
                max_fee_per_gas=MAX_FEE,
                max_priority_fee_per_gas=10**9,
            )
        )
    return raws


def raw_mine_all(genesis: ChainGenesis, raws: list[bytes]) -> float:
    """Seconds raw py-evm takes to mine `raws` with mine_all, in blocks filled by gas limit."""
    builder = PragueVM.get_transaction_builder()
    txs = [builder.decode(raw) for raw in raws]
    chain: Any = chain_class_for(genesis.chain_id).from_genesis(AtomicDB(), genesis.header_params(), genesis.state())
    per_block = genesis.gas_limit // DEPOSIT_GAS
    timestamp = genesis.timestamp
    started = time.perf_counter()
    for start in range(0, len(txs), per_block):
        head = chain.get_canonical_head()
        timestamp += 1
        chain.header = chain.create_header_from_parent(head, timestamp=timestamp, gas_limit=head.gas_limit)
        _, receipts, _ = chain.mine_all(txs[start : start + per_block])
        if not all(r.state_root == b"\x01" for r in receipts):
            raise RuntimeError("a deposit failed in the raw run")
    return time.perf_counter() - started


def node_path(url: str, raws: list[bytes], batch: int) -> tuple[float, int]:
    """Seconds from the first eth_sendRawTransaction to the last receipt; and blocks used."""
    first_block = int(call(url, "eth_blockNumber", []), 16)
    started = time.perf_counter()
    hashes: list[str] = []
    for start in range(0, len(raws), batch):
        chunk = raws[start : start + batch]
        answers = rpc(
            url,
            [{"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction", "params": ["0x" + r.hex()]}
             for i, r in enumerate(chunk)],
        )
        for answer in answers:
            if "error" in answer:
                raise RuntimeError(f"eth_sendRawTransaction: {answer['error']}")
            hashes.append(answer["result"])
    waiting = hashes
    while waiting:
        answers = rpc(
            url,
            [{"jsonrpc": "2.0", "id": i, "method": "eth_getTransactionReceipt", "params": [h]}
             for i, h in enumerate(waiting[-SENDERS:])],
        )
        if all(a.get("result") for a in answers):
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    receipts: list[dict[str, Any]] = []
    for start in range(0, len(hashes), batch):
        receipts += rpc(
            url,
            [{"jsonrpc": "2.0", "id": i, "method": "eth_getTransactionReceipt", "params": [h]}
             for i, h in enumerate(hashes[start : start + batch])],
        )
    if not all(r.get("result") and r["result"]["status"] == "0x1" for r in receipts):
        raise RuntimeError("a deposit was not mined or failed on the node")
    last_block = max(int(r["result"]["blockNumber"], 16) for r in receipts)
    return elapsed, last_block - first_block


class DevnetProcess:
    """A fresh `exos devnet` in a temp dir, on a free port."""

    def __init__(self, block_time: float) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="bench-l1-")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--fresh", "--data-dir", str(Path(self.dir.name) / "d"),
             "--eth-port", "0", "--tz-port", "0", "--l1-block-time", str(block_time), "--no-sequencer"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.url = ""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            found = URL_LINE.search(line)
            if found:
                self.url = found.group(1)
                break
        if not self.url:
            raise RuntimeError("the devnet did not start")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stdout is not None
        for _ in self.process.stdout:
            pass

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        self.dir.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=800, help="number of deposits")
    parser.add_argument("--batch", type=int, default=100, help="transactions per JSON-RPC batch")
    parser.add_argument("--block-time", type=float, default=0.2, help="L1 block time of the started devnet")
    parser.add_argument("--url", default=None, help="use a running node instead of starting one")
    args = parser.parse_args(argv)

    genesis = load_genesis(None)
    node = None if args.url else DevnetProcess(args.block_time)
    url = args.url or node.url  # type: ignore[union-attr]
    try:
        nonces = [
            int(call(url, "eth_getTransactionCount", ["0x" + a.address.hex(), "pending"]), 16)
            for a in dev_accounts()[:SENDERS]
        ]
        raws = deposit_transactions(args.n, nonces)
        # the raw reference starts from genesis: same transactions, nonces from 0
        reference = raws if not any(nonces) else deposit_transactions(args.n, [0] * SENDERS)
        load_before = os.getloadavg()[0]
        raw_first = raw_mine_all(genesis, reference)
        node_seconds, blocks = node_path(url, raws, args.batch)
        raw_second = raw_mine_all(genesis, reference)
        load_after = os.getloadavg()[0]
    finally:
        if node is not None:
            node.stop()
    raw_seconds = (raw_first + raw_second) / 2
    raw_rate = args.n / raw_seconds
    node_rate = args.n / node_seconds
    print(f"deposits: {args.n} Bridge.depositNative transactions from {SENDERS} senders")
    print(f"raw py-evm mine_all (in-memory db): {raw_rate:8.1f} tx/s  "
          f"({raw_first:.2f} s and {raw_second:.2f} s, mean {raw_seconds:.2f} s)")
    print(f"node eth_sendRawTransaction->mined: {node_rate:8.1f} tx/s  "
          f"({node_seconds:.2f} s over {blocks} blocks, block time {args.block_time} s)")
    print(f"ratio node/raw: {100 * node_rate / raw_rate:.0f}%  (target >= 80%)")
    print(f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
