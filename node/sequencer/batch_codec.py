"""The batch data format: what the bridge carries as calldata so the EVM chain alone can rebuild
TradeZone.

``data = 0x01 ‖ zlib(RLP([block_0, block_1, ...]))`` where each ``block_i`` is a block's canonical
encoding (``blocks.encode_block``: header with every root, and the transactions). The first byte
is the format version. Decoding rejects an unknown version, a corrupt stream, trailing bytes and
an expansion past ``MAX_DECOMPRESSED`` (a batch cannot make a replaying node run out of memory).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import rlp

from node.tradezone.blocks import Block, decode_block
from proofs.encoding import encode_length_prefix

VERSION = 1
MAX_DECOMPRESSED = 64 * 1024 * 1024


class BatchDecodeError(ValueError):
    """Batch data that is not a well-formed batch."""


def encode_batch(encoded_blocks: Sequence[bytes]) -> bytes:
    """The batch data of blocks given by their canonical encodings (as the chain store holds
    them). zlib releases the GIL, so this may run in a thread beside the event loop; the RLP list
    is joined by hand (a few header bytes per block) so the GIL is held only briefly."""
    parts = []
    for block in encoded_blocks:
        if len(block) != 1 or block[0] >= 0x80:  # a single byte below 0x80 is its own encoding
            parts.append(encode_length_prefix(len(block), 0x80))
        parts.append(block)
    size = sum(map(len, parts))
    payload = b"".join([encode_length_prefix(size, 0xC0), *parts])
    return bytes((VERSION,)) + zlib.compress(payload, 6)


def decode_batch(data: bytes) -> list[Block]:
    if not data or data[0] != VERSION:
        raise BatchDecodeError(f"unknown batch format version {data[:1].hex() or 'none'}")
    inflater = zlib.decompressobj()
    try:
        payload = inflater.decompress(data[1:], MAX_DECOMPRESSED)
    except zlib.error as err:
        raise BatchDecodeError(f"corrupt batch data: {err}") from err
    if inflater.unconsumed_tail:
        raise BatchDecodeError(f"batch data expands past {MAX_DECOMPRESSED} bytes")
    if not inflater.eof or inflater.unused_data:
        raise BatchDecodeError("batch data is truncated or has trailing bytes")
    try:
        items = rlp.decode(payload)
    except rlp.DecodingError as err:
        raise BatchDecodeError(f"batch payload is not RLP: {err}") from err
    if not isinstance(items, list):
        raise BatchDecodeError("batch payload is not a list of blocks")
    return [decode_block(bytes(item)) for item in items]
