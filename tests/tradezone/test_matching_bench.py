"""The matching benchmark stays runnable: a short run replays its command stream to the same book."""

from __future__ import annotations

import random

import pytest

from bench.bench_matching import CANCEL, GTC, IOC, MODIFY, generate, main, starting_orders


def test_benchmark_runs_and_its_replay_reaches_the_generated_book(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--commands", "3000", "--per-side", "200", "--levels", "60"]) == 0
    out = capsys.readouterr().out
    assert "orders/s" in out and "p99.9" in out


def test_benchmark_stream_follows_the_exchange_core_mix_and_keeps_depth() -> None:
    rng = random.Random(7)
    seeds = starting_orders(rng, 500, 150)
    commands, book, fills = generate(seeds, 20_000, 150, rng)
    mix = [0, 0, 0, 0]
    for command in commands:
        mix[command[0]] += 1
    # 9% GTC, 3% IOC, 6% cancel, 82% modify, within sampling noise.
    assert abs(mix[GTC] - 1_800) < 250 and abs(mix[IOC] - 600) < 150
    assert abs(mix[CANCEL] - 1_200) < 200 and abs(mix[MODIFY] - 16_400) < 400
    assert fills > 0
    assert 700 <= len(book) <= 1_300
