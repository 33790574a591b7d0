"""Benchmark of the proofs commit engine against py-trie, side by side in one run.

    python -m bench.bench_trie            # 100,000 and 1,000,000 leaves (py-trie needs minutes)
    python -m bench.bench_trie --quick    # small sizes: a smoke run
    python -m bench.bench_trie --bare     # the engine alone: five commits of 10,000 of 1,000,000 leaves
    python -m bench.bench_trie --python   # the engine's pure-Python commit pass instead of the native one

Measured, for this engine and py-trie's HexaryTrie over the same random 32-byte keys and values:
building tries of each size (one commit), updating 1,000 and 10,000 random leaves of the largest
trie and computing the root (median of five rounds), generating and verifying proofs for random
keys of the largest trie. The engine uses its default commit pass (`proofs.engine.BACKEND`, printed
first) unless --python is given. Each figure is printed as wall time (perf_counter) and CPU time of this process (process_time), with the py-trie /
engine ratio. py-trie is driven through its plain `__setitem__` (its `squash_changes` batch mode is
slower on this workload). Roots of both implementations are compared after every step.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from trie import HexaryTrie

from proofs.engine import BACKEND, CommitEngine
from proofs.store import MemoryStore
from proofs.verify import verify_proof

T = TypeVar("T")

VALUE_SIZE = 40  # an RLP([balance, reserved]) leaf of two 128-bit amounts is about this long


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float


@dataclass(frozen=True)
class Row:
    name: str
    count: int
    engine: Timing
    reference: Timing


def _timed(action: Callable[[], T]) -> tuple[Timing, T]:
    wall = time.perf_counter()
    cpu = time.process_time()
    result = action()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), result


def _reference_update(reference: HexaryTrie, batch: dict[bytes, bytes]) -> bytes:
    for key, value in batch.items():
        reference[key] = value
    return reference.root_hash


def _build(
    sizes: Sequence[int], rng: random.Random, native: bool | None
) -> tuple[list[Row], CommitEngine, HexaryTrie, list[bytes]]:
    rows: list[Row] = []
    engine = CommitEngine(MemoryStore(), native=native)
    reference = HexaryTrie({})
    keys: list[bytes] = []
    for size in sizes:
        keys = [rng.randbytes(32) for _ in range(size)]
        contents = {key: rng.randbytes(VALUE_SIZE) for key in keys}
        engine = CommitEngine(MemoryStore(), native=native)
        reference = HexaryTrie({})
        engine_time, engine_root = _timed(partial(engine.commit, contents))
        reference_time, reference_root = _timed(partial(_reference_update, reference, contents))
        _check(engine_root, reference_root, f"build {size}")
        rows.append(Row(f"build {size:,} leaves", size, engine_time, reference_time))
    return rows, engine, reference, keys


def _check(engine_root: object, reference_root: object, step: str) -> None:
    if engine_root != reference_root:
        raise SystemExit(f"root mismatch after {step}: engine {engine_root!r}, py-trie {reference_root!r}")


def run(
    sizes: Sequence[int],
    updates: Sequence[int],
    proofs: int,
    seed: int = 1,
    rounds: int = 5,
    native: bool | None = None,
) -> tuple[list[Row], list[str]]:
    """Run every measurement; return the rows and notes. Raise SystemExit if the tries ever disagree.

    Each update figure is the median of `rounds` commits of fresh random batches (every round's
    engine time is listed in the notes: a commit that grows a million-entry dict costs more).
    """
    notes: list[str] = []
    rng = random.Random(seed)
    rows, engine, reference, keys = _build(sizes, rng, native)
    largest = len(keys)
    for count in updates:
        engine_times: list[Timing] = []
        reference_times: list[Timing] = []
        for _ in range(rounds):
            batch = {key: rng.randbytes(VALUE_SIZE) for key in rng.sample(keys, count)}
            engine_time, engine_root = _timed(partial(engine.commit, batch))
            reference_time, reference_root = _timed(partial(_reference_update, reference, batch))
            _check(engine_root, reference_root, f"update {count}")
            engine_times.append(engine_time)
            reference_times.append(reference_time)
        rows.append(Row(f"update {count:,} of {largest:,} + root", count, _median(engine_times), _median(reference_times)))
        rounds_text = ", ".join(f"{t.cpu * 1e3:.0f}" for t in engine_times)
        notes.append(f"update {count:,}: engine cpu ms per round {rounds_text}")
    sample = rng.sample(keys, min(proofs, len(keys)))
    root = engine.root
    engine_time, engine_proofs = _timed(lambda: [engine.prove(key) for key in sample])
    reference_proofs: list[Any]
    reference_time, reference_proofs = _timed(lambda: [reference.get_proof(key) for key in sample])
    rows.append(Row(f"prove {len(sample):,} keys", len(sample), engine_time, reference_time))
    engine_time, engine_values = _timed(
        lambda: [verify_proof(root, key, proof) for key, proof in zip(sample, engine_proofs, strict=True)]
    )
    reference_time, reference_values = _timed(
        lambda: [
            HexaryTrie.get_from_proof(root, key, proof)
            for key, proof in zip(sample, reference_proofs, strict=True)  # type: ignore[call-overload]
        ]
    )
    if engine_values != reference_values:
        raise SystemExit("verified values differ between the engine and py-trie")
    rows.append(Row(f"verify {len(sample):,} proofs", len(sample), engine_time, reference_time))
    return rows, notes


def run_bare(size: int, count: int, rounds: int, seed: int = 1, native: bool | None = None) -> list[Timing]:
    """Build a `size`-leaf trie in the engine alone, then time `rounds` commits of `count` random updates."""
    rng = random.Random(seed)
    keys = [rng.randbytes(32) for _ in range(size)]
    engine = CommitEngine(MemoryStore(), native=native)
    engine.commit({key: rng.randbytes(VALUE_SIZE) for key in keys})
    times: list[Timing] = []
    for _ in range(rounds):
        batch = {key: rng.randbytes(VALUE_SIZE) for key in rng.sample(keys, count)}
        timing, _ = _timed(partial(engine.commit, batch))
        times.append(timing)
    return times


def _median(times: Sequence[Timing]) -> Timing:
    ordered = sorted(times, key=lambda timing: timing.cpu)
    return ordered[len(ordered) // 2]


def _format(rows: Sequence[Row]) -> str:
    header = (
        f"{'measurement':<34} {'engine wall':>12} {'engine cpu':>11} {'py-trie wall':>13} "
        f"{'py-trie cpu':>12} {'ratio cpu':>10} {'engine cpu/item':>16}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        ratio = row.reference.cpu / row.engine.cpu if row.engine.cpu > 0 else float("inf")
        per_item = row.engine.cpu / row.count * 1e6
        lines.append(
            f"{row.name:<34} {row.engine.wall * 1e3:>10.1f}ms {row.engine.cpu * 1e3:>9.1f}ms "
            f"{row.reference.wall * 1e3:>11.1f}ms {row.reference.cpu * 1e3:>10.1f}ms "
            f"{ratio:>9.1f}x {per_item:>13.1f}us"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run the benchmark and print the table; return the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_trie", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--bare", action="store_true", help="the engine alone: commits of 10,000 of 1,000,000 leaves")
    parser.add_argument("--python", action="store_true", help="use the engine's pure-Python commit pass")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    native = False if args.python else None
    backend = "python" if args.python else BACKEND
    if args.quick:
        sizes, updates, proofs = [1_000, 5_000], [100, 1_000], 1_000
    else:
        sizes, updates, proofs = [100_000, 1_000_000], [1_000, 10_000], 10_000
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load:.2f} at start")
    print(f"engine commit pass: {backend}")
    if args.bare:
        size, count = (5_000, 1_000) if args.quick else (1_000_000, 10_000)
        times = run_bare(size, count, 5, args.seed, native)
        rounds_text = ", ".join(f"{t.cpu * 1e3:.1f}" for t in times)
        median = _median(times)
        print(
            f"bare commit of {count:,} of {size:,} leaves: median cpu {median.cpu * 1e3:.1f} ms "
            f"(wall {median.wall * 1e3:.1f} ms); cpu ms per round {rounds_text}"
        )
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"load average {load:.2f} at end")
        return 0
    rows, notes = run(sizes, updates, proofs, args.seed, rounds=1 if args.quick else 5, native=native)
    print(_format(rows))
    for note in notes:
        print(note)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f} at end; roots of both tries matched after every step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
