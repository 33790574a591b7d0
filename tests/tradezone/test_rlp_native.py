"""The native RLP decoder (``proofs._commit.rlp_decode``) against the Python one it stands in for:
the same item for every canonical encoding, a refusal for everything the Python decoder refuses
(random bytes, mutated encodings, every non-canonical form, lists nested too deep)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.tradezone.errors import DecodeError, NonCanonicalEncoding
from node.tradezone.hashing import native_module
from node.tradezone.transactions import RlpItem, _decode_item, rlp_decode, rlp_encode

native = native_module()
pytestmark = pytest.mark.skipif(native is None, reason="the native extension is not built here")


def python_decode(data: bytes, depth: int) -> RlpItem:
    item, end = _decode_item(data, 0, len(data), depth)
    if end != len(data):
        raise NonCanonicalEncoding("trailing bytes")
    return item


def agree(data: bytes, depth: int) -> None:
    try:
        want = python_decode(data, depth)
    except DecodeError:
        with pytest.raises(ValueError):
            native.rlp_decode(data, depth)  # type: ignore[union-attr]
        with pytest.raises(DecodeError):
            rlp_decode(data, depth)  # the public decoder names the fault
        return
    assert native.rlp_decode(data, depth) == want  # type: ignore[union-attr]
    assert rlp_decode(data, depth) == want


items = st.recursive(st.binary(max_size=80), lambda children: st.lists(children, max_size=6), max_leaves=30)


@settings(max_examples=400, deadline=None)
@given(items, st.integers(min_value=0, max_value=6))
def test_canonical_encodings_decode_alike_at_every_depth_bound(item: RlpItem, depth: int) -> None:
    agree(rlp_encode(item), depth)


@settings(max_examples=400, deadline=None)
@given(items, st.data())
def test_mutated_encodings_are_refused_or_decoded_alike(item: RlpItem, data: st.DataObject) -> None:
    encoded = bytearray(rlp_encode(item))
    action = data.draw(st.sampled_from(["flip", "cut", "append", "insert"]))
    at = data.draw(st.integers(min_value=0, max_value=len(encoded)))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    if action == "flip" and at < len(encoded):
        encoded[at] = byte
    elif action == "cut":
        del encoded[at:]
    elif action == "append":
        encoded.append(byte)
    else:
        encoded.insert(at, byte)
    agree(bytes(encoded), 8)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_are_refused_or_decoded_alike(data: bytes) -> None:
    agree(data, 8)


@pytest.mark.parametrize("data", [
    b"", b"\x81\x05", b"\x81\x7f", b"\x82\x05", b"\xb8\x37" + bytes(55), b"\xb8\x38" + bytes(55),
    b"\xb9\x00\x38" + bytes(56), b"\xbf" + b"\xff" * 8, b"\xc1", b"\xc2\x01", b"\xf8\x37" + b"\x01" * 55,
    b"\xf9\x00\x38" + b"\x01" * 56, b"\xff" + b"\xff" * 8, b"\x01\x02", b"\xc0\x00",
    b"\xc1\x81", b"\xc3\x82\x01", b"\xb8", b"\xf8",
])
def test_each_non_canonical_form_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        native.rlp_decode(data, 8)  # type: ignore[union-attr]
    with pytest.raises(DecodeError):
        rlp_decode(data)


def test_lists_nested_past_the_bound_are_refused_and_within_it_decoded() -> None:
    nested: RlpItem = []
    for _ in range(5):
        nested = [nested]
    encoded = rlp_encode(nested)  # six lists
    assert native.rlp_decode(encoded, 6) == nested  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        native.rlp_decode(encoded, 5)  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        native.rlp_decode(bytearray(encoded), 6)  # type: ignore[union-attr]
