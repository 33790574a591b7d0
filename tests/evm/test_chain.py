"""The embedded chain: mempool admission, block production, resume, reads, proofs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_abi import encode
from eth_utils import function_signature_to_4byte_selector, keccak
from trie import HexaryTrie

from node.config import address_of
from node.evm.chain import (
    ChainGenesis,
    ChainNotInitializedError,
    EmbeddedChain,
    GenesisMismatchError,
    data_floor_gas,
)
from node.evm.l1 import (
    AlreadyKnown,
    BlockNotFoundError,
    CallRequest,
    ExecutionFailed,
    ExecutionReverted,
    FeeTooLow,
    GasLimitExceeded,
    InsufficientFunds,
    IntrinsicGasTooLow,
    InvalidTransactionEncoding,
    LogFilter,
    NonceTooLow,
    ReplacementUnderpriced,
    UnsupportedTransactionType,
    WrongChainId,
)
from tests.evm.conftest import FUNDED_KEYS, ONE_ETHER, deploy, plain_genesis, sign

ALICE, BOB = FUNDED_KEYS[0], FUNDED_KEYS[1]
CAROL = b"\xca" * 20
PING = function_signature_to_4byte_selector("ping(uint256)")


def ping_data(n: int) -> bytes:
    return PING + encode(["uint256"], [n])


def test_mine_pending_includes_legacy_2930_and_1559_transactions_in_nonce_order(chain: EmbeddedChain) -> None:
    raws = [
        sign(ALICE, nonce=2, to=CAROL, value=3, maxFeePerGas=5 * 10**9),
        sign(ALICE, nonce=0, to=CAROL, value=1, gasPrice=2 * 10**9),
        sign(ALICE, nonce=1, to=CAROL, value=2, gasPrice=2 * 10**9, accessList=[], type=1),
    ]
    hashes = [chain.submit(raw) for raw in raws]
    mined = chain.mine_pending(chain.head.timestamp + 1)
    assert mined.transaction_count == 3 and chain.pending_count == 0
    txs = chain.get_block_transactions(mined.number)
    assert [t.nonce for t in txs] == [0, 1, 2]
    assert [t.type for t in txs] == [0, 1, 2]
    assert chain.get_balance(CAROL) == 6
    for h in hashes:
        receipt = chain.get_receipt(h)
        assert receipt is not None and receipt.status == 1 and receipt.gas_used == 21_000


def test_empty_blocks_advance_and_timestamps_strictly_increase(chain: EmbeddedChain) -> None:
    t0 = chain.head.timestamp
    first = chain.mine_pending(t0)  # not after the parent: raised to parent + 1
    second = chain.mine_pending(t0)
    assert (first.number, second.number) == (1, 2)
    assert first.timestamp == t0 + 1 and second.timestamp == t0 + 2
    assert chain.get_block("latest").hash == second.hash
    assert chain.get_block(second.hash).number == 2


@pytest.mark.parametrize(
    ("make_raw", "error"),
    [
        (lambda: b"\x01\x02garbage", InvalidTransactionEncoding),
        (lambda: b"\x05" + rlp.encode([1, 2]), UnsupportedTransactionType),
        (lambda: sign(ALICE, nonce=0, to=CAROL, chainId=1), WrongChainId),
        (lambda: sign(ALICE, nonce=0, to=CAROL, value=10**6 * ONE_ETHER), InsufficientFunds),
        (lambda: sign(ALICE, nonce=0, to=CAROL, gas=100_000_000), GasLimitExceeded),
        (lambda: sign(ALICE, nonce=0, to=CAROL, maxFeePerGas=1, maxPriorityFeePerGas=1), FeeTooLow),
    ],
)
def test_submit_rejects_invalid_transactions_and_keeps_the_pool_unchanged(
    chain: EmbeddedChain, make_raw: Any, error: type[Exception]
) -> None:
    with pytest.raises(error):
        chain.submit(make_raw())
    assert chain.pending_count == 0


def test_unprotected_legacy_transaction_is_rejected(chain: EmbeddedChain) -> None:
    from eth_account import Account

    raw = Account.sign_transaction(
        {"nonce": 0, "gasPrice": 2 * 10**9, "gas": 21_000, "to": CAROL, "value": 1, "data": b""}, ALICE
    ).raw_transaction
    with pytest.raises(WrongChainId, match="replay"):
        chain.submit(bytes(raw))


def test_nonce_reuse_known_and_underpriced_replacement_are_rejected(chain: EmbeddedChain) -> None:
    raw = sign(ALICE, nonce=0, to=CAROL, value=1)
    chain.submit(raw)
    with pytest.raises(AlreadyKnown):
        chain.submit(raw)
    with pytest.raises(ReplacementUnderpriced):
        chain.submit(sign(ALICE, nonce=0, to=CAROL, value=2))
    replacement = chain.submit(
        sign(ALICE, nonce=0, to=CAROL, value=2, maxFeePerGas=20 * 10**9, maxPriorityFeePerGas=2 * 10**9)
    )
    chain.mine_pending(chain.head.timestamp + 1)
    assert chain.get_balance(CAROL) == 2 and chain.get_receipt(replacement) is not None
    with pytest.raises(NonceTooLow):
        chain.submit(sign(ALICE, nonce=0, to=CAROL, value=5, maxFeePerGas=50 * 10**9))
    with pytest.raises(AlreadyKnown):
        chain.submit(
            sign(ALICE, nonce=0, to=CAROL, value=2, maxFeePerGas=20 * 10**9, maxPriorityFeePerGas=2 * 10**9)
        )


def test_transaction_waiting_on_a_nonce_gap_is_mined_once_the_gap_fills(chain: EmbeddedChain) -> None:
    chain.submit(sign(BOB, nonce=1, to=CAROL, value=1))
    assert chain.mine_pending(chain.head.timestamp + 1).transaction_count == 0
    assert chain.pending_count == 1 and chain.pending_nonce(address_of(BOB)) == 0
    chain.submit(sign(BOB, nonce=0, to=CAROL, value=1))
    assert chain.mine_pending(chain.head.timestamp + 1).transaction_count == 2


def test_restart_resumes_same_head_state_and_balances(tmp_path: Path) -> None:
    genesis = plain_genesis()
    chain = EmbeddedChain.open(tmp_path / "c", genesis)
    for n in range(3):
        chain.submit(sign(ALICE, nonce=n, to=CAROL, value=n + 1))
        chain.mine_pending(chain.head.timestamp + 1)
    head, root = chain.head.hash, chain.head.state_root
    balances = {a: chain.get_balance(a) for a in (CAROL, address_of(ALICE))}
    chain.close()
    resumed = EmbeddedChain.open(tmp_path / "c", genesis)
    assert resumed.head.hash == head and resumed.head.state_root == root
    assert {a: resumed.get_balance(a) for a in balances} == balances
    assert resumed.get_transaction_count(address_of(ALICE)) == 3
    resumed.submit(sign(ALICE, nonce=3, to=CAROL, value=1))
    assert resumed.mine_pending(resumed.head.timestamp + 1).number == 4
    resumed.close()
    again = EmbeddedChain.open(tmp_path / "c")  # no genesis needed to resume
    assert again.block_number == 4 and again.get_balance(CAROL) == 7
    again.close()


def test_open_with_another_genesis_or_without_any_fails(tmp_path: Path) -> None:
    EmbeddedChain.open(tmp_path / "c", plain_genesis()).close()
    other = ChainGenesis(chain_id=1960, alloc={}, timestamp=1)
    with pytest.raises(GenesisMismatchError):
        EmbeddedChain.open(tmp_path / "c", other)
    with pytest.raises(ChainNotInitializedError):
        EmbeddedChain.open(tmp_path / "empty")


def test_contract_logs_calls_reverts_and_gas_estimates(chain: EmbeddedChain, ping_artifact: dict[str, Any]) -> None:
    contract = deploy(chain, ALICE, ping_artifact["bytecode"])
    for n, key in ((5, ALICE), (7, BOB)):
        chain.submit(sign(key, nonce=chain.pending_nonce(address_of(key)), to=contract, gas=100_000, data=ping_data(n)))
    mined = chain.mine_pending(chain.head.timestamp + 1)
    assert mined.transaction_count == 2
    counter = chain.call(CallRequest(to=contract, data=function_signature_to_4byte_selector("counter()")))
    assert int.from_bytes(counter, "big") == 12
    topic0 = keccak(b"Ping(address,uint256,uint256)")
    alice_topic = b"\x00" * 12 + address_of(ALICE)
    every = chain.get_logs(LogFilter(from_block=0, to_block="latest", addresses=(contract,)))
    assert [int.from_bytes(entry.topics[2], "big") for entry in every] == [5, 7]
    assert [e.log_index for e in every] == [0, 1]
    only_alice = chain.get_logs(LogFilter(from_block=0, topics=(topic0, alice_topic)))
    assert len(only_alice) == 1 and only_alice[0].block_number == mined.number
    either = chain.get_logs(LogFilter(from_block=0, topics=(None, (alice_topic, b"\x00" * 12 + address_of(BOB)))))
    assert len(either) == 2
    assert chain.get_logs(LogFilter(from_block=0, topics=(keccak(b"Other()"),))) == []
    with pytest.raises(ExecutionReverted) as reverted:
        chain.call(CallRequest(to=contract, data=ping_data(0)))
    assert reverted.value.reason == "zero ping" and reverted.value.data[:4] == bytes.fromhex("08c379a0")
    estimate = chain.estimate_gas(CallRequest(to=contract, data=ping_data(1), sender=address_of(ALICE)))
    assert 21_000 < estimate < 100_000
    chain.call(CallRequest(to=contract, data=ping_data(1), gas=estimate, sender=address_of(ALICE)))
    # At most 1.5% above the smallest limit that works: 98.5% of it is below that smallest one.
    with pytest.raises(ExecutionFailed, match="OutOfGas"):
        chain.call(CallRequest(to=contract, data=ping_data(1), gas=estimate * 985 // 1000, sender=address_of(ALICE)))
    with pytest.raises(ExecutionReverted):
        chain.estimate_gas(CallRequest(to=contract, data=ping_data(0)))


def test_failed_transaction_is_mined_with_status_zero(chain: EmbeddedChain, ping_artifact: dict[str, Any]) -> None:
    contract = deploy(chain, ALICE, ping_artifact["bytecode"])
    h = chain.submit(sign(ALICE, nonce=1, to=contract, gas=100_000, data=ping_data(0)))
    chain.mine_pending(chain.head.timestamp + 1)
    receipt = chain.get_receipt(h)
    assert receipt is not None and receipt.status == 0 and receipt.logs == ()


def test_get_proof_verifies_against_the_block_state_root(chain: EmbeddedChain, ping_artifact: dict[str, Any]) -> None:
    contract = deploy(chain, ALICE, ping_artifact["bytecode"])
    chain.submit(sign(ALICE, nonce=1, to=contract, gas=100_000, data=ping_data(9)))
    chain.mine_pending(chain.head.timestamp + 1)
    block = chain.get_block("latest")
    proof = chain.get_proof(contract, [0, 1], block.number)
    nodes = [rlp.decode(n) for n in proof.account_proof]
    account = rlp.decode(HexaryTrie.get_from_proof(block.state_root, keccak(contract), nodes))
    assert [int.from_bytes(account[0], "big"), account[2], account[3]] == [
        proof.nonce, proof.storage_hash, proof.code_hash,
    ]
    assert proof.code_hash == keccak(chain.get_code(contract))
    slot0 = proof.storage_proof[0]
    value = HexaryTrie.get_from_proof(proof.storage_hash, keccak((0).to_bytes(32, "big")), [rlp.decode(n) for n in slot0.proof])
    assert rlp.decode(value, sedes=rlp.sedes.big_endian_int) == slot0.value == 9
    assert proof.storage_proof[1].value == 0
    absent = chain.get_proof(CAROL, [], block.number)
    assert HexaryTrie.get_from_proof(block.state_root, keccak(CAROL), [rlp.decode(n) for n in absent.account_proof]) == b""


def test_transaction_lookup_covers_pending_and_mined(chain: EmbeddedChain) -> None:
    h = chain.submit(sign(ALICE, nonce=0, to=CAROL, value=1))
    pending = chain.get_transaction(h)
    assert pending is not None and pending.block_number is None
    assert chain.get_receipt(h) is None
    assert chain.get_transaction_count(address_of(ALICE), "pending") == 1
    chain.mine_pending(chain.head.timestamp + 1)
    mined = chain.get_transaction(h)
    assert mined is not None and mined.block_number == 1 and mined.transaction_index == 0
    assert chain.get_transaction(b"\x00" * 32) is None


DRAINER_SOURCE = """
@external
@payable
def __default__():
    send(0x000000000000000000000000000000000000dEaD, self.balance)
"""


def test_transaction_invalidated_inside_its_block_is_dropped_and_the_block_still_mined(tmp_path: Path) -> None:
    import vyper

    from node.evm.chain import GenesisAccount

    runtime = bytes.fromhex(vyper.compile_code(DRAINER_SOURCE, output_formats=["bytecode_runtime"])["bytecode_runtime"][2:])
    drainer = b"\xd7" * 20
    alice, bob = address_of(ALICE), address_of(BOB)
    genesis = ChainGenesis(
        chain_id=1960,
        alloc={
            # ALICE's account delegates its code (EIP-7702) to a contract that sends its balance away
            alice: GenesisAccount(balance=ONE_ETHER, code=b"\xef\x01\x00" + drainer),
            bob: GenesisAccount(balance=1_000 * ONE_ETHER),
            drainer: GenesisAccount(code=runtime),
        },
        timestamp=1_700_000_000,
    )
    chain = EmbeddedChain.open(tmp_path / "c", genesis)
    try:
        trigger = chain.submit(sign(BOB, nonce=0, to=alice, gas=100_000))  # arrives first: drains ALICE
        doomed = chain.submit(sign(ALICE, nonce=0, to=CAROL, value=ONE_ETHER // 2))
        mined = chain.mine_pending(chain.head.timestamp + 1)
        assert mined.transaction_count == 1
        assert [h for h, _ in mined.dropped] == [doomed] and "invalid in block context" in chain.dropped[doomed]
        receipt = chain.get_receipt(trigger)
        assert receipt is not None and receipt.status == 1
        assert chain.get_balance(alice) == 0 and chain.get_receipt(doomed) is None
        assert chain.pending_count == 0
    finally:
        chain.close()


def test_async_mining_leaves_the_loop_serving_the_previous_head(chain: EmbeddedChain) -> None:
    import asyncio

    for n in range(150):
        chain.submit(sign(ALICE, nonce=n, to=CAROL, value=1))
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        task = asyncio.ensure_future(chain.mine_pending_async(chain.head.timestamp + 1))
        while not task.done():
            seen.append((chain.get_block("latest").number, chain.get_balance(CAROL)))
            await asyncio.sleep(0.001)
        assert (await task).transaction_count == 150

    asyncio.run(main())
    assert seen and all(s == (0, 0) for s in seen)  # never a half-applied block
    assert chain.block_number == 1 and chain.get_balance(CAROL) == 150 and chain.pending_count == 0


def test_cancelled_async_mining_keeps_store_and_mempool_in_step(chain: EmbeddedChain) -> None:
    import asyncio

    for n in range(100):
        chain.submit(sign(ALICE, nonce=n, to=CAROL, value=1))

    async def main() -> None:
        task = asyncio.ensure_future(chain.mine_pending_async(chain.head.timestamp + 1))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    if chain.block_number == 1:
        assert chain.pending_count == 0 and chain.get_balance(CAROL) == 100
    else:
        assert chain.pending_count == 100 and chain.get_balance(CAROL) == 0
    assert chain.mine_pending(chain.head.timestamp + 1).number == chain.block_number
    assert chain.get_balance(CAROL) == 100 and chain.pending_count == 0


def test_log_ranges_past_the_head_are_clamped_and_reversed_ranges_refused(
    chain: EmbeddedChain, ping_artifact: dict[str, Any]
) -> None:
    from node.evm.l1 import InvalidBlockIdError

    contract = deploy(chain, ALICE, ping_artifact["bytecode"])
    chain.submit(sign(ALICE, nonce=1, to=contract, gas=100_000, data=ping_data(2)))
    chain.mine_pending(chain.head.timestamp + 1)
    head = chain.block_number
    assert len(chain.get_logs(LogFilter(from_block=0, to_block=head + 1000, addresses=(contract,)))) == 1
    assert chain.get_logs(LogFilter(from_block=head + 1, to_block=head + 5)) == []
    with pytest.raises(InvalidBlockIdError):
        chain.get_logs(LogFilter(from_block=head, to_block=0))


def test_calldata_below_the_eip7623_floor_is_refused_and_estimates_cover_the_floor(chain: EmbeddedChain) -> None:
    """Prague prices calldata at 10 gas per token at least (EIP-7623). py-evm charges that floor
    at the end of a transaction but accepts a gas limit below it; this chain refuses such a
    transaction, as every Prague client does, and never estimates below the floor."""
    data = bytes(range(1, 256)) * 8  # 2,040 non-zero bytes: 8,160 tokens
    floor = data_floor_gas(data)
    assert floor == 21_000 + 10 * 4 * len(data)
    standard = 21_000 + 16 * len(data)  # what the pre-Prague rule asks of a plain transfer
    assert standard < floor
    with pytest.raises(IntrinsicGasTooLow, match="EIP-7623"):
        chain.submit(sign(ALICE, nonce=0, to=CAROL, value=1, data=data, gas=floor - 1))
    assert chain.pending_count == 0
    assert chain.estimate_gas(CallRequest(to=CAROL, data=data, sender=address_of(ALICE), value=1)) == floor
    chain.submit(sign(ALICE, nonce=0, to=CAROL, value=1, data=data, gas=floor))
    chain.mine_pending(chain.head.timestamp + 1)
    receipt = chain.get_receipt(keccak(sign(ALICE, nonce=0, to=CAROL, value=1, data=data, gas=floor)))
    assert receipt is not None and receipt.status == 1 and receipt.gas_used == floor


def test_a_block_written_but_not_yet_the_head_is_invisible_to_reads(chain: EmbeddedChain) -> None:
    """`mine_pending_async` writes the block in a thread and makes it the head on the loop: in
    between, a receipt, a block or a transaction of the new block must not show, or a client
    could see its receipt and then the old balance at "latest"."""
    raw = sign(ALICE, nonce=0, to=CAROL, value=7)
    tx_hash = chain.submit(raw)
    plan = chain._plan_block(chain.head.timestamp + 1)
    try:
        outcome = chain._execute_block(plan)  # what the miner thread does: the store has block 1
        assert chain.block_number == 0 and chain.get_balance(CAROL) == 0
        assert chain.get_receipt(tx_hash) is None
        pending = chain.get_transaction(tx_hash)
        assert pending is not None and pending.block_number is None
        with pytest.raises(BlockNotFoundError):
            chain.get_block(1)
        with pytest.raises(BlockNotFoundError):
            chain.get_block(outcome.header.hash)
        mined = chain._finish_block(plan, outcome)  # the loop's part: block 1 is the head
    finally:
        chain._mining = False
    assert mined is not None and mined.number == 1 == chain.block_number
    receipt = chain.get_receipt(tx_hash)
    assert receipt is not None and receipt.block_number == 1 and chain.get_balance(CAROL) == 7
    assert chain.get_block(1).hash == outcome.header.hash == chain.get_block(outcome.header.hash).hash
