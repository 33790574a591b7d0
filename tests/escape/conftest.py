"""Fixtures of the escape tests: the real embedded EVM chain with the devnet contracts and an
in-process sequencer and batcher over a real LevelDB store (tests/sequencer/conftest.py)."""

from __future__ import annotations

from tests.sequencer.conftest import l1, sequencer  # noqa: F401  (fixtures)
