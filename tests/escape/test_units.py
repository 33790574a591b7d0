"""Pieces of the escape hatch that need no chain: revert reasons mapped to named refusals, the
CLI's asset and key parsing, proof documents (tz_getProof shape) and local proof checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import rlp

from node.cli import CliError, parse_address
from node.escape.cli import load_key, parse_asset
from node.escape.errors import (
    REVERT_REASONS,
    AlreadyWithdrawn,
    ChainRefused,
    DeadlineNotPassed,
    NothingToWithdraw,
    ProofMismatch,
    ProofSourceError,
    error_for_revert,
)
from node.escape.proof import (
    EscapeProof,
    check_escape_proof,
    decode_balance_value,
    proof_from_json,
    proof_to_json,
)
from node.tradezone.state import balance_key
from proofs.engine import CommitEngine
from proofs.store import MemoryStore

KEY = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ALICE = bytes.fromhex("9965507d1a55bcc2695c58ba16fb37d819b0a4dc")
BOB = bytes.fromhex("976ea74026e726554db657fa54763abd0c3a0aa9")


def test_every_bridge_revert_reason_maps_to_its_refusal() -> None:
    for reason, kind in REVERT_REASONS.items():
        err = error_for_revert(reason)
        assert type(err) is kind and reason in str(err)
    assert isinstance(error_for_revert("Bridge: already escaped"), AlreadyWithdrawn)
    assert "already withdrawn" in str(error_for_revert("Bridge: already escaped"))
    assert isinstance(error_for_revert("Bridge: deadline not passed"), DeadlineNotPassed)
    assert isinstance(error_for_revert("MPT: proof too short"), ProofMismatch)
    assert isinstance(error_for_revert("something else"), ChainRefused)
    assert isinstance(error_for_revert(None), ChainRefused)


def test_deadline_refusal_says_when_a_freeze_becomes_possible() -> None:
    err = DeadlineNotPassed.at(3, 120, 111)
    assert "queue head 3" in str(err) and "from L1 block 121 (10 blocks to go)" in str(err)


def test_assets_by_symbol_or_id() -> None:
    assert [parse_asset(a) for a in ("OKB", "usdt", "WBTC", "7")] == [0, 1, 2, 7]
    for bad in ("DOGE", "-1", str(2**32), "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_asset(bad)
    assert parse_address("0x" + ALICE.hex()) == ALICE
    with pytest.raises(argparse.ArgumentTypeError):
        parse_address("0x1234")


def test_keys_from_hex_file_or_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = bytes.fromhex(KEY)
    assert load_key(KEY) == load_key("0x" + KEY) == expected
    path = tmp_path / "key"
    path.write_text("0x" + KEY + "\n")
    assert load_key(str(path)) == expected
    monkeypatch.setenv("EXOS_ESCAPE_KEY", KEY)
    assert load_key(None) == expected
    monkeypatch.delenv("EXOS_ESCAPE_KEY")
    with pytest.raises(CliError, match="give --key"):
        load_key(None)
    with pytest.raises(CliError):
        load_key(str(tmp_path / "missing"))
    path.write_text("not a key")
    with pytest.raises(CliError):
        load_key(str(path))
    with pytest.raises(CliError, match="32 bytes"):
        path.write_text("abcd")
        load_key(str(path))


def committed_trie() -> tuple[CommitEngine, bytes]:
    engine = CommitEngine(MemoryStore())
    root = engine.commit({
        balance_key(ALICE, 1): rlp.encode([1_000, 200]),
        balance_key(BOB, 1): rlp.encode([5, 0]),
        balance_key(BOB, 2): rlp.encode([0, 7]),
    })
    return engine, root


def proof_of(engine: CommitEngine, account: bytes, asset: int, root: bytes) -> EscapeProof:
    key = balance_key(account, asset)
    return EscapeProof(account, asset, engine.get(key), tuple(engine.prove(key)), root)


def test_local_check_accepts_the_committed_leaf_and_refuses_everything_else() -> None:
    engine, root = committed_trie()
    leaf = check_escape_proof(proof_of(engine, ALICE, 1, root), root)
    assert (leaf.balance, leaf.reserved) == (1_000, 200)  # the bridge pays balance, reserved included
    with pytest.raises(NothingToWithdraw):
        check_escape_proof(proof_of(engine, BOB, 2, root), root)  # balance 0, reserved 7
    with pytest.raises(NothingToWithdraw):
        check_escape_proof(proof_of(engine, ALICE, 2, root), root)  # absent
    good = proof_of(engine, ALICE, 1, root)
    forged = EscapeProof(ALICE, 1, rlp.encode([10**9, 0]), good.nodes, root)
    with pytest.raises(ProofMismatch):
        check_escape_proof(forged, root)
    with pytest.raises(ProofMismatch):
        check_escape_proof(EscapeProof(ALICE, 1, good.value, good.nodes, None), b"\x01" * 32)
    bob = proof_of(engine, BOB, 1, root)
    with pytest.raises(ProofMismatch):  # Bob's nodes do not prove Alice's key
        check_escape_proof(EscapeProof(ALICE, 1, bob.value, bob.nodes, root), root)


def test_balance_leaf_values_decode_like_the_bridge() -> None:
    assert decode_balance_value(b"") == (0, 0)
    assert decode_balance_value(rlp.encode([3, 1, 99])) == (3, 1)  # appended fields are ignored
    for bad in (b"\x01", rlp.encode([3]), rlp.encode([b"\x00\x01", 0]), b"\xc3\x01"):
        with pytest.raises(ValueError):
            decode_balance_value(bad)


def test_proof_documents_round_trip_in_the_tz_getproof_shape() -> None:
    engine, root = committed_trie()
    proof = proof_of(engine, ALICE, 1, root)
    doc = proof_to_json(proof)
    assert doc["balances"][0]["balance"] == "1000" and doc["stateRoot"] == "0x" + root.hex()
    assert proof_from_json(json.loads(json.dumps(doc)), ALICE, 1) == proof
    assert proof_from_json(doc["balances"][0], ALICE, 1) == EscapeProof(ALICE, 1, proof.value, proof.nodes, None)
    for account, asset in ((BOB, 1), (ALICE, 2)):
        with pytest.raises(ProofSourceError):
            proof_from_json(doc, account, asset)
    broken_docs: list[object] = [[], {"balances": "x"}, {"proof": "0x00"}, {"proof": ["zz"]}, {"proof": [], "value": "12"}]
    for broken in broken_docs:
        with pytest.raises(ProofSourceError):
            proof_from_json(broken, ALICE, 1)
