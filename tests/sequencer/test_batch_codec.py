"""The batch data format: the hand-joined RLP list equals the RLP library's encoding, and
decoding refuses every malformed batch with BatchDecodeError."""

from __future__ import annotations

import zlib

import pytest
import rlp
from hypothesis import given
from hypothesis import strategies as st

from node.sequencer.batch_codec import MAX_DECOMPRESSED, VERSION, BatchDecodeError, decode_batch, encode_batch

item = st.one_of(st.binary(max_size=3), st.binary(min_size=50, max_size=70), st.binary(max_size=600))


@given(st.lists(item, max_size=12))
def test_encoding_is_the_rlp_list_of_the_blocks_compressed(blocks: list[bytes]) -> None:
    data = encode_batch(blocks)
    assert data[0] == VERSION
    assert zlib.decompress(data[1:]) == rlp.encode(blocks)


def test_a_long_list_takes_the_long_list_header() -> None:
    blocks = [bytes([i % 251 + 1]) * (i * 97) for i in range(200)]
    assert zlib.decompress(encode_batch(blocks)[1:]) == rlp.encode(blocks)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "unknown batch format version none"),
        (b"\x02" + zlib.compress(rlp.encode([])), "unknown batch format version 02"),
        (b"\x01not zlib", "corrupt batch data"),
        (b"\x01" + zlib.compress(rlp.encode([])) + b"\x00", "truncated or has trailing bytes"),
        (b"\x01" + zlib.compress(rlp.encode([]))[:-2], "truncated or has trailing bytes"),
        (b"\x01" + zlib.compress(b"\x00" * (MAX_DECOMPRESSED + 1)), "expands past"),
        (b"\x01" + zlib.compress(b"\xc1"), "not RLP"),
        (b"\x01" + zlib.compress(rlp.encode(b"block")), "not a list of blocks"),
    ],
)
def test_malformed_batches_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(BatchDecodeError, match=message):
        decode_batch(data)
