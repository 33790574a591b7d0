"""The two commit passes of the engine, as a pytest parameter: every engine test runs on both."""

from __future__ import annotations

import importlib.util

import pytest

NATIVE_AVAILABLE = importlib.util.find_spec("proofs._commit") is not None

# `native` argument of CommitEngine: False = pure-Python pass, True = proofs._commit.
BACKENDS = [
    pytest.param(False, id="python"),
    pytest.param(
        True,
        id="native",
        marks=pytest.mark.skipif(not NATIVE_AVAILABLE, reason="proofs._commit is not built (no C compiler)"),
    ),
]
