"""The batcher against the real bridge on the embedded EVM chain: batches commit the node's
roots, withdrawals become claimable once, the data on the EVM chain decodes to the blocks."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode

from node.config import BRIDGE_ADDRESS, USDT_ADDRESS, dev_accounts
from node.evm.bridge import BridgeClient, decode_commit_batch
from node.evm.l1 import ExecutionReverted, send_transaction
from node.sequencer.batch_codec import decode_batch
from node.sequencer.batcher import Batcher
from node.sequencer.chainstore import HEAD_SAFE
from node.tradezone.signing import Signer
from node.tradezone.transactions import PlaceOrder, Withdraw, encode_transaction

from .conftest import L1, TRADERS, open_sequencer, produce_order_blocks, selector

USDT = 1
SEQUENCER_KEY = dev_accounts()[9].private_key
ALICE, BOB = Signer(TRADERS[0].private_key), Signer(TRADERS[1].private_key)


async def usdt_balance(l1: L1, who: bytes) -> int:
    raw = await l1.client.call(USDT_ADDRESS, selector("balanceOf(address)") + abi_encode(["address"], [who]))
    return int.from_bytes(raw, "big")


def test_withdrawal_is_claimable_once_after_its_batch_commits(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)
    bridge = BridgeClient(l1.client, BRIDGE_ADDRESS)
    batcher = Batcher(seq, bridge, SEQUENCER_KEY)

    async def main() -> None:
        await l1.deposit_usdt(TRADERS[0].private_key, ALICE.address, 10_000_000)
        await l1.deposit_usdt(TRADERS[1].private_key, BOB.address, 10_000_000)
        while await seq.inbox.poll():
            pass
        assert seq.produce_block(seq.head.timestamp_ms + 100) is not None
        sell = ALICE.sign(PlaceOrder(2, 1, 1_000_000, 1, 2, False, 0), 0)
        buy = BOB.sign(PlaceOrder(2, 0, 1_000_000, 1, 1, False, 0), 0)
        out = await seq.submit([encode_transaction(sell), encode_transaction(buy)])
        assert all(isinstance(h, bytes) for h in out)
        seq.produce_block(seq.head.timestamp_ms + 100)
        before = await usdt_balance(l1, ALICE.address)
        withdraw = ALICE.sign(Withdraw(USDT, 3_000_000, ALICE.address), 1)
        assert isinstance((await seq.submit([encode_transaction(withdraw)]))[0], bytes)
        _block, receipts = seq.produce_block(seq.head.timestamp_ms + 100)  # type: ignore[misc]
        wid = receipts[0].withdrawal_id
        assert wid is not None

        assert await batcher.step()
        assert batcher.safe == seq.head.number == seq.store.head(HEAD_SAFE)
        assert await bridge.last_committed_root() == seq.head.state_root
        assert not await batcher.step()  # nothing new

        # the calldata on the EVM chain holds exactly the node's blocks
        record = seq.store.get_batch(0)
        assert record is not None
        tx = await l1.client.get_transaction(record.tx_hash)
        assert tx is not None
        call = decode_commit_batch(tx.input)
        blocks = decode_batch(call.data)
        assert [b.header for b in blocks] == [seq.store.get_header(n) for n in range(1, seq.head.number + 1)]

        claim = selector("claim(uint64,address,uint32,uint256)") + abi_encode(
            ["uint64", "address", "uint32", "uint256"], [wid, ALICE.address, USDT, 3_000_000])
        await send_transaction(l1.client, TRADERS[2].private_key, BRIDGE_ADDRESS, claim)
        assert await usdt_balance(l1, ALICE.address) == before + 3_000_000
        try:
            await send_transaction(l1.client, TRADERS[2].private_key, BRIDGE_ADDRESS, claim)
        except ExecutionReverted as err:
            assert "already claimed" in str(err)
        else:
            raise AssertionError("a second claim must revert")

    asyncio.run(main())
    seq.store.kv.close()


def test_batcher_resumes_from_the_bridge_after_a_restart(tmp_path: Path, l1: L1) -> None:
    seq = open_sequencer(tmp_path / "tz", l1)

    async def first() -> None:
        await l1.deposit_usdt(TRADERS[0].private_key, ALICE.address, 1_000_000)
        while await seq.inbox.poll():
            pass
        seq.produce_block(seq.head.timestamp_ms + 100)
        assert await Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY).step()
        await l1.deposit_usdt(TRADERS[0].private_key, ALICE.address, 2_000_000)
        while await seq.inbox.poll():
            pass
        seq.produce_block(seq.head.timestamp_ms + 100)  # unsafe, not batched before the "crash"

    asyncio.run(first())
    seq.store.kv.close()
    again = open_sequencer(tmp_path / "tz", l1)
    batcher = Batcher(again, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY)

    async def second() -> None:
        await batcher.sync()
        assert batcher.safe == 1
        assert await batcher.step()
        assert batcher.safe == again.head.number == 2
        assert again.state.balances[(ALICE.address, USDT)] == (3_000_000, 0)

    asyncio.run(second())
    again.store.kv.close()


def test_replay_from_l1_rebuilds_every_committed_root(tmp_path: Path, l1: L1) -> None:
    from node.sequencer.replay import replay_from_l1
    from node.tradezone.genesis import load_devnet
    from node.tradezone.state import compute_state_root

    seq = open_sequencer(tmp_path / "tz", l1)
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY)

    async def main() -> None:
        for round_ in range(3):
            await l1.deposit_usdt(TRADERS[0].private_key, ALICE.address, 1_000_000 * (round_ + 1))
            await l1.deposit_usdt(TRADERS[1].private_key, BOB.address, 2_000_000)
            while await seq.inbox.poll():
                pass
            seq.produce_block(seq.head.timestamp_ms + 100)
            sell = ALICE.sign(PlaceOrder(2, 1, 1_000_000, 1, 2, False, 0), round_)
            buy = BOB.sign(PlaceOrder(2, 0, 1_000_000, 1, 1, False, 0), round_)
            await seq.submit([encode_transaction(sell), encode_transaction(buy)])
            seq.produce_block(seq.head.timestamp_ms + 100)
            assert await batcher.step()
        result = await replay_from_l1(l1.client, BRIDGE_ADDRESS, load_devnet)
        assert result.batches == 3 and result.blocks == seq.head.number
        assert result.head == seq.head
        assert compute_state_root(result.state) == seq.head.state_root
        assert result.state.balances == seq.state.balances

    asyncio.run(main())
    seq.store.kv.close()


def test_trie_memory_stays_bounded_and_committed_roots_stay_provable(tmp_path: Path, l1: L1) -> None:
    from node.db import LevelDBStore
    from node.sequencer.chainstore import ChainStore
    from node.sequencer.sequencer import Sequencer, SequencerConfig, pruning_genesis
    from node.tradezone.state import balance_key
    from proofs.verify import verify_proof

    seq = Sequencer(ChainStore(LevelDBStore(tmp_path / "tz")), pruning_genesis(), l1.client, BRIDGE_ADDRESS,
                    SequencerConfig(workers=0, retained_batch_roots=2))
    seq.open()
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY)
    key = balance_key(ALICE.address, 1000)
    roots: list[bytes] = []

    async def main() -> None:
        for round_ in range(12):
            order = ALICE.sign(PlaceOrder(100, 0, 10 + round_ % 30, 1, 2, False, 0), round_)
            await seq.submit([encode_transaction(order)])
            seq.produce_block(seq.head.timestamp_ms + 100)
            assert await batcher.step()
            roots.append(seq.head.state_root)
            seq.prune_step()  # what the block loop does after its next block

    asyncio.run(main())
    trie = seq.state.trie
    assert not trie.pruning  # type: ignore[attr-defined]
    live: set[bytes] = set()
    for root in {*trie.retained_roots(), trie.root}:  # type: ignore[attr-defined]
        live.update(trie.stored_nodes(root))  # type: ignore[attr-defined]
    # pruned after every batch: the store holds exactly what the retained and current roots reach
    assert set(trie._store) == live  # type: ignore[attr-defined]
    for root in roots[-2:]:  # the retained committed roots, the last one included, stay provable
        assert verify_proof(root, key, seq.state.trie.prove(key, root))  # type: ignore[attr-defined]
    assert roots[0] not in seq.state.trie.retained_roots()  # type: ignore[attr-defined]
    seq.store.kv.close()


def test_a_running_sequencer_prunes_in_its_own_task_in_slices(tmp_path: Path, l1: L1) -> None:
    """With the sequencer's tasks running, nothing calls prune_step by hand: the pruner task frees
    what each batch released, in slices of a few records, between the blocks, and after each slice
    it leaves the loop to everything else for at least as long as the slice took."""
    from node.db import LevelDBStore
    from node.sequencer.chainstore import ChainStore
    from node.sequencer.sequencer import Sequencer, SequencerConfig, pruning_genesis

    seq = Sequencer(ChainStore(LevelDBStore(tmp_path / "tz")), pruning_genesis(), l1.client, BRIDGE_ADDRESS,
                    SequencerConfig(workers=0, retained_batch_roots=2, prune_step=7, block_ms=20))
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY)
    slices = 0
    spans: list[tuple[float, float]] = []
    step = seq.prune_step

    def counted() -> bool:
        nonlocal slices
        slices += 1
        started = time.monotonic()
        more = step()
        spans.append((started, time.monotonic()))
        return more

    seq.prune_step = counted  # type: ignore[method-assign]

    async def main() -> None:
        await seq.start()
        try:
            for round_ in range(8):
                head = seq.head.number
                order = ALICE.sign(PlaceOrder(100, 0, 10 + round_ % 30, 1, 2, False, 0), round_)
                await seq.submit([encode_transaction(order)])
                while seq.head.number == head:
                    await asyncio.sleep(0.01)
                assert await batcher.step()
            for _ in range(500):
                if not seq.state.trie.pruning and not seq._prune_due:  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.01)
        finally:
            await seq.stop()

    asyncio.run(main())
    trie = seq.state.trie
    assert not trie.pruning  # type: ignore[attr-defined]
    assert slices > 8  # rounds of more than seven records went in several slices
    for (start, end), (next_start, _) in zip(spans, spans[1:], strict=False):
        assert next_start - end >= 0.9 * (end - start)  # the pruner rested as long as it worked
    live: set[bytes] = set()
    for root in {*trie.retained_roots(), trie.root}:  # type: ignore[attr-defined]
        live.update(trie.stored_nodes(root))  # type: ignore[attr-defined]
    assert set(trie._store) == live  # type: ignore[attr-defined]
    seq.store.kv.close()


def test_replay_refuses_a_chain_created_with_another_tradezone_genesis(l1: L1) -> None:
    from node.sequencer.replay import ReplayError, replay_from_l1
    from node.tradezone.genesis import build_genesis_state, genesis_header, load_genesis_spec

    def other_genesis():  # type: ignore[no-untyped-def]
        spec = load_genesis_spec()
        spec["balances"] = spec["balances"][:1]
        state = build_genesis_state(spec)
        return state, genesis_header(state, spec)

    try:
        asyncio.run(replay_from_l1(l1.client, BRIDGE_ADDRESS, other_genesis))
    except ReplayError as err:
        assert "another TradeZone genesis" in str(err)
    else:
        raise AssertionError("a replay from another genesis must be refused")


def test_a_batch_ending_below_the_head_still_retains_its_root(tmp_path: Path, l1: L1) -> None:
    """Under load the batcher lags: a batch (bounded by its data size) ends below the unsafe head,
    and each committed batch prunes. The root of every committed batch must stay retained and
    provable all the same, including a block that was not the head when the previous batch pruned."""
    from node.db import LevelDBStore
    from node.sequencer.chainstore import ChainStore
    from node.sequencer.sequencer import Sequencer, SequencerConfig, pruning_genesis
    from node.tradezone.state import balance_key
    from proofs.verify import verify_proof

    seq = Sequencer(ChainStore(LevelDBStore(tmp_path / "tz")), pruning_genesis(), l1.client, BRIDGE_ADDRESS,
                    SequencerConfig(workers=0, retained_batch_roots=16))
    seq.open()
    bridge = BridgeClient(l1.client, BRIDGE_ADDRESS)
    batcher = Batcher(seq, bridge, SEQUENCER_KEY, max_data=400)  # about one block per batch
    key = balance_key(ALICE.address, 1000)
    roots: dict[int, bytes] = {}

    async def block(nonce: int) -> None:
        roots.update(await produce_order_blocks(seq, 1, nonce))

    async def main() -> None:
        for nonce in range(4):
            await block(nonce)  # blocks 1..4 wait for the batcher
        nonce = 4
        while batcher.safe < seq.head.number:
            assert await batcher.step()
            assert batcher.safe < seq.head.number or nonce >= 8  # each batch ends below the head
            committed = await bridge.last_committed_root()
            assert committed == roots[batcher.safe]
            trie = seq.state.trie
            assert committed in trie.retained_roots()  # type: ignore[attr-defined]
            assert verify_proof(committed, key, trie.prove(key, committed))  # type: ignore[attr-defined]
            if nonce < 8:
                await block(nonce)  # and blocks keep coming
                nonce += 1

    asyncio.run(main())
    seq.store.kv.close()


@pytest.mark.parametrize("snapshot", [True, False], ids=["from-snapshot", "from-genesis"])
def test_after_a_restart_the_node_holds_the_committed_and_the_unbatched_roots(
    tmp_path: Path, l1: L1, snapshot: bool
) -> None:
    from node.db import LevelDBStore
    from node.sequencer.chainstore import ChainStore
    from node.sequencer.sequencer import Sequencer, SequencerConfig, pruning_genesis

    def open_node() -> Sequencer:
        seq = Sequencer(ChainStore(LevelDBStore(tmp_path / "tz")), pruning_genesis(), l1.client, BRIDGE_ADDRESS,
                        SequencerConfig(workers=0, retained_batch_roots=2))
        seq.open()
        return seq

    seq = open_node()
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY, max_data=400)
    roots: dict[int, bytes] = {}

    async def block(nonce: int) -> None:
        roots.update(await produce_order_blocks(seq, 1, nonce))

    async def first_run() -> None:
        for nonce in range(6):
            await block(nonce)
        for _ in range(3):
            assert await batcher.step()  # three one-block batches: blocks 1..3 are safe

    asyncio.run(first_run())
    assert batcher.safe == 3
    if snapshot:
        seq.write_snapshot()
    seq.store.kv.close()

    seq = open_node()
    # committed: the last two batch roots; unbatched: blocks 4..6, any of which may end a batch
    assert seq.state.trie.retained_roots() == {roots[n] for n in (2, 3, 4, 5, 6)}  # type: ignore[attr-defined]
    batcher = Batcher(seq, BridgeClient(l1.client, BRIDGE_ADDRESS), SEQUENCER_KEY, max_data=400)

    async def second_run() -> None:
        assert await batcher.step()
        assert batcher.safe == 4

    asyncio.run(second_run())
    assert seq.state.trie.retained_roots() == {roots[n] for n in (3, 4, 5, 6)}  # type: ignore[attr-defined]
    seq.store.kv.close()
