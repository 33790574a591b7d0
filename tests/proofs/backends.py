"""The two commit passes of the engine, as a pytest parameter: every engine test runs on both."""

from __future__ import annotations

import importlib.util

import pytest

from proofs.engine import BACKEND

NATIVE_BUILT = importlib.util.find_spec("proofs._commit") is not None
NATIVE_AVAILABLE = BACKEND == "native"  # built, and not switched off with EXOS_PROOFS_NATIVE=0

# `native` argument of CommitEngine: False = pure-Python pass, True = proofs._commit.
BACKENDS = [
    pytest.param(False, id="python"),
    pytest.param(
        True,
        id="native",
        marks=pytest.mark.skipif(not NATIVE_AVAILABLE, reason="proofs._commit not built, or EXOS_PROOFS_NATIVE=0"),
    ),
]
