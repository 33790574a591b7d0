"""The trie benchmark still runs end to end (quick mode), so it cannot rot."""

from __future__ import annotations

import pytest

from bench import bench_trie
from proofs.engine import BACKEND


def test_bench_trie_quick_mode_runs_and_prints_every_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_trie.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for name in ("build 1,000 leaves", "build 5,000 leaves", "update 1,000 of 5,000", "prove 1,000", "verify 1,000"):
        assert name in out
    assert "roots of both tries matched" in out
    assert f"engine commit pass: {BACKEND}" in out


def test_bench_trie_bare_and_python_modes_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_trie.main(["--quick", "--bare", "--python"]) == 0
    out = capsys.readouterr().out
    assert "engine commit pass: python" in out
    assert "bare commit of 1,000 of 5,000 leaves: median cpu" in out
