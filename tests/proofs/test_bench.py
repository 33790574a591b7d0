"""The trie benchmark still runs end to end (quick mode), so it cannot rot."""

from __future__ import annotations

import pytest

from bench import bench_trie


def test_bench_trie_quick_mode_runs_and_prints_every_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_trie.main(["--quick"]) == 0
    out = capsys.readouterr().out
    for name in ("build 1,000 leaves", "build 5,000 leaves", "update 1,000 of 5,000", "prove 1,000", "verify 1,000"):
        assert name in out
    assert "roots of both tries matched" in out
