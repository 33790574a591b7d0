"""Benchmark of the whole TradeZone state transition per block:
`python -m bench.bench_state_transition [--accounts N] [--actions N] [--blocks N]`.

Setup (untimed): the devnet genesis plus ``--accounts`` funded accounts (USDT and WBTC each, so
the state trie starts with about two leaves per account), committed once; then ``--blocks``
blocks of ``--actions`` signed user actions each are generated against a running copy. Every
transaction carries its recovered signer (signatures pre-recovered, as the sequencer's worker
pool delivers them); the signatures themselves are placeholders and are never checked.

The action mix per block, spread over random accounts: 40% post-only placements around the mid
(spot and BTC-PERP), 20% cancels of resting orders, 30% GTC/IOC orders that cross and fill
(spot and perp, so balances, reservations, margin and positions all move), 10% modifies.

Timed, per block: ``state_transition`` exactly as a follower runs it: header checks,
transactions root, ``apply_block`` (nonces, maker-first order, matching, settlement, margin,
receipts), receipts root, and the state root commit of the dirty leaves through the proofs
engine, compared with the header. Printed: actions per second over all blocks, and each phase's
wall-clock and CPU time per block. Figures on a shared machine vary with load; the process's
CPU time varies less than the wall clock.

Last, a floor for any state transition written in Python over this state: one more block is
applied with its undo journal recorded, and the table writes it made (every journaled write of a
consensus table or index, plus the nonces) are replayed as ``set_entry`` performs them (journal
entry, table write, dirty mark) with no logic around them. Those writes, plus the trie commit of
the block's encoded leaves (the state root without the leaf encoding), are compared with the 100 ms a 10,000-action
block may take at the target rate.

The garbage collector runs as it does in a node (``--gc off`` disables it for the timed
blocks, as earlier versions of this benchmark did). The encoding of the dirty leaves, which the
state root phase includes, is also timed on its own in an extra call before each commit
(outside the total).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from typing import Any

import msgspec

from node.tradezone.blocks import Block, transactions_root
from node.tradezone.eip712 import DEVNET_DOMAIN
from node.tradezone.genesis import build_genesis_state, genesis_header, load_genesis_spec
from node.tradezone.state import State, compute_state_root, dirty_leaves, set_balance
from node.tradezone.state_transition import apply_block, receipts_root, seal_block, state_transition
from node.tradezone.transactions import (
    BUY,
    SELL,
    TIF_GTC,
    TIF_IOC,
    TIF_POST_ONLY,
    CancelOrder,
    ModifyOrder,
    PlaceOrder,
    SignedTx,
    Transaction,
)

TARGET_ACTIONS_PER_SECOND = 100_000
USDT, WBTC, SPOT, PERP = 1, 2, 1, 2
MID = 1_000_000
SIGNATURE = bytes(64) + b"\x1b"


def account(index: int) -> bytes:
    return (0x10_0000 + index).to_bytes(20, "big")


def fund(state: State, accounts: int) -> None:
    for i in range(accounts):
        addr = account(i)
        set_balance(state, addr, USDT, 10**12, 0)
        set_balance(state, addr, WBTC, 10**9, 0)


def signed(action: object, addr: bytes, nonce: int) -> SignedTx:
    tx = SignedTx(action, addr, nonce, SIGNATURE)  # type: ignore[arg-type]
    tx.cache_signer(DEVNET_DOMAIN.separator, addr)
    return tx


class Generator:
    """Builds valid-looking action streams against a running copy of the state."""

    def __init__(self, state: State, accounts: int, seed: int) -> None:
        self.state = state
        self.accounts = accounts
        self.rng = random.Random(seed)
        self.nonces: dict[bytes, int] = {}

    def _tx(self, action: object, addr: bytes) -> SignedTx:
        nonce = self.nonces.get(addr, 0)
        self.nonces[addr] = nonce + 1
        return signed(action, addr, nonce)

    def block(self, actions: int) -> list[Transaction]:
        rng = self.rng
        open_orders = [(oid, meta) for oid, meta in self.state.orders.items()]
        rng.shuffle(open_orders)
        txs: list[Transaction] = []
        used: set[int] = set()
        for _ in range(actions):
            roll = rng.random()
            market = SPOT if rng.random() < 0.5 else PERP
            if roll < 0.2 and open_orders:
                oid, meta = open_orders.pop()
                if oid in used:
                    continue
                used.add(oid)
                txs.append(self._tx(CancelOrder(meta.market_id, oid), meta.account))
                continue
            if roll < 0.3 and open_orders:
                oid, meta = open_orders.pop()
                if oid in used:
                    continue
                used.add(oid)
                order = self.state.books[meta.market_id].get(oid)
                if order is None or order.size < 2:
                    continue
                txs.append(self._tx(ModifyOrder(meta.market_id, oid, meta.user_price, order.size - 1), meta.account))
                continue
            addr = account(rng.randrange(self.accounts))
            side = BUY if rng.random() < 0.5 else SELL
            size = rng.randint(1, 5)
            if roll < 0.7:
                offset = rng.randint(1, 50) * 10
                price = MID - offset if side == BUY else MID + offset
                txs.append(self._tx(PlaceOrder(market, side, price, size, TIF_POST_ONLY), addr))
            else:
                price = MID + 400 if side == BUY else MID - 400
                tif = TIF_IOC if rng.random() < 0.5 else TIF_GTC
                txs.append(self._tx(PlaceOrder(market, side, price, size, tif), addr))
        return txs


class RecordingJournal(list):  # type: ignore[type-arg]
    """A state's undo journal that also keeps every entry appended to it (the floor block)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[tuple[Any, ...]] = []

    def append(self, entry: tuple[Any, ...]) -> None:
        self.entries.append(entry)
        list.append(self, entry)


def table_write_floor(state: State, block: Block) -> tuple[int, float]:
    """Apply ``block`` to ``state`` with its journal recorded, then time a replay of the table
    writes it made, each done as ``set_entry`` does it (journal entry, write, dirty mark), with
    the values the block left (so the state is unchanged). Returns (writes, seconds)."""
    recording = RecordingJournal()
    state.journal = recording
    apply_block(state, block)
    state.journal = []
    missing = object()
    writes: list[tuple[dict[Any, Any], Any]] = [
        (entry[0], entry[1]) for entry in recording.entries if len(entry) == 3
    ]
    signers = {tx.account for tx in block.transactions if isinstance(tx, SignedTx)}
    writes += [(state.nonces, signer) for signer in signers]
    journal: list[tuple[object, ...]] = []
    marks: dict[int, set[object]] = {}
    collecting = gc.isenabled()
    gc.disable()  # apply_block runs with the collector paused too
    started = time.perf_counter()
    for table, key in writes:
        old = table.get(key, missing)
        journal.append((table, key, old))
        if old is missing:
            table.pop(key, None)
        else:
            table[key] = old
        dirty = marks.get(id(table))
        if dirty is None:
            dirty = marks[id(table)] = set()
        dirty.add(key)
    seconds = time.perf_counter() - started
    if collecting:
        gc.enable()
    return len(writes), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--actions", type=int, default=10_000)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--gc", choices=("on", "off"), default="on",
                        help="garbage collector during the timed blocks (on: as in a node)")
    args = parser.parse_args()

    spec = load_genesis_spec()
    started = time.perf_counter()
    producer = build_genesis_state(spec)
    fund(producer, args.accounts)
    compute_state_root(producer)
    follower = build_genesis_state(spec)
    fund(follower, args.accounts)
    compute_state_root(follower)
    head = genesis_header(producer, spec)
    head = msgspec.structs.replace(head, state_root=producer.trie.root)
    print(f"setup: {args.accounts:,} accounts, state root committed in {time.perf_counter() - started:.1f} s",
          flush=True)

    generator = Generator(producer, args.accounts, args.seed)
    blocks: list[Block] = []
    parent = head
    for number in range(args.blocks):
        txs = generator.block(args.actions)
        block, _ = seal_block(producer, parent, txs, parent.timestamp_ms + 100, 0)
        blocks.append(block)
        parent = block.header
        del number

    # Timed: the follower's full state transition of each block. Wall-clock and this process's
    # CPU time are both taken: on a shared machine the CPU time moves less with the load.
    names = ("transactions root", "apply_block", "receipts root", "state root")
    phases = dict.fromkeys(names, 0.0)
    cpu_phases = dict.fromkeys(names, 0.0)
    total_actions = 0
    leaf_wall = leaf_cpu = 0.0
    gc.collect()
    if args.gc == "off":
        gc.disable()
    parent = head
    fills = 0
    wall = time.perf_counter()
    cpu = time.process_time()
    for block in blocks:
        marks = [(time.perf_counter(), time.process_time())]
        transactions_root(block.transactions)
        marks.append((time.perf_counter(), time.process_time()))
        receipts = apply_block(follower, block)
        marks.append((time.perf_counter(), time.process_time()))
        receipts_root(receipts)
        marks.append((time.perf_counter(), time.process_time()))
        # The extra encoding call, timed apart and left out of the total; compute_state_root
        # encodes the same leaves again.
        dirty_leaves(follower)
        leaf_end = (time.perf_counter(), time.process_time())
        leaf_wall += leaf_end[0] - marks[-1][0]
        leaf_cpu += leaf_end[1] - marks[-1][1]
        root = compute_state_root(follower)
        end = (time.perf_counter(), time.process_time())
        if root != block.header.state_root:
            raise SystemExit("state root mismatch between producer and follower")
        spans = [*zip(marks, marks[1:], strict=False), (leaf_end, end)]
        for name, (start, stop) in zip(names, spans, strict=True):
            phases[name] += stop[0] - start[0]
            cpu_phases[name] += stop[1] - start[1]
        total_actions += len(block.transactions)
        fills += sum(len(r.fills) for r in receipts)
        parent = block.header
    elapsed = time.perf_counter() - wall - leaf_wall
    cpu_elapsed = time.process_time() - cpu - leaf_cpu
    gc.enable()

    # One more block through the public state_transition entry point, to show it agrees.
    check_state = follower
    extra = generator.block(args.actions)
    sealed, _ = seal_block(producer, parent, extra, parent.timestamp_ms + 100, 0)
    t0 = time.perf_counter()
    state_transition(check_state, parent, sealed)
    one = time.perf_counter() - t0

    # The floor: the table writes of one more block, replayed with no logic.
    floor_block, _ = seal_block(producer, sealed.header, generator.block(args.actions),
                                sealed.header.timestamp_ms + 100, 0)
    writes, write_seconds = table_write_floor(check_state, floor_block)
    leaves = dirty_leaves(check_state)
    t0 = time.perf_counter()
    check_state.trie.commit(leaves)
    commit_ms = (time.perf_counter() - t0) * 1000
    compute_state_root(check_state)  # clears the dirty set (the same leaves again: same root)
    budget_ms = args.actions / TARGET_ACTIONS_PER_SECOND * 1000

    rate = total_actions / elapsed
    print(f"blocks: {len(blocks)} x {args.actions:,} actions over {args.accounts:,} accounts, {fills:,} fills")
    print(f"state transition: {rate:,.0f} actions/s ({elapsed / len(blocks) * 1000:.0f} ms per block wall); "
          f"by CPU time {total_actions / cpu_elapsed:,.0f} actions/s ({cpu_elapsed / len(blocks) * 1000:.0f} ms)")
    print(f"  {'phase':18s} {'wall ms':>8s} {'cpu ms':>8s}  share of wall")
    for name, seconds in phases.items():
        print(f"  {name:18s} {seconds / len(blocks) * 1000:8.1f} {cpu_phases[name] / len(blocks) * 1000:8.1f}"
              f"  {seconds / elapsed * 100:5.1f}%")
    print(f"  {'  leaf encoding':18s} {leaf_wall / len(blocks) * 1000:8.1f} {leaf_cpu / len(blocks) * 1000:8.1f}"
          "  (part of the state root, timed in a separate call)")
    print(f"apply_block alone (no roots): {total_actions / phases['apply_block']:,.0f} actions/s")
    print(f"state_transition() on one more block: {one * 1000:.0f} ms")
    print(f"floor: the {writes:,} table writes of one {len(floor_block.transactions):,}-action block replayed"
          f" with no logic {write_seconds * 1000:.1f} ms ({write_seconds / len(floor_block.transactions) * 1e6:.1f}"
          f" us per action); with the trie commit of its {len(leaves):,} encoded"
          f" leaves ({commit_ms:.1f} ms) {write_seconds * 1000 + commit_ms:.1f} ms, against the {budget_ms:.0f} ms the block"
          " may take at the target")
    load = os.getloadavg()
    print(f"target: {TARGET_ACTIONS_PER_SECOND:,} actions/s  -> {'met' if rate >= TARGET_ACTIONS_PER_SECOND else 'not met'}"
          f" (ratio {rate / TARGET_ACTIONS_PER_SECOND:.2f})"
          f"  (load average {load[0]:.2f}; garbage collector {args.gc}; python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
