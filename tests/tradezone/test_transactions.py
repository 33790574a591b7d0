"""Canonical encoding of TradeZone transactions: round trips, strictness, ranges, hashes."""

from __future__ import annotations

import json
import pickle

import pytest
import rlp
from eth_abi import encode as abi_encode
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.tradezone.errors import (
    DecodeError,
    NonCanonicalEncoding,
    OversizedInput,
    UnknownTransactionType,
    ValueOutOfRange,
)
from node.tradezone.transactions import (
    ACTION_TYPES,
    ALL_MARKETS,
    L1_MESSAGE_TYPES,
    MAX_BATCH_ORDERS,
    MAX_TX_BYTES,
    Action,
    AdjustIsolatedMargin,
    ApproveAgent,
    CancelAll,
    CancelByClientId,
    CancelOrder,
    DepositMessage,
    ForcedWithdrawalMessage,
    L1Message,
    ModifyOrder,
    OracleUpdate,
    PlaceOrder,
    PlaceOrders,
    ResolveMarket,
    RevokeAgent,
    SetMarginMode,
    SignedTx,
    StakeMessage,
    Transfer,
    Withdraw,
    decode_transaction,
    encode_transaction,
    l1_message_from_event,
    l1_message_hash,
    next_rolling_hash,
    rlp_decode,
    rlp_encode,
    transaction_to_json,
    tx_hash,
)

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 2**8 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
u256 = st.integers(0, 2**256 - 1)
address = st.binary(min_size=20, max_size=20)

place_orders = st.builds(PlaceOrder, u32, st.integers(0, 1), u64, u64, st.integers(0, 2), st.booleans(), u64)

ACTION_STRATEGIES: dict[type[Action], st.SearchStrategy[Action]] = {
    PlaceOrder: place_orders,
    PlaceOrders: st.builds(PlaceOrders, st.lists(place_orders, min_size=1, max_size=8).map(tuple)),
    CancelOrder: st.builds(CancelOrder, u32, u64),
    CancelByClientId: st.builds(CancelByClientId, u32, u64),
    CancelAll: st.builds(CancelAll, u32),
    ModifyOrder: st.builds(ModifyOrder, u32, u64, u64, u64),
    ApproveAgent: st.builds(ApproveAgent, address, u64),
    RevokeAgent: st.builds(RevokeAgent, address),
    Transfer: st.builds(Transfer, address, u32, u256),
    Withdraw: st.builds(Withdraw, u32, u256, address),
    OracleUpdate: st.builds(OracleUpdate, u32, u64, u64),
    ResolveMarket: st.builds(ResolveMarket, u32, u8),
    SetMarginMode: st.builds(SetMarginMode, u32, st.booleans()),
    AdjustIsolatedMargin: st.builds(AdjustIsolatedMargin, u32, u256, st.booleans()),
}
actions = st.one_of(*ACTION_STRATEGIES.values())
signed_txs = st.builds(SignedTx, actions, address, u64, st.binary(min_size=65, max_size=65))
l1_messages = st.one_of(
    st.builds(DepositMessage, u64, address, address, u32, u256),
    st.builds(StakeMessage, u64, address, u256),
    st.builds(ForcedWithdrawalMessage, u64, address, u32),
)
transactions = st.one_of(signed_txs, l1_messages)

ACCOUNT = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")
SIG = bytes(range(65))


def test_every_action_type_has_a_strategy_and_a_distinct_type_id() -> None:
    assert set(ACTION_STRATEGIES) == set(ACTION_TYPES)
    ids = [cls.TYPE_ID for cls in ACTION_TYPES] + [0x70 + cls.KIND for cls in L1_MESSAGE_TYPES]
    assert len(ids) == len(set(ids))


@PROPERTY
@given(transactions)
def test_decode_of_encode_is_identity_and_reencoding_gives_the_same_bytes(tx: SignedTx | L1Message) -> None:
    encoded = encode_transaction(tx)
    decoded = decode_transaction(encoded)
    assert decoded == tx
    assert type(decoded) is type(tx)
    if isinstance(tx, SignedTx):
        assert type(decoded.action) is type(tx.action)  # type: ignore[union-attr]
        decoded = decode_transaction(bytes(encoded))  # a fresh object: no cached encoding
        object.__setattr__(decoded, "_encoded", None)
    assert encode_transaction(decoded) == encoded


@PROPERTY
@given(transactions)
def test_body_is_standard_rlp_as_the_rlp_package_reads_it(tx: SignedTx | L1Message) -> None:
    encoded = encode_transaction(tx)
    body = rlp.decode(encoded[1:], strict=True)
    assert rlp.encode(body) == encoded[1:]
    assert rlp_decode(encoded[1:]) == body


@PROPERTY
@given(st.recursive(st.binary(max_size=70), lambda inner: st.lists(inner, max_size=5), max_leaves=20))
def test_rlp_codec_matches_the_rlp_package(item: object) -> None:
    encoded = rlp_encode(item)  # type: ignore[arg-type]
    assert encoded == rlp.encode(item)
    assert rlp_decode(encoded, max_depth=64) == item


@PROPERTY
@given(transactions, st.data())
def test_any_single_byte_corruption_either_fails_by_name_or_reencodes_identically(
    tx: SignedTx | L1Message, data: st.DataObject
) -> None:
    encoded = bytearray(encode_transaction(tx))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_transaction(bytes(encoded))
    except DecodeError:
        return
    if isinstance(decoded, SignedTx):
        object.__setattr__(decoded, "_encoded", None)
    assert encode_transaction(decoded) == bytes(encoded)


@PROPERTY
@given(transactions, st.binary(min_size=1, max_size=4))
def test_trailing_bytes_are_rejected(tx: SignedTx | L1Message, tail: bytes) -> None:
    with pytest.raises(NonCanonicalEncoding):
        decode_transaction(encode_transaction(tx) + tail)


@PROPERTY
@given(transactions, st.data())
def test_truncated_input_is_rejected(tx: SignedTx | L1Message, data: st.DataObject) -> None:
    encoded = encode_transaction(tx)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(DecodeError):
        decode_transaction(encoded[:cut])


def _place_order_tx_bytes(fields: list[object]) -> bytes:
    return bytes((PlaceOrder.TYPE_ID,)) + rlp.encode([ACCOUNT, 7, fields, SIG])


def test_integer_with_leading_zero_is_non_canonical() -> None:
    good = _place_order_tx_bytes([1, 0, 100, 5, 0, 0, 0])
    assert decode_transaction(good).action == PlaceOrder(1, 0, 100, 5)  # type: ignore[union-attr]
    with pytest.raises(NonCanonicalEncoding):
        decode_transaction(_place_order_tx_bytes([1, 0, b"\x00\x64", 5, 0, 0, 0]))
    with pytest.raises(NonCanonicalEncoding):
        decode_transaction(_place_order_tx_bytes([b"\x00", 0, 100, 5, 0, 0, 0]))


def test_single_byte_wrapped_in_a_string_prefix_is_non_canonical() -> None:
    # price 100 = 0x64 is one byte below 0x80: its only canonical form is the byte itself
    def raw_with_price(price_item: bytes) -> bytes:
        fields = b"\x01\x80" + price_item + b"\x05\x80\x80\x80"
        body = b"\x94" + ACCOUNT + b"\x07" + bytes((0xC0 + len(fields),)) + fields + b"\xb8\x41" + SIG
        return bytes((PlaceOrder.TYPE_ID,)) + b"\xf8" + bytes((len(body),)) + body

    assert decode_transaction(raw_with_price(b"\x64")).action.price == 100  # type: ignore[union-attr]
    with pytest.raises(NonCanonicalEncoding):
        decode_transaction(raw_with_price(b"\x81\x64"))


def test_long_form_length_for_a_short_payload_is_non_canonical() -> None:
    with pytest.raises(NonCanonicalEncoding):
        rlp_decode(b"\xb8\x03abc")
    with pytest.raises(NonCanonicalEncoding):
        rlp_decode(b"\xf8\x03\x01\x02\x03")
    with pytest.raises(NonCanonicalEncoding):
        rlp_decode(b"\xb9\x00\x38" + b"a" * 56)  # length with a leading zero byte
    assert rlp_decode(b"\xb8\x38" + b"a" * 56) == b"a" * 56


def nested_lists(depth: int) -> bytes:
    """The RLP of ``[[[...[]...]]]``, ``depth`` lists around the empty list, built directly."""
    item = b"\xc0"
    for _ in range(depth):
        length = len(item)
        if length < 56:
            item = bytes((0xC0 + length,)) + item
        else:
            raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
            item = bytes((0xF7 + len(raw),)) + raw + item
    return item


def test_deeply_nested_lists_are_a_named_error_not_a_stack_overflow() -> None:
    with pytest.raises(ValueOutOfRange):
        decode_transaction(b"\x01" + nested_lists(1300))
    with pytest.raises(ValueOutOfRange):
        rlp_decode(nested_lists(9))
    assert rlp_decode(nested_lists(7)) == rlp.decode(nested_lists(7))


def test_oversized_input_is_rejected_before_parsing() -> None:
    with pytest.raises(OversizedInput) as info:
        decode_transaction(b"\x01" + b"\x00" * MAX_TX_BYTES)
    assert info.value.size == MAX_TX_BYTES + 1 and info.value.limit == MAX_TX_BYTES


def test_unknown_type_byte_and_empty_input_are_named_errors() -> None:
    with pytest.raises(UnknownTransactionType) as info:
        decode_transaction(b"\x3f\xc0")
    assert info.value.type_id == 0x3F
    with pytest.raises(DecodeError):
        decode_transaction(b"")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ([2**32, 0, 100, 5, 0, 0, 0], "market_id"),
        ([1, 256, 100, 5, 0, 0, 0], "side"),
        ([1, 0, 2**64, 5, 0, 0, 0], "price"),
        ([1, 0, 100, 5, 0, 2, 0], "reduce_only"),
        ([1, 0, 100, 5, 0, 0], "fields"),
        ([1, 0, 100, 5, 0, 0, 0, 0], "fields"),
        ([1, [0], 100, 5, 0, 0, 0], "side"),
    ],
)
def test_out_of_range_fields_are_rejected_with_the_field_name(fields: list[object], field: str) -> None:
    with pytest.raises(ValueOutOfRange) as info:
        decode_transaction(_place_order_tx_bytes(fields))
    assert info.value.field == field


def test_envelope_shape_is_checked() -> None:
    fields = [1, 0, 100, 5, 0, 0, 0]
    with pytest.raises(ValueOutOfRange) as info:
        decode_transaction(b"\x01" + rlp.encode([ACCOUNT[:19], 7, fields, SIG]))
    assert info.value.field == "account"
    with pytest.raises(ValueOutOfRange) as info:
        decode_transaction(b"\x01" + rlp.encode([ACCOUNT, 7, fields, SIG[:64]]))
    assert info.value.field == "signature"
    with pytest.raises(ValueOutOfRange) as info:
        decode_transaction(b"\x01" + rlp.encode([ACCOUNT, 2**64, fields, SIG]))
    assert info.value.field == "nonce"
    with pytest.raises(ValueOutOfRange):
        decode_transaction(b"\x01" + rlp.encode([ACCOUNT, 7, fields]))


def test_order_batches_must_hold_1_to_max_orders() -> None:
    order = [1, 0, 100, 5, 0, 0, 0]
    ok = b"\x02" + rlp.encode([ACCOUNT, 1, [[order] * MAX_BATCH_ORDERS], SIG])
    assert len(decode_transaction(ok).action.orders) == MAX_BATCH_ORDERS  # type: ignore[union-attr]
    for orders in ([], [order] * (MAX_BATCH_ORDERS + 1)):
        with pytest.raises(ValueOutOfRange):
            decode_transaction(b"\x02" + rlp.encode([ACCOUNT, 1, [orders], SIG]))
    with pytest.raises(ValueOutOfRange):
        encode_transaction(SignedTx(PlaceOrders(()), ACCOUNT, 1, SIG))


@pytest.mark.parametrize(
    "tx",
    [
        SignedTx(PlaceOrder(2**32, 0, 1, 1), ACCOUNT, 0, SIG),
        SignedTx(PlaceOrder(1, 0, -1, 1), ACCOUNT, 0, SIG),
        SignedTx(PlaceOrder(1, 0, 1, 1, reduce_only=2), ACCOUNT, 0, SIG),  # type: ignore[arg-type]
        SignedTx(Transfer(ACCOUNT, 1, 2**256), ACCOUNT, 0, SIG),
        SignedTx(Withdraw(1, 5, ACCOUNT[:19]), ACCOUNT, 0, SIG),
        SignedTx(CancelAll(ALL_MARKETS), ACCOUNT[:19], 0, SIG),
        SignedTx(CancelAll(ALL_MARKETS), ACCOUNT, 2**64, SIG),
        SignedTx(CancelAll(ALL_MARKETS), ACCOUNT, 0, SIG[:64]),
        SignedTx(CancelOrder(1, True), ACCOUNT, 0, SIG),  # type: ignore[arg-type]
        DepositMessage(0, ACCOUNT, ACCOUNT, 1, -5),
    ],
)
def test_encoding_refuses_out_of_range_values_and_caches_nothing(tx: SignedTx | L1Message) -> None:
    with pytest.raises(ValueOutOfRange):
        encode_transaction(tx)
    if isinstance(tx, SignedTx):
        assert tx._encoded is None


def test_the_largest_batch_fits_the_size_limit() -> None:
    big = PlaceOrder(2**32 - 1, 1, 2**64 - 1, 2**64 - 1, 2, True, 2**64 - 1)
    tx = SignedTx(PlaceOrders((big,) * MAX_BATCH_ORDERS), ACCOUNT, 2**64 - 1, SIG)
    assert len(encode_transaction(tx)) <= MAX_TX_BYTES


def test_tx_hash_is_keccak_of_the_canonical_encoding_and_binds_every_field() -> None:
    tx = SignedTx(PlaceOrder(1, 0, 100, 5), ACCOUNT, 7, SIG)
    assert tx_hash(tx) == keccak(encode_transaction(tx))
    others = [
        SignedTx(PlaceOrder(1, 0, 100, 6), ACCOUNT, 7, SIG),
        SignedTx(PlaceOrder(1, 0, 100, 5), ACCOUNT, 8, SIG),
        SignedTx(PlaceOrder(1, 0, 100, 5), bytes(20), 7, SIG),
        SignedTx(PlaceOrder(1, 0, 100, 5), ACCOUNT, 7, bytes(65)),
        SignedTx(PlaceOrders((PlaceOrder(1, 0, 100, 5),)), ACCOUNT, 7, SIG),
    ]
    assert len({tx_hash(tx)} | {tx_hash(other) for other in others}) == 6


def test_signed_tx_is_immutable_and_pickles_with_its_cached_signer() -> None:
    tx = SignedTx(CancelAll(), ACCOUNT, 3, SIG)
    with pytest.raises(AttributeError):
        tx.nonce = 4
    tx.cache_signer(b"d" * 32, b"s" * 20)
    copy = pickle.loads(pickle.dumps(tx))
    assert copy == tx and hash(copy) == hash(tx)
    assert copy.cached_signer(b"d" * 32) == b"s" * 20
    assert copy.cached_signer(b"e" * 32) is None


@PROPERTY
@given(l1_messages)
def test_l1_message_hash_is_keccak_of_abi_encode_of_index_kind_and_payload(message: L1Message) -> None:
    types = ["uint256", "uint8"] + [
        "address" if kind == "address" else kind for _, kind in message.FIELDS
    ]
    values: list[object] = [message.index, message.kind]
    for name, kind in message.FIELDS:
        value = getattr(message, name)
        values.append("0x" + value.hex() if kind == "address" else value)
    assert l1_message_hash(message) == keccak(abi_encode(types, values))
    payload = abi_encode([kind for _, kind in message.FIELDS], values[2:])
    assert l1_message_from_event(message.index, message.kind, payload) == message


def test_rolling_hash_chains_from_zero() -> None:
    first = DepositMessage(0, ACCOUNT, ACCOUNT, 1, 10**6)
    second = StakeMessage(1, ACCOUNT, 10**18)
    rolling = next_rolling_hash(bytes(32), first)
    assert rolling == keccak(bytes(32) + l1_message_hash(first))
    assert next_rolling_hash(rolling, second) == keccak(rolling + l1_message_hash(second))


def test_l1_event_payload_is_checked() -> None:
    payload = abi_encode(["address", "uint32"], ["0x" + ACCOUNT.hex(), 5])
    assert l1_message_from_event(4, 3, payload) == ForcedWithdrawalMessage(4, ACCOUNT, 5)
    with pytest.raises(UnknownTransactionType):
        l1_message_from_event(4, 9, payload)
    with pytest.raises(ValueOutOfRange):
        l1_message_from_event(4, 3, payload + bytes(32))
    with pytest.raises(ValueOutOfRange):
        l1_message_from_event(4, 3, b"\x01" + payload[1:])  # dirty high bytes of the address
    with pytest.raises(ValueOutOfRange):
        l1_message_from_event(4, 3, payload[:32] + (2**32).to_bytes(32, "big"))


@PROPERTY
@given(transactions)
def test_json_view_is_json_and_its_raw_form_decodes_back(tx: SignedTx | L1Message) -> None:
    view = json.loads(json.dumps(transaction_to_json(tx)))
    assert decode_transaction(bytes.fromhex(view["raw"][2:])) == tx
    assert view["hash"] == "0x" + tx_hash(tx).hex()
    if isinstance(tx, SignedTx):
        assert view["type"] == type(tx.action).__name__
        assert int(view["nonce"]) == tx.nonce
    else:
        assert view["type"] == type(tx).__name__ and view["kind"] == tx.kind


def test_json_view_names_fields_in_camel_case_with_exact_integers() -> None:
    view = transaction_to_json(SignedTx(Transfer(ACCOUNT, 1, 2**200 + 1), ACCOUNT, 2**60, SIG))
    assert view["action"] == {"to": "0x" + ACCOUNT.hex(), "assetId": 1, "amount": str(2**200 + 1)}
    assert view["nonce"] == str(2**60)


@PROPERTY
@given(st.sampled_from([0x01, 0x02, 0x06, 0x09, 0x71, 0x73, 0x50]), st.binary(max_size=200))
def test_arbitrary_bytes_decode_only_to_canonical_transactions_or_fail_by_name(type_id: int, body: bytes) -> None:
    data = bytes((type_id,)) + body
    try:
        decoded = decode_transaction(data)
    except DecodeError:
        return
    if isinstance(decoded, SignedTx):
        object.__setattr__(decoded, "_encoded", None)
    assert encode_transaction(decoded) == data
