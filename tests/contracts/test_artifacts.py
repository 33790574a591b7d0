"""The committed artifacts are exactly what the pinned compiler makes of the committed sources."""

from __future__ import annotations

import json

import pytest

from node.evm.compile import (
    BUILD_DIR,
    ArtifactError,
    artifact_path,
    compile_contract,
    contract_names,
    load_artifact,
    source_hash,
)


def test_every_source_has_an_artifact_and_no_artifact_is_orphaned() -> None:
    names = contract_names()
    assert names == ["Bridge", "ERC20", "Governance", "Staking"]
    assert sorted(p.stem for p in BUILD_DIR.glob("*.json")) == names


@pytest.mark.parametrize("name", ["Bridge", "ERC20", "Governance", "Staking"])
def test_committed_artifact_equals_a_fresh_compile(name: str) -> None:
    committed = json.loads(artifact_path(name).read_text())
    fresh = compile_contract(name).to_json()
    assert committed == fresh, f"build/{name}.json is stale: run `python -m node.evm.compile`"


def test_load_artifact_gives_bytes_and_abi() -> None:
    bridge = load_artifact("Bridge")
    assert bridge.bytecode and bridge.runtime_bytecode
    assert len(bridge.runtime_bytecode) <= 24576  # EIP-170
    assert {"commitBatch", "claim", "escapeWithdraw", "freeze"} <= {e.get("name") for e in bridge.abi}
    assert bridge.source_hash == source_hash((BUILD_DIR.parent / "Bridge.vy").read_text())


def test_missing_artifact_is_a_named_error() -> None:
    with pytest.raises(ArtifactError, match="no artifact"):
        load_artifact("NoSuchContract")
