"""TradeZone blocks: header and block encodings, header hash, transactions root, header rules."""

from __future__ import annotations

import pytest
import rlp
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.tradezone.blocks import (
    BLANK_ROOT,
    ZERO_HASH,
    Block,
    Header,
    decode_block,
    decode_header,
    encode_block,
    encode_header,
    header_hash,
    transactions_root,
    validate_header,
)
from node.tradezone.errors import (
    BlockDecodeError,
    BlockNumberMismatch,
    DecodeError,
    InvalidBlock,
    L1CursorMismatch,
    L1MessageOutOfOrder,
    L1OriginDecreasing,
    ParentHashMismatch,
    RootMismatch,
    TimestampNotIncreasing,
    ValueOutOfRange,
)
from node.tradezone.merkle import EMPTY_MERKLE_ROOT, merkle_root, merkle_root_of_hashes
from node.tradezone.signing import sign_action
from node.tradezone.transactions import (
    CancelAll,
    DepositMessage,
    ForcedWithdrawalMessage,
    PlaceOrder,
    SignedTx,
    Transaction,
    encode_transaction,
)
from tests.tradezone.test_transactions import nested_lists
from tests.tradezone.test_transactions import transactions as transaction_strategy

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u64 = st.integers(0, 2**64 - 1)
hash32 = st.binary(min_size=32, max_size=32)
headers = st.builds(Header, u64, hash32, u64, u64, u64, hash32, hash32, hash32)

KEY = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
ALICE = bytes.fromhex("70997970c51812dc3a010c7d01b50e0d17dc79c8")


@PROPERTY
@given(headers)
def test_header_round_trips_and_hashes_its_standard_rlp(header: Header) -> None:
    encoded = encode_header(header)
    assert decode_header(encoded) == header
    assert encoded == rlp.encode(
        [
            header.number,
            header.parent_hash,
            header.timestamp_ms,
            header.l1_origin,
            header.l1_cursor,
            header.transactions_root,
            header.receipts_root,
            header.state_root,
        ]
    )
    assert header_hash(header) == keccak(encoded)


def _header_fields() -> list[object]:
    return [5, b"\x11" * 32, 1_790_000_000_000, 42, 3, BLANK_ROOT, BLANK_ROOT, b"\x22" * 32]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f.__setitem__(0, b"\x00\x05"),  # leading zero
        lambda f: f.__setitem__(2, 2**64),  # out of uint64
        lambda f: f.__setitem__(1, b"\x11" * 31),  # short hash
        lambda f: f.__setitem__(7, [b"\x22" * 32]),  # list where a hash belongs
        lambda f: f.pop(),  # 7 fields
        lambda f: f.append(b""),  # 9 fields
    ],
)
def test_non_canonical_or_out_of_range_headers_are_rejected(mutate: object) -> None:
    fields = _header_fields()
    assert decode_header(rlp.encode(fields)).number == 5
    mutate(fields)  # type: ignore[operator]
    with pytest.raises(BlockDecodeError):
        decode_header(rlp.encode(fields))


def test_header_encoding_refuses_out_of_range_fields() -> None:
    with pytest.raises(ValueOutOfRange):
        encode_header(Header(-1, ZERO_HASH, 0, 0, 0, BLANK_ROOT, BLANK_ROOT, BLANK_ROOT))
    with pytest.raises(ValueOutOfRange):
        encode_header(Header(0, b"", 0, 0, 0, BLANK_ROOT, BLANK_ROOT, BLANK_ROOT))
    with pytest.raises(BlockDecodeError):
        decode_header(rlp.encode(_header_fields()) + b"\x00")


@PROPERTY
@given(headers, st.lists(transaction_strategy, max_size=6))
def test_block_round_trips_byte_for_byte(header: Header, txs: list[SignedTx]) -> None:
    block = Block(header, tuple(txs))
    encoded = encode_block(block)
    decoded = decode_block(encoded)
    assert decoded == block
    assert encode_block(decoded) == encoded
    assert rlp.decode(encoded)[1] == [encode_transaction(tx) for tx in txs]


def test_a_block_with_a_bad_transaction_is_a_block_decode_error_caused_by_it() -> None:
    header = Header(1, ZERO_HASH, 1, 0, 0, BLANK_ROOT, BLANK_ROOT, BLANK_ROOT)
    good = encode_transaction(SignedTx(CancelAll(), ALICE, 0, bytes(65)))
    data = rlp.encode([rlp.decode(encode_header(header)), [good, b"\x01\xc0"]])
    with pytest.raises(BlockDecodeError) as info:
        decode_block(data)
    assert isinstance(info.value.__cause__, DecodeError)
    assert "transaction 1" in str(info.value)
    with pytest.raises(BlockDecodeError):
        decode_block(rlp.encode([rlp.decode(encode_header(header)), [[good]]]))
    with pytest.raises(BlockDecodeError):
        decode_block(b"\xc1")
    with pytest.raises(BlockDecodeError):
        decode_block(nested_lists(5000))


def test_transactions_root_is_the_merkle_root_of_the_encodings_in_order() -> None:
    assert transactions_root([]) == EMPTY_MERKLE_ROOT == keccak(b"")
    txs: list[Transaction] = [
        sign_action(KEY, PlaceOrder(1, 0, 100, 5), 0),
        DepositMessage(0, ALICE, ALICE, 1, 10**6),
        sign_action(KEY, CancelAll(), 1),
    ]
    root = transactions_root(txs)
    assert root == merkle_root([encode_transaction(tx) for tx in txs])
    assert root == merkle_root_of_hashes([keccak(encode_transaction(tx)) for tx in txs])
    assert transactions_root(list(reversed(txs))) != root
    assert transactions_root(txs[:2]) != root


def test_transactions_root_of_decoded_transactions_matches_the_signed_ones() -> None:
    txs: list[Transaction] = [sign_action(KEY, PlaceOrder(1, 0, 100 + i, 5), i) for i in range(5)]
    decoded = [decode_block(encode_block(Block(PARENT, tuple(txs)))).transactions[i] for i in range(5)]
    assert transactions_root(decoded) == transactions_root(txs)


# --------------------------------------------------------------------------- header rules

PARENT = Header(9, b"\x01" * 32, 1_790_000_000_000, 100, 4, BLANK_ROOT, BLANK_ROOT, b"\x02" * 32)


def _child(**changes: object) -> Header:
    fields = {
        "number": 10,
        "parent_hash": header_hash(PARENT),
        "timestamp_ms": PARENT.timestamp_ms + 100,
        "l1_origin": 100,
        "l1_cursor": 6,
        "transactions_root": BLANK_ROOT,
        "receipts_root": BLANK_ROOT,
        "state_root": b"\x03" * 32,
    }
    fields.update(changes)
    return Header(**fields)  # type: ignore[arg-type]


MESSAGES = [DepositMessage(4, ALICE, ALICE, 1, 5), ForcedWithdrawalMessage(5, ALICE, 1)]


def test_a_proper_child_header_passes() -> None:
    validate_header(_child(), PARENT, MESSAGES)
    validate_header(_child(l1_cursor=4, l1_origin=101), PARENT, [])


@pytest.mark.parametrize(
    ("changes", "error", "got", "expected"),
    [
        ({"number": 11}, BlockNumberMismatch, 11, 10),
        ({"parent_hash": b"\x09" * 32}, ParentHashMismatch, b"\x09" * 32, header_hash(PARENT)),
        ({"timestamp_ms": PARENT.timestamp_ms}, TimestampNotIncreasing, PARENT.timestamp_ms, PARENT.timestamp_ms),
        ({"l1_origin": 99}, L1OriginDecreasing, 99, 100),
        ({"l1_cursor": 5}, L1CursorMismatch, 5, 6),
    ],
)
def test_header_rule_violations_carry_got_and_expected(
    changes: dict[str, object], error: type[InvalidBlock], got: object, expected: object
) -> None:
    with pytest.raises(error) as info:
        validate_header(_child(**changes), PARENT, MESSAGES)
    assert info.value.got == got and info.value.expected == expected  # type: ignore[attr-defined]
    assert (str(got) if isinstance(got, int) else got.hex()) in str(info.value)  # type: ignore[attr-defined]


def test_l1_messages_must_continue_the_queue_in_order() -> None:
    with pytest.raises(L1MessageOutOfOrder) as info:
        validate_header(_child(), PARENT, list(reversed(MESSAGES)))
    assert (info.value.expected, info.value.got) == (4, 5)
    skipping = [DepositMessage(5, ALICE, ALICE, 1, 5), ForcedWithdrawalMessage(6, ALICE, 1)]
    with pytest.raises(L1MessageOutOfOrder):
        validate_header(_child(), PARENT, skipping)


def test_root_mismatch_names_both_roots() -> None:
    err = RootMismatch("state", b"\xaa" * 32, b"\xbb" * 32)
    assert isinstance(err, InvalidBlock)
    assert "aa" * 32 in str(err) and "bb" * 32 in str(err) and "state" in str(err)


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_a_block_or_a_block_decode_error(data: bytes) -> None:
    try:
        block = decode_block(data)
    except BlockDecodeError:
        return
    assert encode_block(block) == data


def test_recovery_workers_return_each_transaction_with_its_hash_cached() -> None:
    import pickle

    from node.tradezone.eip712 import decode_and_recover_many
    from node.tradezone.transactions import tx_hash

    raws = [encode_transaction(sign_action(KEY, PlaceOrder(1, 0, 100 + i, 5), i)) for i in range(3)]
    results = pickle.loads(pickle.dumps(decode_and_recover_many([*raws, b"\x01\xc0"])))
    assert isinstance(results[3], DecodeError)
    for raw, tx in zip(raws, results[:3], strict=True):
        assert isinstance(tx, SignedTx)
        assert tx._hash == keccak(raw) == tx_hash(tx)
    assert transactions_root(results[:3]) == merkle_root(raws)
