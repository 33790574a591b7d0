"""The bridge's on-chain Merkle-Patricia verifier against proofs from py-trie and the proofs package."""

from __future__ import annotations

import random

import pytest
import rlp
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trie import HexaryTrie

from node.evm.contracts import BRIDGE_ADDRESS, EMPTY_TRIE_ROOT
from proofs.engine import CommitEngine
from proofs.store import MemoryStore
from tests.contracts.harness import Contract, Harness, TxFailed


@pytest.fixture(scope="module")
def verifier() -> Contract:
    return Harness().contract("Bridge", BRIDGE_ADDRESS)


def pytrie_proof(trie: HexaryTrie, key: bytes) -> list[bytes]:
    """py-trie's proof (it lists embedded nodes too), RLP-encoded node by node."""
    return [rlp.encode(node) for node in trie.get_proof(key)]


def geth_style(proof: list[bytes]) -> list[bytes]:
    """The same proof without entries for embedded nodes (EIP-1186 as geth builds it)."""
    return [node for i, node in enumerate(proof) if i == 0 or len(node) >= 32]


def random_trie(rnd: random.Random, size: int, key_len: tuple[int, int], value_len: tuple[int, int]) -> dict:
    items = {}
    for _ in range(size):
        key = rnd.randbytes(rnd.randint(*key_len))
        items[key] = rnd.randbytes(rnd.randint(*value_len))
    return items


def build(items: dict[bytes, bytes]) -> HexaryTrie:
    trie = HexaryTrie({})
    with trie.squash_changes() as batch:
        for key, value in items.items():
            batch[key] = value
    return trie


def test_random_tries_with_embedded_nodes_and_branch_values(verifier: Contract) -> None:
    rnd = random.Random(2024)
    embedded_seen = 0
    branch_values_seen = 0
    for _ in range(8):
        items = random_trie(rnd, rnd.randint(1, 60), (1, 3), (1, 12))
        trie = build(items)
        for key in rnd.sample(sorted(items), min(4, len(items))):
            proof = pytrie_proof(trie, key)
            embedded_seen += sum(1 for node in proof[1:] if len(node) < 32)
            branch_values_seen += any(len(rlp.decode(n)) == 17 and rlp.decode(n)[16] for n in proof[-1:])
            assert verifier.call("verifyMerkleProof", trie.root_hash, key, proof) == items[key]
            assert verifier.call("verifyMerkleProof", trie.root_hash, key, geth_style(proof)) == items[key]
        absent = rnd.randbytes(rnd.randint(1, 4))
        if absent not in items:
            assert (
                verifier.call("verifyMerkleProof", trie.root_hash, absent, pytrie_proof(trie, absent)) == b""
            )
    assert embedded_seen > 0, "the corpus must exercise embedded (inline) nodes"
    assert branch_values_seen > 0, "the corpus must exercise values stored in branch nodes"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.dictionaries(
        st.binary(min_size=1, max_size=32), st.binary(min_size=1, max_size=100), min_size=1, max_size=40
    ),
    probe=st.binary(min_size=1, max_size=32),
)
def test_verifier_agrees_with_pytrie(verifier: Contract, items: dict[bytes, bytes], probe: bytes) -> None:
    trie = build(items)
    key = sorted(items)[len(items) // 2]
    assert verifier.call("verifyMerkleProof", trie.root_hash, key, pytrie_proof(trie, key)) == items[key]
    assert verifier.call("verifyMerkleProof", trie.root_hash, probe, pytrie_proof(trie, probe)) == items.get(
        probe, b""
    )


def test_proofs_package_proofs_of_hashed_keys(verifier: Contract) -> None:
    rnd = random.Random(5)
    engine = CommitEngine(MemoryStore())
    items = {
        keccak(rnd.randbytes(8)): rlp.encode([rnd.randrange(10**20), rnd.randrange(10**6)])
        for _ in range(2000)
    }
    root = engine.commit(items)
    for key in rnd.sample(sorted(items), 10):
        assert verifier.call("verifyMerkleProof", root, key, engine.prove(key)) == items[key]
    absent = keccak(b"absent")
    assert verifier.call("verifyMerkleProof", root, absent, engine.prove(absent)) == b""


def test_empty_trie(verifier: Contract) -> None:
    assert verifier.call("verifyMerkleProof", EMPTY_TRIE_ROOT, b"\x01", []) == b""
    with pytest.raises(TxFailed, match="empty proof for a non-empty trie"):
        verifier.call("verifyMerkleProof", keccak(b"x"), b"\x01", [])


@pytest.fixture(scope="module")
def sample() -> tuple[HexaryTrie, dict[bytes, bytes]]:
    items = random_trie(random.Random(11), 300, (32, 32), (20, 40))
    return build(items), items


def test_forged_truncated_overlong_and_wrong_root_proofs_revert(
    verifier: Contract, sample: tuple[HexaryTrie, dict[bytes, bytes]]
) -> None:
    trie, items = sample
    key, other = sorted(items)[:2]
    proof = pytrie_proof(trie, key)
    assert len(proof) >= 3
    forged_leaf = rlp.encode([rlp.decode(proof[-1])[0], b"\x01" * 30])
    cases = [
        (proof[:-1] + [forged_leaf], "node hash does not match"),
        ([proof[0][:-1] + b"\x00"] + proof[1:], "node hash does not match"),
        (proof[:-1], "proof too short"),
        (proof + [proof[-1]], "proof has extra nodes"),
        (proof + [b"\xc0"], "proof has extra nodes"),
    ]
    for bad, reason in cases:
        with pytest.raises(TxFailed, match=reason):
            verifier.call("verifyMerkleProof", trie.root_hash, key, bad)
    with pytest.raises(TxFailed, match="node hash does not match"):
        verifier.call("verifyMerkleProof", keccak(b"another root"), key, proof)
    # Another key's proof proves nothing about this key: it either fails or shows absence.
    try:
        assert (
            verifier.call("verifyMerkleProof", trie.root_hash, key, pytrie_proof(trie, other)) != items[key]
        )
    except TxFailed:
        pass


def test_malformed_nodes_revert(verifier: Contract) -> None:
    for node, reason in [
        (b"\x80", "not one RLP list"),
        (b"\xc3\x80\x80\x80", "neither a branch nor a leaf"),
        (b"\xc5\x82\x20\x01", "truncated RLP"),
        (b"\xc4\x81\x50\x81\x01", "bad hex-prefix flag"),
    ]:
        with pytest.raises(TxFailed, match=reason):
            verifier.call("verifyMerkleProof", keccak(node), b"\x01", [node])
