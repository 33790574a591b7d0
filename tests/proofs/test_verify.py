"""verify_proof: honest proofs from both tries verify, every kind of bad proof gets its named error."""

from __future__ import annotations

import os
import random

import pytest
import rlp
from hypothesis import given, settings
from hypothesis import strategies as st
from trie import HexaryTrie

from proofs.encoding import keccak256
from proofs.engine import CommitEngine
from proofs.store import MemoryStore
from proofs.verify import (
    EMPTY_TRIE_ROOT,
    ExtraNodesError,
    InlineNodeError,
    MalformedProofError,
    PathMismatchError,
    ProofError,
    RootMismatchError,
    TamperedNodeError,
    TruncatedProofError,
    verify_proof,
)

_keccak = keccak256


@pytest.fixture(scope="module")
def populated() -> tuple[CommitEngine, HexaryTrie, dict[bytes, bytes]]:
    rng = random.Random(7)
    contents = {rng.randbytes(32): rng.randbytes(rng.choice((1, 3, 40))) for _ in range(3_000)}
    engine = CommitEngine(MemoryStore())
    engine.commit(contents)
    reference = HexaryTrie({})
    for key, value in contents.items():
        reference[key] = value
    return engine, reference, contents


def test_presence_and_absence_proofs_from_both_tries_verify(populated) -> None:
    engine, reference, contents = populated
    root = engine.root
    for key in list(contents)[:200]:
        assert verify_proof(root, key, engine.prove(key)) == contents[key]
        assert verify_proof(root, key, [rlp.encode(n) for n in reference.get_proof(key)]) == contents[key]
    for _ in range(200):
        absent = os.urandom(32)
        assert verify_proof(root, absent, engine.prove(absent)) == b""
        assert verify_proof(root, absent, [rlp.encode(n) for n in reference.get_proof(absent)]) == b""


def test_a_proof_checked_against_another_root_is_refused(populated) -> None:
    engine, _, contents = populated
    key = next(iter(contents))
    with pytest.raises(RootMismatchError) as caught:
        verify_proof(os.urandom(32), key, engine.prove(key))
    assert caught.value.got == _keccak(engine.prove(key)[0])


def test_a_truncated_proof_is_refused(populated) -> None:
    engine, _, contents = populated
    key = next(iter(contents))
    proof = engine.prove(key)
    for cut in range(len(proof)):
        with pytest.raises(TruncatedProofError):
            verify_proof(engine.root, key, proof[:cut])


def test_extra_nodes_after_the_answer_are_refused(populated) -> None:
    engine, _, contents = populated
    key = next(iter(contents))
    with pytest.raises(ExtraNodesError):
        verify_proof(engine.root, key, [*engine.prove(key), rlp.encode([b"\x20", b"junk"])])


def test_a_proof_for_another_key_is_refused_as_a_path_mismatch(populated) -> None:
    engine, _, contents = populated
    keys = list(contents)
    key = keys[0]
    other = next(k for k in keys[1:] if k.hex()[0] != key.hex()[0])
    with pytest.raises(PathMismatchError):
        verify_proof(engine.root, other, engine.prove(key))


def test_a_leaf_of_a_neighbour_proves_absence_but_a_proof_down_another_branch_does_not(populated) -> None:
    engine, _, contents = populated
    key = next(iter(contents))
    neighbour = key[:-1] + bytes([key[-1] ^ 1])  # same path down to the leaf, different leaf key
    assert verify_proof(engine.root, neighbour, engine.prove(neighbour)) == b""
    assert engine.prove(neighbour) == engine.prove(key)
    with pytest.raises(PathMismatchError):
        verify_proof(engine.root, bytes([key[0] ^ 0x80]) + key[1:], engine.prove(key))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_refused(populated, data: st.DataObject) -> None:
    engine, reference, contents = populated
    key = data.draw(st.sampled_from(sorted(contents)[:50]))
    use_reference = data.draw(st.booleans())
    proof = [rlp.encode(n) for n in reference.get_proof(key)] if use_reference else engine.prove(key)
    index = data.draw(st.integers(0, len(proof) - 1))
    position = data.draw(st.integers(0, len(proof[index]) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(proof[index])
    tampered[position] ^= flip
    bad = [*proof[:index], bytes(tampered), *proof[index + 1 :]]
    with pytest.raises(ProofError):
        verify_proof(engine.root, key, bad)


def test_a_changed_node_deep_in_the_proof_is_a_tampered_node(populated) -> None:
    engine, _, contents = populated
    key = next(iter(contents))
    proof = engine.prove(key)
    leaf = rlp.decode(proof[-1])
    forged = rlp.encode([leaf[0], b"\xff" * 40])  # a different balance, still a well-formed leaf
    with pytest.raises(TamperedNodeError) as caught:
        verify_proof(engine.root, key, [*proof[:-1], forged])
    assert caught.value.depth == len(proof) - 1


def _branch(slots: dict[int, bytes]) -> bytes:
    """RLP of a branch whose items are given raw (already RLP) at the listed slots."""
    items = [slots.get(i, b"\x80") for i in range(17)]
    payload = b"".join(items)
    return rlp.codec.length_prefix(len(payload), 0xC0) + payload


def test_a_short_node_referenced_by_hash_is_refused() -> None:
    leaf = rlp.encode([b"\x3f", b"\x01"])  # embedded-sized leaf (path: one nibble)
    assert len(leaf) < 32
    root_node = _branch({0: rlp.encode(_keccak(leaf)), 1: rlp.encode(_keccak(leaf))})
    key = bytes([0x0F])
    with pytest.raises(InlineNodeError):
        verify_proof(_keccak(root_node), key, [root_node, leaf])


def test_an_embedded_node_of_32_bytes_or_more_is_refused() -> None:
    leaf = rlp.encode([b"\x3f", b"\x01" * 40])
    assert len(leaf) >= 32
    root_node = _branch({0: leaf, 1: leaf})
    with pytest.raises(InlineNodeError):
        verify_proof(_keccak(root_node), bytes([0x0F]), [root_node])


def test_a_short_entry_that_differs_from_the_embedded_node_is_refused() -> None:
    leaf = rlp.encode([b"\x3f", b"\x01"])
    other = rlp.encode([b"\x3f", b"\x02"])
    root_node = _branch({0: leaf, 1: leaf})
    assert verify_proof(_keccak(root_node), bytes([0x0F]), [root_node]) == b"\x01"
    assert verify_proof(_keccak(root_node), bytes([0x0F]), [root_node, leaf]) == b"\x01"
    with pytest.raises(InlineNodeError):
        verify_proof(_keccak(root_node), bytes([0x0F]), [root_node, other])


def test_non_canonical_rlp_is_refused_even_when_it_hashes_to_the_root() -> None:
    value = b"\x05"
    path = b"\x20" + b"\x00" * 32
    canonical = rlp.encode([path, value])
    long_form = b"\xf8" + bytes([len(canonical) - 1]) + canonical[1:]  # payload < 56 in long form
    with pytest.raises(MalformedProofError):
        verify_proof(_keccak(long_form), b"\x00" * 32, [long_form])
    padded_value = rlp.encode(path) + b"\x81\x05"  # single byte < 0x80 with a length prefix
    node = rlp.codec.length_prefix(len(padded_value), 0xC0) + padded_value
    with pytest.raises(MalformedProofError):
        verify_proof(_keccak(node), b"\x00" * 32, [node])


def test_the_empty_trie_proves_absence_and_nothing_else() -> None:
    assert verify_proof(EMPTY_TRIE_ROOT, os.urandom(32), []) == b""
    assert verify_proof(EMPTY_TRIE_ROOT, os.urandom(32), [b"\x80"]) == b""
    with pytest.raises(TruncatedProofError):
        verify_proof(os.urandom(32), os.urandom(32), [])


def test_wrongly_typed_inputs_are_malformed() -> None:
    with pytest.raises(MalformedProofError):
        verify_proof(b"\x00" * 31, b"k", [])
    with pytest.raises(MalformedProofError):
        verify_proof(EMPTY_TRIE_ROOT, b"k", ["00"])  # type: ignore[list-item]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=80), min_size=1, max_size=4), st.binary(min_size=32, max_size=32))
def test_arbitrary_bytes_never_verify_against_a_real_root(populated, junk: list[bytes], key: bytes) -> None:
    engine, _, _ = populated
    with pytest.raises(ProofError):
        verify_proof(engine.root, key, junk)


def test_py_trie_proofs_of_short_keys_with_branch_values_and_embedded_nodes_verify() -> None:
    reference = HexaryTrie({})
    contents = {b"\x01": b"\x02", b"\x01\x02": b"\x03", b"\x11": b"\x04", b"\x01\x02\x03": b"x" * 40}
    for key, value in contents.items():
        reference[key] = value
    for key in [*contents, b"\x12", b"\x01\x03", b"", b"\x01\x02\x03\x04"]:
        proof = [rlp.encode(node) for node in reference.get_proof(key)]
        assert verify_proof(reference.root_hash, key, proof) == contents.get(key, b"")
