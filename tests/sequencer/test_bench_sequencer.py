"""The sequencer benchmark still runs end to end (tiny sizes) and prints every figure."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_sequencer_runs_every_phase_and_prints_its_figures() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.bench_sequencer", "--seconds", "0.5", "--keys", "2", "--per-key", "400",
         "--rate", "1000"],
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sustained HTTP" in result.stdout
    assert "sustained WebSocket" in result.stdout
    assert result.stdout.count("batches: the safe head reached block") == 2
    assert "latency at 1,000 orders/s offered" in result.stdout
