"""External-L1 mode: the sequencer talks to the EVM chain only over standard eth_* JSON-RPC.
When that chain is unreachable it keeps producing unsafe blocks, retries with backoff, and
catches up (inbox and batches) when the chain comes back."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from node.config import DevnetConfig
from node.devnet import Devnet
from node.evm.l1 import JsonRpcL1Client
from node.sequencer.sequencer import SequencerConfig
from node.sequencer.service import SequencerService
from node.tradezone.signing import Signer
from node.tradezone.transactions import PlaceOrder, encode_transaction

from .conftest import TRADERS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def test_sequencer_survives_an_unreachable_l1_and_catches_up(tmp_path: Path) -> None:
    port = free_port()
    config = DevnetConfig(data_dir=tmp_path / "devnet", eth_port=port, tz_port=0, l1_block_time=0.2)
    alice = Signer(TRADERS[0].private_key)

    async def main() -> None:
        devnet = Devnet(config, progress=None)
        await devnet.start()
        l1 = JsonRpcL1Client(devnet.eth_url, timeout=2.0, retries=1)
        service = SequencerService(tmp_path / "seq", tz_port=0, demo=False,
                                   config=SequencerConfig(block_ms=50, workers=0, l1_poll_s=0.05))
        await service.start_with(l1)
        seq, batcher = service.sequencer, service.batcher
        assert seq is not None and batcher is not None
        try:
            order = alice.sign(PlaceOrder(100, 0, 40, 1, 2, False, 0), 0)  # WCP is a genesis balance
            await seq.submit([encode_transaction(order)])
            await wait_until(lambda: batcher.safe >= 1)

            await devnet.stop()  # the EVM chain goes away
            await wait_until(lambda: not seq.l1_reachable)
            before = seq.head.number
            for nonce in range(1, 6):
                order = alice.sign(PlaceOrder(100, 0, 40 - nonce, 1, 2, False, 0), nonce)
                assert isinstance((await seq.submit([encode_transaction(order)]))[0], bytes)
                await asyncio.sleep(0.1)
            assert seq.head.number >= before + 3  # unsafe blocks go on without the L1
            assert batcher.safe < seq.head.number

            devnet = Devnet(config, progress=None)  # same data dir, same port
            await devnet.start()
            await wait_until(lambda: batcher.safe == seq.head.number, timeout=30)
            await wait_until(lambda: seq.l1_reachable)
            assert batcher.crashed is None and seq.crashed is None
        finally:
            await service.stop()
            await l1.close()
            await devnet.stop()

    asyncio.run(main())
