"""EIP-712 typed data of TradeZone actions: the hand-rolled hot path against eth-account,
domain binding, signature strictness, agent signing, and pool-friendly recovery."""

from __future__ import annotations

import json
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak
from hypothesis import HealthCheck, given, settings

from node.tradezone.eip712 import (
    BRIDGE_ADDRESS,
    DEVNET_DOMAIN,
    SECP256K1_HALF_N,
    SECP256K1_N,
    TRADEZONE_CHAIN_ID,
    Domain,
    action_type_string,
    attach_signers,
    decode_and_recover,
    decode_and_recover_many,
    from_typed_data,
    recover_address,
    recover_many,
    recover_signer,
    signing_digest,
    tx_digest,
    typed_data,
)
from node.tradezone.errors import (
    BadSignature,
    DecodeError,
    InvalidTransaction,
    NonceMismatch,
    ValueOutOfRange,
)
from node.tradezone.signing import Signer, sign_action
from node.tradezone.transactions import (
    ACTION_TYPES,
    Action,
    AdjustIsolatedMargin,
    ApproveAgent,
    CancelAll,
    CancelByClientId,
    CancelOrder,
    DepositMessage,
    ModifyOrder,
    OracleUpdate,
    PlaceOrder,
    PlaceOrders,
    ResolveMarket,
    RevokeAgent,
    SetMarginMode,
    SignedTx,
    Transfer,
    Withdraw,
    encode_transaction,
)
from tests.tradezone.test_transactions import actions

# Devnet keys (the public "test test ... junk" development mnemonic), accounts 0, 5 and 6.
KEY_0 = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
KEY_5 = bytes.fromhex("8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba")
KEY_6 = bytes.fromhex("92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e")
ADDRESS_0 = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")

MAX64 = 2**64 - 1
EXAMPLES: dict[type[Action], Action] = {
    PlaceOrder: PlaceOrder(7, 1, 64_250_00, 3, 2, True, MAX64),
    PlaceOrders: PlaceOrders((PlaceOrder(1, 0, 100, 5), PlaceOrder(2**32 - 1, 1, MAX64, MAX64, 1, False, 0))),
    CancelOrder: CancelOrder(3, 12345),
    CancelByClientId: CancelByClientId(3, MAX64),
    CancelAll: CancelAll(),
    ModifyOrder: ModifyOrder(3, 99, 101, 4),
    ApproveAgent: ApproveAgent(bytes.fromhex("a0ee7a142d267c1f36714e4a8f75612f20a79720"), 1_800_000_000_000),
    RevokeAgent: RevokeAgent(bytes.fromhex("a0ee7a142d267c1f36714e4a8f75612f20a79720")),
    Transfer: Transfer(bytes.fromhex("70997970c51812dc3a010c7d01b50e0d17dc79c8"), 0, 2**256 - 1),
    Withdraw: Withdraw(1, 10**6, bytes.fromhex("70997970c51812dc3a010c7d01b50e0d17dc79c8")),
    OracleUpdate: OracleUpdate(2, 6_400_000, 1_790_000_000_123),
    ResolveMarket: ResolveMarket(1000, 1),
    SetMarginMode: SetMarginMode(2, True),
    AdjustIsolatedMargin: AdjustIsolatedMargin(2, 250 * 10**6, False),
}

SLOW_PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def eth_account_digest(message: dict[str, object]) -> bytes:
    signable = encode_typed_data(full_message=message)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def test_every_action_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(ACTION_TYPES)
    assert all(type(action) is cls for cls, action in EXAMPLES.items())


def test_devnet_domain_is_the_interfaces_domain() -> None:
    assert DEVNET_DOMAIN.chain_id == TRADEZONE_CHAIN_ID == 1961
    assert DEVNET_DOMAIN.verifying_contract == BRIDGE_ADDRESS
    assert DEVNET_DOMAIN.as_dict() == {
        "name": "Exos TradeZone",
        "version": "1",
        "chainId": 1961,
        "verifyingContract": "0x4200000000000000000000000000000000000010",
    }


def test_signer_address_is_the_devnet_account_address() -> None:
    assert Signer(KEY_0).address == ADDRESS_0
    assert Signer(KEY_5).address == bytes.fromhex(Account.from_key(KEY_5).address[2:])


def test_type_strings_follow_eip712_encode_type() -> None:
    assert action_type_string(PlaceOrder) == (
        "PlaceOrder(address account,uint64 nonce,uint32 marketId,uint8 side,uint64 price,uint64 size,"
        "uint8 tif,bool reduceOnly,uint64 clientOrderId)"
    )
    assert action_type_string(PlaceOrders) == (
        "PlaceOrders(address account,uint64 nonce,Order[] orders)Order(uint32 marketId,uint8 side,"
        "uint64 price,uint64 size,uint8 tif,bool reduceOnly,uint64 clientOrderId)"
    )


@pytest.mark.parametrize("action_cls", ACTION_TYPES, ids=lambda cls: cls.__name__)
def test_every_action_type_hashes_and_recovers_like_eth_account(action_cls: type[Action]) -> None:
    action = EXAMPLES[action_cls]
    nonce = 41
    message = typed_data(action, ADDRESS_0, nonce)
    digest = signing_digest(action, ADDRESS_0, nonce)
    assert eth_account_digest(message) == digest
    # eth-account signs, our hot path recovers
    theirs = Account.sign_typed_data(KEY_0, full_message=message).signature
    tx = SignedTx(action, ADDRESS_0, nonce, bytes(theirs))
    assert recover_signer(tx) == ADDRESS_0
    # we sign, eth-account recovers
    ours = sign_action(KEY_0, action, nonce)
    assert ours.signature == bytes(theirs)  # RFC 6979: both sign deterministically
    recovered = Account.recover_message(encode_typed_data(full_message=message), signature=ours.signature)
    assert bytes.fromhex(recovered[2:]) == ADDRESS_0


@SLOW_PROPERTY
@given(actions)
def test_hot_path_digest_equals_eth_account_digest_for_random_actions(action: Action) -> None:
    assert eth_account_digest(typed_data(action, ADDRESS_0, 2**64 - 1)) == signing_digest(
        action, ADDRESS_0, 2**64 - 1
    )


def test_a_signature_does_not_replay_on_another_chain_or_bridge() -> None:
    tx = sign_action(KEY_0, Transfer(bytes(20), 1, 10**6), 0)
    other_chain = Domain(chain_id=1)
    other_bridge = Domain(verifying_contract=bytes.fromhex("42" + "00" * 18 + "99"))
    assert tx_digest(tx) != tx_digest(tx, other_chain) != tx_digest(tx, other_bridge)
    fresh = SignedTx(tx.action, tx.account, tx.nonce, tx.signature)
    assert recover_signer(fresh) == ADDRESS_0
    assert recover_signer(fresh, other_chain) != ADDRESS_0
    assert recover_signer(fresh, other_bridge) != ADDRESS_0


def test_signature_covers_account_nonce_and_every_field() -> None:
    tx = sign_action(KEY_0, PlaceOrder(1, 0, 100, 5, 0, False, 9), 3)
    variants = [
        SignedTx(PlaceOrder(1, 0, 100, 5, 0, False, 10), tx.account, 3, tx.signature),
        SignedTx(PlaceOrder(1, 0, 101, 5, 0, False, 9), tx.account, 3, tx.signature),
        SignedTx(PlaceOrder(1, 0, 100, 5, 0, True, 9), tx.account, 3, tx.signature),
        SignedTx(tx.action, tx.account, 4, tx.signature),
        SignedTx(tx.action, bytes(20), 3, tx.signature),
    ]
    for variant in variants:
        try:
            assert recover_signer(variant) != ADDRESS_0
        except BadSignature:
            pass


def test_an_agent_signs_for_an_account_and_recovers_as_the_agent() -> None:
    account = Signer(KEY_5)
    agent = Signer(KEY_6)
    approve = account.sign(ApproveAgent(agent.address, 0), 0)
    order = agent.sign(PlaceOrder(1, 0, 100, 5), 0, account=account.address)
    assert order.account == account.address
    for tx, signer in ((approve, account.address), (order, agent.address)):
        decoded = decode_and_recover(encode_transaction(tx))
        assert decoded.cached_signer(DEVNET_DOMAIN.separator) == signer


def _resign(signature: bytes, r: int | None = None, s: int | None = None, v: int | None = None) -> bytes:
    r = int.from_bytes(signature[:32], "big") if r is None else r
    s = int.from_bytes(signature[32:64], "big") if s is None else s
    v = signature[64] if v is None else v
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((v,))


def test_malformed_or_malleated_signatures_are_bad_signatures() -> None:
    tx = sign_action(KEY_0, CancelAll(), 0)
    digest = tx_digest(tx)
    assert recover_address(digest, tx.signature) == ADDRESS_0
    s = int.from_bytes(tx.signature[32:64], "big")
    high_s = _resign(tx.signature, s=SECP256K1_N - s, v=55 - tx.signature[64])  # same key in raw ECDSA
    bad = [
        high_s,
        _resign(tx.signature, v=tx.signature[64] - 27),  # v as a bare recovery id
        _resign(tx.signature, v=29),
        _resign(tx.signature, r=0),
        _resign(tx.signature, s=0),
        _resign(tx.signature, r=SECP256K1_N),
        _resign(tx.signature, r=5),  # an x with no point on the curve: nothing recovers
        tx.signature[:64],
    ]
    for signature in bad:
        with pytest.raises(BadSignature):
            recover_address(digest, signature)


def test_client_signing_refuses_out_of_range_fields_before_signing() -> None:
    with pytest.raises(ValueOutOfRange):
        sign_action(KEY_0, Withdraw(1, -1, ADDRESS_0), 0)
    with pytest.raises(ValueOutOfRange):
        sign_action(KEY_0, CancelAll(), 2**64)


def test_recover_many_and_attach_signers_cross_a_pickle_boundary() -> None:
    good = [sign_action(KEY_0, PlaceOrder(1, 0, 100 + i, 5), i) for i in range(3)]
    bad = SignedTx(CancelAll(), ADDRESS_0, 9, bytes(65))
    batch = [pickle.loads(pickle.dumps(SignedTx(tx.action, tx.account, tx.nonce, tx.signature))) for tx in good]
    batch.append(bad)
    signers = pickle.loads(pickle.dumps(recover_many(pickle.loads(pickle.dumps(batch)))))
    assert signers == [ADDRESS_0, ADDRESS_0, ADDRESS_0, None]
    fresh = [SignedTx(tx.action, tx.account, tx.nonce, tx.signature) for tx in batch]
    attach_signers(fresh, signers)
    assert [tx.cached_signer(DEVNET_DOMAIN.separator) for tx in fresh] == signers


def test_decode_and_recover_many_returns_named_errors_in_place() -> None:
    good = encode_transaction(sign_action(KEY_5, PlaceOrder(1, 1, 100, 5), 0))
    unsigned = encode_transaction(SignedTx(CancelAll(), ADDRESS_0, 0, bytes(65)))
    message = encode_transaction(DepositMessage(0, ADDRESS_0, ADDRESS_0, 1, 5))
    results = pickle.loads(pickle.dumps(decode_and_recover_many([good, b"\x01\xc0", unsigned, message])))
    assert isinstance(results[0], SignedTx)
    assert results[0].cached_signer(DEVNET_DOMAIN.separator) == Signer(KEY_5).address
    assert isinstance(results[1], DecodeError)
    assert isinstance(results[2], BadSignature)
    assert type(results[3]) is InvalidTransaction


def test_errors_with_fields_survive_pickling() -> None:
    err = pickle.loads(pickle.dumps(NonceMismatch(expected=3, got=5)))
    assert (err.expected, err.got, err.reason) == (3, 5, "nonce_mismatch")
    assert "nonce 5" in str(err)


@pytest.mark.slow
def test_recovery_runs_in_a_process_pool() -> None:
    txs = [sign_action(KEY_0 if i % 2 else KEY_5, PlaceOrder(1, i % 2, 100, 1 + i), i) for i in range(40)]
    raws = [encode_transaction(tx) for tx in txs]
    chunks = [raws[i : i + 10] for i in range(0, len(raws), 10)]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = [tx for chunk in pool.map(decode_and_recover_many, chunks) for tx in chunk]
    assert [r.cached_signer(DEVNET_DOMAIN.separator) for r in results] == [  # type: ignore[union-attr]
        ADDRESS_0 if i % 2 else Signer(KEY_5).address for i in range(40)
    ]


# --------------------------------------------------------------------------- known answers

# The wire format is a protocol: these pin it, so that any change to a field order, a type
# string or the envelope shows up here (clients and other implementations depend on them).
PLACE_ORDER_SIGNED_BY_KEY_0 = bytes.fromhex(
    "01f86c94f39fd6e51aad88f6f4ce6ab8827279cfffb9226629d20701836209a803020188ffffffffffffffffb841"
    "663ec18b2765292d9dcf9547233a1460461941afc695534122dd8a9008f1d0b5093e8e1f296124e19d3f1bac2f2f"
    "1aa180dfca3bc1eb64c47e98ec32ab4bcc711b"
)
ALL_EXAMPLES_ENCODINGS_KECCAK = bytes.fromhex("0e91201a9a30a87afd706c14b5a62776bf6b25d135fb9f4b330dbe3b21c806b1")
# The margin-mode actions (0x0d, 0x0e) came later: pinned on their own, the first twelve unchanged.
MARGIN_EXAMPLES_ENCODINGS_KECCAK = bytes.fromhex("af09e41fbb110890034ebbeaeb23e0c6cc27afc68cac7f68cf9c317a459ff45b")
DEPOSIT_7 = bytes.fromhex(
    "71f10794f39fd6e51aad88f6f4ce6ab8827279cfffb922669470997970c51812dc3a010c7d01b50e0d17dc79c80184017d7840"
)


def test_known_answer_encodings_of_signed_actions_and_a_deposit() -> None:
    tx = sign_action(KEY_0, EXAMPLES[PlaceOrder], 41)
    assert encode_transaction(tx) == PLACE_ORDER_SIGNED_BY_KEY_0
    encodings = [encode_transaction(sign_action(KEY_0, EXAMPLES[cls], 41)) for cls in ACTION_TYPES]
    assert keccak(b"".join(encodings[:12])) == ALL_EXAMPLES_ENCODINGS_KECCAK
    assert keccak(b"".join(encodings[12:])) == MARGIN_EXAMPLES_ENCODINGS_KECCAK
    deposit = DepositMessage(7, ADDRESS_0, bytes.fromhex("70997970c51812dc3a010c7d01b50e0d17dc79c8"), 1, 25 * 10**6)
    assert encode_transaction(deposit) == DEPOSIT_7
    assert decode_and_recover(PLACE_ORDER_SIGNED_BY_KEY_0).cached_signer(DEVNET_DOMAIN.separator) == ADDRESS_0


# --------------------------------------------------------------------------- typed data from wallets


@pytest.mark.parametrize("action_cls", ACTION_TYPES, ids=lambda cls: cls.__name__)
def test_typed_data_from_a_wallet_parses_back_to_the_same_transaction(action_cls: type[Action]) -> None:
    action = EXAMPLES[action_cls]
    document = json.loads(json.dumps(typed_data(action, ADDRESS_0, 41)))
    signature = bytes(Account.sign_typed_data(KEY_0, full_message=document).signature)
    tx = from_typed_data(document, signature)
    assert tx == SignedTx(action, ADDRESS_0, 41, signature)
    assert recover_signer(tx) == ADDRESS_0


def test_wallet_variants_are_accepted() -> None:
    document = typed_data(EXAMPLES[Transfer], ADDRESS_0, 3)
    del document["types"]["EIP712Domain"]  # ethers.js leaves it out
    document["domain"]["verifyingContract"] = document["domain"]["verifyingContract"].lower()
    document["message"]["amount"] = str(document["message"]["amount"])  # big integers as strings
    assert from_typed_data(document, bytes(65)).action == EXAMPLES[Transfer]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: d["domain"].__setitem__("chainId", 1),
        lambda d: d["domain"].__setitem__("verifyingContract", "0x" + "11" * 20),
        lambda d: d.__setitem__("primaryType", "Mint"),
        lambda d: d["message"].pop("price"),
        lambda d: d["message"].__setitem__("extra", 1),
        lambda d: d["message"].__setitem__("price", 2**64),
        lambda d: d["message"].__setitem__("reduceOnly", 1),
        lambda d: d["message"].__setitem__("account", "0x1234"),
        lambda d: d["types"]["PlaceOrder"].reverse(),
    ],
)
def test_typed_data_that_is_not_a_tradezone_action_is_refused(tamper: object) -> None:
    document = typed_data(EXAMPLES[PlaceOrder], ADDRESS_0, 3)
    assert from_typed_data(document, bytes(65)).action == EXAMPLES[PlaceOrder]
    tamper(document)  # type: ignore[operator]
    with pytest.raises(ValueOutOfRange):
        from_typed_data(document, bytes(65))


def test_recovery_agrees_with_coincurves_public_api_on_random_keys_digests_and_signatures() -> None:
    """``recover_address`` calls libsecp256k1 through coincurve's cffi binding directly; its answer
    must be what coincurve's ``PublicKey.from_signature_and_message`` gives, and it must refuse
    exactly where that refuses (random r and s included, most of which recover some key)."""
    import random

    from coincurve import PrivateKey, PublicKey

    def reference(digest: bytes, signature: bytes) -> bytes | None:
        try:
            key = PublicKey.from_signature_and_message(signature[:64] + bytes((signature[64] - 27,)), digest,
                                                       hasher=None)
        except Exception:
            return None
        return keccak(key.format(compressed=False)[1:])[12:]

    rng = random.Random(1961)
    for _ in range(200):
        digest = rng.randbytes(32)
        signed = PrivateKey(rng.randbytes(31) + b"\x01").sign_recoverable(digest, hasher=None)
        r, s = int.from_bytes(signed[:32], "big"), int.from_bytes(signed[32:64], "big")
        v = 27 + signed[64]
        if s > SECP256K1_HALF_N:
            s, v = SECP256K1_N - s, 55 - v
        for signature in (_resign(signed, r=r, s=s, v=v),
                          _resign(signed, r=rng.randrange(1, SECP256K1_N), s=rng.randrange(1, SECP256K1_HALF_N),
                                  v=rng.choice((27, 28)))):
            want = reference(digest, signature)
            if want is None:
                with pytest.raises(BadSignature):
                    recover_address(digest, signature)
            else:
                assert recover_address(digest, signature) == want
