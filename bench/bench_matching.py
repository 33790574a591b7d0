"""Benchmark of the matching core alone: `python -m bench.bench_matching [--commands N]`.

The command mix is exchange-core's: 9% GTC, 3% IOC, 6% cancel, 82% modify ("modify" moves an
order's price and/or size: a reduce when only the size shrinks at the same price, otherwise a
remove and a re-add at the back of the new level). The book starts with about 1,000 resting
orders per side spread over a few hundred levels around the mid.

A command stream is generated first (untimed) by running it against a book, so every command is
valid where it lands; it is then replayed on fresh copies of the starting book, once for
throughput (one loop, one clock read at each end) and once for latency (perf_counter_ns around
each command), so the clock reads do not slow the throughput figure. The try_fill callback is a
trivial ACCEPT, so the figures measure the order book and nothing else. One thread, one core.
Figures are wall-clock and depend on the machine's load.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections.abc import Callable

from node.tradezone.matching import BUY, SELL, FillVerdict, OrderBook, RestingOrder

TARGET_ORDERS_PER_SECOND = 300_000

GTC, IOC, CANCEL, MODIFY = 0, 1, 2, 3
MID = 1_000_000
ACCOUNTS = [i.to_bytes(20, "big") for i in range(1, 2_001)]

Command = tuple[int, int, bytes, int, int, int]  # (kind, order_id, account, side, price, size)
Seed = tuple[int, bytes, int, int, int]  # (order_id, account, side, price, size)


def accept(maker: RestingOrder, price: int, size: int) -> FillVerdict:
    return FillVerdict.ACCEPT


def starting_orders(rng: random.Random, per_side: int, levels: int) -> list[Seed]:
    """About ``per_side`` orders per side over ``levels`` levels, denser near the mid."""
    seeds: list[Seed] = []
    order_id = 0
    for side in (BUY, SELL):
        for _ in range(per_side):
            # Distance from the mid: triangular, so levels near the touch are fuller.
            distance = 1 + int(rng.triangular(0, levels, 0))
            price = MID - distance if side == BUY else MID + distance
            order_id += 1
            seeds.append((order_id, rng.choice(ACCOUNTS), side, price, rng.randint(1, 100)))
    return seeds


def build_book(seeds: list[Seed]) -> OrderBook:
    book = OrderBook(market_id=1)
    for seq, (order_id, account, side, price, size) in enumerate(seeds):
        book.add(RestingOrder(order_id, account, side, price, size, 0, False, seq))
    return book


def execute(book: OrderBook, command: Command, seq: int) -> int:
    """Run one command the way the VM would: match a taker, rest what a GTC has left, cancel,
    or modify (reduce in place when only the size shrinks, else remove and re-add). Returns
    the number of fills."""
    kind, order_id, account, side, price, size = command
    if kind == MODIFY:
        order = book.get(order_id)
        if order is None:
            return 0
        if price == order.price and size < order.size:
            book.reduce(order_id, size)
            return 0
        book.move(order_id, price, size, seq)
        return 0
    if kind == CANCEL:
        book.remove(order_id)
        return 0
    result = book.match(account, side, price, size, accept)
    remaining = result.remaining
    if kind == GTC and remaining > 0:
        book.add(RestingOrder(order_id, account, side, price, remaining, 0, False, seq))
    return len(result.fills)


def execute_in_transaction(book: OrderBook, command: Command, seq: int) -> int:
    """``execute`` wrapped in an order-book transaction, as the VM wraps every action."""
    book.begin_transaction()
    fills = execute(book, command, seq)
    book.commit_transaction()
    return fills


def generate(
    seeds: list[Seed], count: int, levels: int, rng: random.Random
) -> tuple[list[Command], OrderBook, int]:
    """A stream of ``count`` commands in the exchange-core mix, each valid where it lands; also
    the book it leaves and the number of fills it produced."""
    book = build_book(seeds)
    live = [s[0] for s in seeds]  # order ids that may rest; stale ones are dropped lazily
    next_id = max(live) + 1
    target = len(seeds)
    commands: list[Command] = []
    fills = 0
    while len(commands) < count:
        roll = rng.randrange(100)
        if roll < 9 or roll < 12:
            kind = GTC if roll < 9 else IOC
            side = rng.randrange(2)
            account = rng.choice(ACCOUNTS)
            best_bid = book.best_bid() or MID - 1
            best_ask = book.best_ask() or MID + 1
            # The share of crossing GTC orders adapts to keep the book near its starting depth
            # (cancels and takers remove orders as fast as passive GTC orders add them).
            aggressive = 30 if len(book) >= target else 3
            if kind == IOC or rng.randrange(100) < aggressive:
                # Aggressive: cross the spread by up to a few ticks.
                price = best_ask + rng.randrange(4) if side == BUY else best_bid - rng.randrange(4)
            else:
                # Passive: join or sit behind the touch, as deep as the starting book.
                distance = int(rng.triangular(0, levels, 0))
                price = best_ask - 1 - distance if side == BUY else best_bid + 1 + distance
            size = rng.randint(1, 100) if kind == GTC else rng.randint(1, 30)
            command: Command = (kind, next_id, account, side, price, size)
            next_id += 1
            if kind == GTC:
                live.append(command[1])
        else:
            order = None
            while order is None and live:
                index = rng.randrange(len(live))
                order = book.get(live[index])
                if order is None:
                    live[index] = live[-1]
                    live.pop()
            if order is None:
                continue
            if roll < 18:
                command = (CANCEL, order.order_id, order.account, order.side, order.price, order.size)
            else:
                price = order.price
                size = order.size
                choice = rng.randrange(3)
                if choice == 0 and size > 1:
                    size = rng.randint(1, size - 1)  # shrink in place: keeps priority
                elif choice == 1:
                    size = rng.randint(1, 100)
                else:
                    # Move the price a few ticks, staying on its own side of the spread.
                    price += rng.randint(-5, 5)
                    if order.side == BUY:
                        touch = book.best_ask()
                        if touch is not None and price >= touch:
                            price = touch - 1
                    else:
                        touch = book.best_bid()
                        if touch is not None and price <= touch:
                            price = touch + 1
                command = (MODIFY, order.order_id, order.account, order.side, price, size)
        fills += execute(book, command, len(commands))
        commands.append(command)
    return commands, book, fills


def run_throughput(
    seeds: list[Seed], commands: list[Command], run: Callable[[OrderBook, Command, int], int]
) -> tuple[float, OrderBook]:
    book = build_book(seeds)
    gc.collect()
    start = time.perf_counter_ns()
    for seq, command in enumerate(commands):
        run(book, command, seq)
    elapsed = time.perf_counter_ns() - start
    return elapsed / 1e9, book


def run_latency(seeds: list[Seed], commands: list[Command]) -> list[int]:
    book = build_book(seeds)
    clock = time.perf_counter_ns
    samples = [0] * len(commands)
    gc.collect()
    for seq, command in enumerate(commands):
        start = clock()
        execute(book, command, seq)
        samples[seq] = clock() - start
    return samples


def percentile(sorted_samples: list[int], fraction_ppm: int) -> int:
    """The sample at the given rank (parts per million), nearest-rank method, integers only."""
    rank = (len(sorted_samples) * fraction_ppm + 999_999) // 1_000_000
    return sorted_samples[max(rank, 1) - 1]


def same_book(a: OrderBook, b: OrderBook) -> bool:
    key = [(o.order_id, o.side, o.price, o.size) for o in a.orders()]
    return key == [(o.order_id, o.side, o.price, o.size) for o in b.orders()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--commands", type=int, default=500_000)
    parser.add_argument("--per-side", type=int, default=1_000)
    parser.add_argument("--levels", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1961)
    parser.add_argument("--repeat", type=int, default=3, help="throughput passes (median and best are printed)")
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU (Linux)")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    rng = random.Random(args.seed)
    seeds = starting_orders(rng, args.per_side, args.levels)
    commands, generated, fills = generate(seeds, args.commands, args.levels, rng)
    mix = [0, 0, 0, 0]
    for command in commands:
        mix[command[0]] += 1
    start_book = build_book(seeds)
    bids, asks = start_book.depth(10_000)
    end_bids, end_asks = generated.depth(10_000)

    plain: list[float] = []
    journaled: list[float] = []
    for _ in range(max(args.repeat, 1)):
        seconds, replayed = run_throughput(seeds, commands, execute)
        seconds_tx, replayed_tx = run_throughput(seeds, commands, execute_in_transaction)
        if not same_book(replayed, generated) or not same_book(replayed_tx, generated):
            print("error: the replay did not reach the generated book", file=sys.stderr)
            return 1
        plain.append(seconds)
        journaled.append(seconds_tx)
    plain.sort()
    journaled.sort()
    raw_samples = run_latency(seeds, commands)
    samples = sorted(raw_samples)
    by_kind: list[list[int]] = [[], [], [], []]
    for command, sample in zip(commands, raw_samples, strict=True):
        by_kind[command[0]].append(sample)

    per_second = int(len(commands) / plain[len(plain) // 2])
    best = int(len(commands) / plain[0])
    per_second_tx = int(len(commands) / journaled[len(journaled) // 2])
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"commands: {len(commands):,} (GTC {mix[GTC]:,}, IOC {mix[IOC]:,}, cancel {mix[CANCEL]:,}, "
        f"modify {mix[MODIFY]:,}), {fills:,} fills"
    )
    print(
        f"book at start: {len(start_book):,} orders, {len(bids)} bid levels, {len(asks)} ask levels; "
        f"at end: {len(generated):,} orders, {len(end_bids)} bid / {len(end_asks)} ask levels"
    )
    print(f"throughput: {per_second:,} orders/s (median of {len(plain)} passes; best {best:,})")
    print(f"ratio to the {TARGET_ORDERS_PER_SECOND:,} orders/s target: {per_second / TARGET_ORDERS_PER_SECOND:.2f}")
    print(f"throughput with each command in an undo-journal transaction: {per_second_tx:,} orders/s (median)")
    print(
        "latency per command (ns): "
        f"p50 {percentile(samples, 500_000):,}  p99 {percentile(samples, 990_000):,}  "
        f"p99.9 {percentile(samples, 999_000):,}  max {samples[-1]:,}"
    )
    for kind, name in ((GTC, "GTC"), (IOC, "IOC"), (CANCEL, "cancel"), (MODIFY, "modify")):
        kind_samples = sorted(by_kind[kind])
        if kind_samples:
            print(
                f"  {name:>6}: p50 {percentile(kind_samples, 500_000):,}  "
                f"p99 {percentile(kind_samples, 990_000):,}  p99.9 {percentile(kind_samples, 999_000):,}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
