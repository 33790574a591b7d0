"""The binary Merkle tree of the transactions and receipts roots: the root against a
textbook reference and hand-built small trees, and inclusion proofs (every index of odd and
even counts, tampered siblings, wrong index or count, malformed proofs)."""

from __future__ import annotations

import pytest
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.tradezone.errors import InvalidMerkleProof, TradeZoneError
from node.tradezone.merkle import (
    EMPTY_MERKLE_ROOT,
    merkle_proof,
    merkle_root,
    merkle_root_of_hashes,
    verify_merkle_proof,
)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
items_lists = st.lists(st.binary(max_size=70), min_size=1, max_size=40)


def leaf(item: bytes) -> bytes:
    return keccak(b"\x00" + keccak(item))


def node(left: bytes, right: bytes) -> bytes:
    return keccak(b"\x01" + left + right)


def reference_root(items: list[bytes]) -> bytes:
    """The tree written as its definition: split the level into pairs, carry an odd last node."""
    if not items:
        return keccak(b"")
    level = [leaf(item) for item in items]
    while len(level) > 1:
        upper = []
        for start in range(0, len(level), 2):
            pair = level[start : start + 2]
            upper.append(node(pair[0], pair[1]) if len(pair) == 2 else pair[0])
        level = upper
    return level[0]


def test_empty_root_is_keccak_of_nothing() -> None:
    assert merkle_root([]) == merkle_root_of_hashes([]) == EMPTY_MERKLE_ROOT == keccak(b"")


def test_small_trees_by_hand() -> None:
    a, b, c, d, e = b"a", b"b", b"c", b"d", b"e"
    assert merkle_root([a]) == leaf(a)
    assert merkle_root([a, b]) == node(leaf(a), leaf(b))
    assert merkle_root([a, b, c]) == node(node(leaf(a), leaf(b)), leaf(c))
    assert merkle_root([a, b, c, d]) == node(node(leaf(a), leaf(b)), node(leaf(c), leaf(d)))
    # Five items: e is carried up twice, then paired with the root of the first four.
    assert merkle_root([a, b, c, d, e]) == node(node(node(leaf(a), leaf(b)), node(leaf(c), leaf(d))), leaf(e))


def test_an_empty_item_is_an_item() -> None:
    assert merkle_root([b""]) == leaf(b"") != EMPTY_MERKLE_ROOT


@PROPERTY
@given(st.lists(st.binary(max_size=70), max_size=70))
def test_root_equals_the_reference_and_the_hash_form(items: list[bytes]) -> None:
    root = merkle_root(items)
    assert root == reference_root(items)
    assert root == merkle_root_of_hashes([keccak(item) for item in items])


@PROPERTY
@given(items_lists, st.data())
def test_root_commits_to_content_and_order(items: list[bytes], data: st.DataObject) -> None:
    root = merkle_root(items)
    index = data.draw(st.integers(0, len(items) - 1))
    changed = list(items)
    changed[index] = items[index] + b"\x00"
    assert merkle_root(changed) != root
    if len(set(items)) > 1:
        assert merkle_root(items[::-1]) != root or items == items[::-1]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 33])
def test_every_index_proves_for_odd_and_even_counts(count: int) -> None:
    items = [i.to_bytes(2, "big") * (i % 3 + 1) for i in range(count)]
    root = merkle_root(items)
    for index in range(count):
        proof = merkle_proof(items, index)
        verify_merkle_proof(root, items[index], index, count, proof)
        assert len(proof) <= max(1, (count - 1).bit_length())


def test_a_carried_up_node_adds_no_sibling() -> None:
    items = [b"a", b"b", b"c"]
    assert merkle_proof(items, 2) == [node(leaf(b"a"), leaf(b"b"))]
    assert merkle_proof(items, 0) == [leaf(b"b"), leaf(b"c")]
    assert merkle_proof([b"a"], 0) == []


@PROPERTY
@given(items_lists, st.data())
def test_proofs_hold_and_any_tampering_fails(items: list[bytes], data: st.DataObject) -> None:
    count = len(items)
    root = merkle_root(items)
    index = data.draw(st.integers(0, count - 1))
    proof = merkle_proof(items, index)
    verify_merkle_proof(root, items[index], index, count, proof)
    # another item at that index
    with pytest.raises(InvalidMerkleProof):
        verify_merkle_proof(root, items[index] + b"!", index, count, proof)
    # a tampered sibling
    if proof:
        at = data.draw(st.integers(0, len(proof) - 1))
        flip = data.draw(st.integers(0, 31))
        tampered = list(proof)
        tampered[at] = tampered[at][:flip] + bytes([tampered[at][flip] ^ 1]) + tampered[at][flip + 1 :]
        with pytest.raises(InvalidMerkleProof):
            verify_merkle_proof(root, items[index], index, count, tampered)
    # the item claimed at another index (unless an equal item sits there)
    other = data.draw(st.integers(0, count - 1))
    if items[other] != items[index]:
        with pytest.raises(InvalidMerkleProof):
            verify_merkle_proof(root, items[index], other, count, proof)
    # another root
    with pytest.raises(InvalidMerkleProof):
        verify_merkle_proof(keccak(root), items[index], index, count, proof)


def test_wrong_index_fails_even_where_the_path_shape_matches() -> None:
    items = [b"a", b"b", b"c", b"d"]
    root = merkle_root(items)
    proof = merkle_proof(items, 1)
    verify_merkle_proof(root, b"b", 1, 4, proof)
    for index in (0, 2, 3):
        with pytest.raises(InvalidMerkleProof):
            verify_merkle_proof(root, b"b", index, 4, proof)


@pytest.mark.parametrize(
    ("index", "count"),
    [(-1, 4), (4, 4), (0, 0), (True, 4), (1.0, 4)],
)
def test_index_outside_the_count_is_refused(index: object, count: int) -> None:
    items = [b"a", b"b", b"c", b"d"]
    with pytest.raises(InvalidMerkleProof, match="item count"):
        verify_merkle_proof(merkle_root(items), b"a", index, count, merkle_proof(items, 0))  # type: ignore[arg-type]


def test_malformed_proofs_are_refused_with_their_reason() -> None:
    items = [b"a", b"b", b"c", b"d", b"e"]
    root = merkle_root(items)
    proof = merkle_proof(items, 0)
    with pytest.raises(InvalidMerkleProof, match="too short"):
        verify_merkle_proof(root, b"a", 0, 5, proof[:-1])
    with pytest.raises(InvalidMerkleProof, match="too long"):
        verify_merkle_proof(root, b"a", 0, 5, [*proof, proof[0]])
    with pytest.raises(InvalidMerkleProof, match="not 32 bytes"):
        verify_merkle_proof(root, b"a", 0, 5, [proof[0][:31], *proof[1:]])
    with pytest.raises(InvalidMerkleProof, match="not 32 bytes"):
        verify_merkle_proof(root, b"a", 0, 5, [proof[0].hex(), *proof[1:]])  # type: ignore[list-item]
    assert issubclass(InvalidMerkleProof, TradeZoneError)
    assert InvalidMerkleProof.reason == "invalid_merkle_proof"


def test_proof_of_an_index_outside_the_items_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        merkle_proof([b"a", b"b"], 2)
    with pytest.raises(IndexError):
        merkle_proof([], 0)


def test_the_count_comes_from_the_block_not_from_the_root() -> None:
    # Documented property: the root does not bind the count, so the verifier must use the
    # block's own count. Item c of [a, b, c] also "verifies" as index 4 of a claimed 5 items.
    items = [b"a", b"b", b"c"]
    root = merkle_root(items)
    proof = merkle_proof(items, 2)
    verify_merkle_proof(root, b"c", 2, 3, proof)
    verify_merkle_proof(root, b"c", 4, 5, proof)
    with pytest.raises(InvalidMerkleProof):
        verify_merkle_proof(root, b"c", 3, 4, proof)


def test_shared_merkle_vector_verifies_against_the_reference_and_regenerates() -> None:
    import json

    from tests.vectors.generate import MERKLE_VECTOR, build_merkle_vector, render

    vector = json.loads(MERKLE_VECTOR.read_text())
    assert len(vector["cases"]) >= 8
    for case in vector["cases"]:
        items = [bytes.fromhex(item[2:]) for item in case["items"]]
        root = bytes.fromhex(case["root"][2:])
        assert reference_root(items) == root
        assert len(case["proofs"]) == len(items)
        for index, proof in enumerate(case["proofs"]):
            verify_merkle_proof(root, items[index], index, len(items), [bytes.fromhex(s[2:]) for s in proof])
    assert MERKLE_VECTOR.read_text() == render(build_merkle_vector())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=1100))
def test_the_native_tree_and_the_python_tree_agree_with_the_reference(items: list[bytes]) -> None:
    """Lists take the native tree when the extension is built (Keccak eight at a time, items of
    several Keccak blocks, odd levels); other sequences take the Python loop. Both give the
    reference root, from the items and from their hashes."""
    expected = reference_root(items)
    hashes = [keccak(item) for item in items]
    assert merkle_root(items) == merkle_root(tuple(items)) == expected
    assert merkle_root_of_hashes(hashes) == merkle_root_of_hashes(tuple(hashes)) == expected


def test_the_native_tree_refuses_what_is_not_a_list_of_bytes_or_of_32_byte_hashes() -> None:
    native = pytest.importorskip("proofs._commit")
    with pytest.raises(ValueError, match="32 bytes"):
        native.merkle_root([keccak(b"a"), b"short"], True)
    with pytest.raises(TypeError):
        native.merkle_root([b"a", "not bytes"], False)
    with pytest.raises(TypeError):
        native.merkle_root((b"a",), False)
    assert native.merkle_root([], False) == EMPTY_MERKLE_ROOT
