"""Fixtures of the contract tests: a fresh devnet-genesis chain per test (built once, copied)."""

from __future__ import annotations

import pytest

from genesis.builder import L1Genesis, build_l1_genesis, load_genesis_spec
from tests.contracts.harness import Harness


@pytest.fixture(scope="session")
def devnet_genesis() -> L1Genesis:
    return build_l1_genesis(load_genesis_spec())


@pytest.fixture
def evm(devnet_genesis: L1Genesis) -> Harness:
    return Harness(devnet_genesis)
