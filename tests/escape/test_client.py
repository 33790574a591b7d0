"""The escape client on the real embedded EVM chain with the devnet bridge and a real in-process
sequencer and batcher: status, forced withdrawal requests, freeze, escape withdrawals proved by
replaying the EVM chain's calldata, refunds, and every refusal checked before sending (and the
bridge's revert reasons mapped to the same refusals)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode

from node.config import BRIDGE_ADDRESS, USDT_ADDRESS, dev_accounts
from node.escape.client import EscapeClient
from node.escape.errors import (
    AlreadyFrozen,
    AlreadyRefunded,
    AlreadyWithdrawn,
    AssetNotListed,
    BridgeFrozen,
    DeadlineNotPassed,
    DepositConsumed,
    EscapeError,
    NoPendingMessage,
    NoSuchMessage,
    NotADeposit,
    NotFrozen,
    NothingToWithdraw,
    ProofMismatch,
    ProofSourceError,
)
from node.escape.proof import (
    EscapeProof,
    check_escape_proof,
    load_proof_file,
    proof_from_replay,
    proof_from_state,
    write_proof_file,
)
from node.escape.watcher import freeze_if_possible, watch_and_freeze
from node.evm.bridge import BridgeClient, selector
from node.sequencer.batcher import Batcher
from node.sequencer.sequencer import Sequencer
from node.tradezone.signing import Signer
from node.tradezone.transactions import PlaceOrder, encode_transaction
from tests.sequencer.conftest import L1, TRADERS, open_sequencer

USDT = 1
SEQUENCER_KEY = dev_accounts()[9].private_key
ALICE_KEY, BOB_KEY, CAROL_KEY = (t.private_key for t in TRADERS)
ALICE, BOB, CAROL = (Signer(k) for k in (ALICE_KEY, BOB_KEY, CAROL_KEY))
DAVE_KEY = dev_accounts()[4].private_key  # funded on L1, never deposited
MARK = 1_000_000


async def usdt_of(l1: L1, who: bytes) -> int:
    raw = await l1.client.call(USDT_ADDRESS, selector("balanceOf(address)") + abi_encode(["address"], [who]))
    return int.from_bytes(raw, "big")


async def include_and_batch(seq: Sequencer, batcher: Batcher) -> None:
    """Read the L1 queue, produce a block, commit everything as a batch."""
    while await seq.inbox.poll():
        pass
    seq.produce_block(seq.head.timestamp_ms + 100)
    assert await batcher.step()


async def trade_and_commit(l1: L1, seq: Sequencer, batcher: Batcher) -> None:
    """Alice and Bob deposit 10,000 USDT each, trade 3 lots of BTC-PERP; a batch commits it all."""
    await l1.deposit_usdt(ALICE_KEY, ALICE.address, 10_000_000_000)
    await l1.deposit_usdt(BOB_KEY, BOB.address, 10_000_000_000)
    await include_and_batch(seq, batcher)
    sell = ALICE.sign(PlaceOrder(2, 1, MARK, 3, 2, False, 0), 0)
    buy = BOB.sign(PlaceOrder(2, 0, MARK, 3, 1, False, 0), 0)
    assert all(isinstance(h, bytes) for h in await seq.submit([encode_transaction(sell), encode_transaction(buy)]))
    seq.produce_block(seq.head.timestamp_ms + 100)
    assert await batcher.step()
    assert (ALICE.address, 2) in seq.state.positions


def mine(l1: L1, blocks: int) -> None:
    for _ in range(blocks):
        l1.mine()


async def mine_past_deadline(l1: L1, client: EscapeClient) -> None:
    status = await client.status()
    assert status.head is not None
    mine(l1, status.head.deadline - status.l1_block)


def test_escape_flow_with_every_refusal(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY)
    client = EscapeClient(l1.client, BRIDGE_ADDRESS)

    async def main() -> None:
        await trade_and_commit(l1, seq, batcher)
        committed = seq.state.balances
        alice_value, bob_value = committed[(ALICE.address, USDT)][0], committed[(BOB.address, USDT)][0]
        assert alice_value == 10_000_000_000 and 0 < bob_value < 10_000_000_000  # the taker paid a fee
        # the sequencer halts: Carol's deposit and Alice's forced withdrawal are never included
        await l1.deposit_usdt(CAROL_KEY, CAROL.address, 5_000_000)
        carol_index = await client.bridge.message_count() - 1
        request = await client.request_forced_withdrawal(ALICE_KEY, USDT)
        assert request.index == carol_index + 1
        assert request.deadline == request.l1_block + await client.forced_inclusion_delay()

        status = await client.status()
        assert not status.frozen and not status.can_freeze
        assert status.head is not None and status.head.index == carol_index == status.committed_cursor
        assert status.last_committed_root == seq.head.state_root and status.last_batch is not None
        assert status.last_batch.tz_block == seq.head.number
        assert any("queue head" in line for line in status.lines())

        with pytest.raises(AssetNotListed):
            await client.request_forced_withdrawal(ALICE_KEY, 1000)
        with pytest.raises(DeadlineNotPassed, match="blocks to go"):
            await client.freeze(DAVE_KEY)
        assert not await freeze_if_possible(client, DAVE_KEY)
        proof = await proof_from_replay(l1.client, BRIDGE_ADDRESS, ALICE.address, USDT)
        with pytest.raises(NotFrozen):
            await client.withdraw(ALICE_KEY, USDT, proof)
        with pytest.raises(NotFrozen):
            await client.refund(DAVE_KEY, carol_index)

        await mine_past_deadline(l1, client)
        assert await client.can_freeze()
        await client.freeze(DAVE_KEY)
        assert await client.frozen()
        with pytest.raises(AlreadyFrozen):
            await client.freeze(DAVE_KEY)
        with pytest.raises(BridgeFrozen):
            await client.request_forced_withdrawal(BOB_KEY, USDT)

        # the proof rebuilt from the EVM chain proves the committed balance
        leaf = check_escape_proof(proof, await client.bridge.last_committed_root())
        assert (leaf.balance, leaf.reserved) == committed[(ALICE.address, USDT)]
        before = await usdt_of(l1, ALICE.address)
        escaped = await client.withdraw(ALICE_KEY, USDT, proof)
        assert escaped.amount == alice_value
        assert await usdt_of(l1, ALICE.address) == before + alice_value
        with pytest.raises(AlreadyWithdrawn, match="already withdrawn"):
            await client.withdraw(ALICE_KEY, USDT, proof)
        # the chain refuses the same way when the local checks are skipped
        data = selector("escapeWithdraw(uint32,bytes,bytes[])") + abi_encode(
            ["uint32", "bytes", "bytes[]"], [USDT, proof.value, list(proof.nodes)])
        with pytest.raises(AlreadyWithdrawn, match="already escaped"):
            await client._send(ALICE_KEY, data)

        # Bob's proof is no use to Carol: refused locally, and by the chain (another key)
        bob_proof = await proof_from_replay(l1.client, BRIDGE_ADDRESS, BOB.address, USDT)
        with pytest.raises(EscapeError, match="the proof is for account"):
            await client.withdraw(CAROL_KEY, USDT, bob_proof)
        stolen = selector("escapeWithdraw(uint32,bytes,bytes[])") + abi_encode(
            ["uint32", "bytes", "bytes[]"], [USDT, bob_proof.value, list(bob_proof.nodes)])
        with pytest.raises((ProofMismatch, NothingToWithdraw)):
            await client._send(CAROL_KEY, stolen)
        # a tampered value, a truncated proof and a proof for another root never leave the client
        tampered = dataclasses.replace(bob_proof, value=bob_proof.value[:-1] + b"\x01")
        with pytest.raises(ProofMismatch):
            await client.withdraw(BOB_KEY, USDT, tampered)
        with pytest.raises(ProofMismatch):
            await client.withdraw(BOB_KEY, USDT, dataclasses.replace(bob_proof, nodes=bob_proof.nodes[:-1]))
        with pytest.raises(ProofMismatch, match="committed root"):
            await client.withdraw(BOB_KEY, USDT, dataclasses.replace(bob_proof, root=b"\x11" * 32))
        # Carol's deposit never reached TradeZone: no leaf, nothing to escape
        carol_proof = await proof_from_replay(l1.client, BRIDGE_ADDRESS, CAROL.address, USDT)
        with pytest.raises(NothingToWithdraw):
            await client.withdraw(CAROL_KEY, USDT, carol_proof)

        # a proof file round-trips and pays Bob exactly his committed balance
        path = tmp_path / "bob.json"
        write_proof_file(path, bob_proof)
        loaded = load_proof_file(path, BOB.address, USDT)
        assert loaded == bob_proof
        with pytest.raises(ProofSourceError):
            load_proof_file(path, ALICE.address, USDT)
        before = await usdt_of(l1, BOB.address)
        assert (await client.withdraw(BOB_KEY, USDT, loaded)).amount == bob_value
        assert await usdt_of(l1, BOB.address) == before + bob_value

        # refunds: only Carol's unconsumed deposit, once, to its depositor
        with pytest.raises(DepositConsumed):
            await client.refund(DAVE_KEY, 0)
        with pytest.raises(NotADeposit):
            await client.refund(DAVE_KEY, request.index)
        with pytest.raises(NoSuchMessage):
            await client.refund(DAVE_KEY, request.index + 1)
        before = await usdt_of(l1, CAROL.address)
        refunded = await client.refund(DAVE_KEY, carol_index)
        assert (refunded.depositor, refunded.amount) == (CAROL.address, 5_000_000)
        assert await usdt_of(l1, CAROL.address) == before + 5_000_000
        with pytest.raises(AlreadyRefunded):
            await client.refund(DAVE_KEY, carol_index)

        # what the bridge still holds is exactly the committed balances nobody escaped yet (the
        # venue's fee account): custody covered every payment and nothing is left unaccounted
        unescaped = sum(balance for (account, asset), (balance, _) in committed.items()
                        if asset == USDT and account not in (ALICE.address, BOB.address))
        assert unescaped > 0 and await client.holdings(USDT) == unescaped

    asyncio.run(main())
    seq.store.kv.close()


def test_live_sequencer_serves_the_forced_withdrawal_and_no_freeze_is_possible(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY)
    client = EscapeClient(l1.client, BRIDGE_ADDRESS)

    async def main() -> None:
        with pytest.raises(NoPendingMessage):
            await client.check_freeze()
        await trade_and_commit(l1, seq, batcher)
        # Alice has a resting order: the forced withdrawal cancels it and takes the full balance
        rest = ALICE.sign(PlaceOrder(2, 1, MARK * 2, 1, 0, False, 0), 1)
        assert isinstance((await seq.submit([encode_transaction(rest)]))[0], bytes)
        seq.produce_block(seq.head.timestamp_ms + 100)
        request = await client.request_forced_withdrawal(ALICE_KEY, USDT)
        await include_and_batch(seq, batcher)
        assert await client.committed_cursor() == request.index + 1
        withdrawal = [w for w in seq.state.withdrawals.values() if w.account == ALICE.address]
        assert len(withdrawal) == 1
        wid = next(i for i, w in seq.state.withdrawals.items() if w.account == ALICE.address)
        amount = withdrawal[0].amount
        assert amount > 0 and not seq.state.orders_of.get(ALICE.address)
        before = await usdt_of(l1, ALICE.address)
        from node.evm.l1 import send_transaction

        claim = selector("claim(uint64,address,uint32,uint256)") + abi_encode(
            ["uint64", "address", "uint32", "uint256"], [wid, ALICE.address, USDT, amount])
        await send_transaction(l1.client, ALICE_KEY, BRIDGE_ADDRESS, claim)
        assert await usdt_of(l1, ALICE.address) == before + amount
        # the queue is fully consumed: no freeze, even long after the request's deadline
        mine(l1, request.deadline - await l1.client.block_number() + 3)
        assert not await client.can_freeze()
        with pytest.raises(NoPendingMessage):
            await client.freeze(DAVE_KEY)
        assert not await freeze_if_possible(client, DAVE_KEY)
        assert not await client.frozen()

    asyncio.run(main())
    seq.store.kv.close()


def test_freeze_watcher_freezes_as_soon_as_the_deadline_passes(tmp_path: Path, l1: L1) -> None:
    client = EscapeClient(l1.client, BRIDGE_ADDRESS)

    async def main() -> None:
        request = await client.request_forced_withdrawal(ALICE_KEY, USDT)
        stop = asyncio.Event()
        lines: list[str] = []
        watcher = asyncio.create_task(
            watch_and_freeze(client, DAVE_KEY, poll_seconds=0.01, stop=stop, progress=lines.append))
        frozen_at = None
        for _ in range(request.deadline + 5):
            await asyncio.sleep(0.02)
            if watcher.done():
                break
            if await l1.client.block_number() >= request.deadline:
                break  # freezing is allowed from the next block on: the watcher is at it now
            assert not await client.frozen()  # not frozen early
            l1.mine()
        assert await asyncio.wait_for(watcher, 10)
        frozen_at = await l1.client.block_number()
        assert await client.frozen() and frozen_at == request.deadline + 1
        assert lines == ["froze the bridge"]
        # a second watcher sees the bridge frozen by someone else and stops
        assert not await watch_and_freeze(client, DAVE_KEY, poll_seconds=0.01)

    asyncio.run(main())


def test_proof_from_state_refuses_a_root_it_does_not_hold(tmp_path: Path, sequencer: Sequencer) -> None:
    with pytest.raises(ProofSourceError):
        proof_from_state(sequencer.state, ALICE.address, USDT, b"\x22" * 32)
    proof = proof_from_state(sequencer.state, ALICE.address, USDT, sequencer.head.state_root)
    assert isinstance(proof, EscapeProof) and proof.value == b""
    with pytest.raises(NothingToWithdraw):
        check_escape_proof(proof, sequencer.head.state_root)


def test_a_key_without_coins_cannot_request_and_is_told_so(tmp_path: Path, l1: L1) -> None:
    from node.escape.errors import InsufficientFunds

    client = EscapeClient(l1.client, BRIDGE_ADDRESS)
    with pytest.raises(InsufficientFunds, match="cannot pay the forced withdrawal fee"):
        asyncio.run(client.request_forced_withdrawal(b"\x07" * 32, USDT))
    assert asyncio.run(client.bridge.message_count()) == 0
