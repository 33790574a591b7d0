"""A real node for the tz_* RPC tests: the devnet service (embedded EVM chain with the devnet
contracts, LevelDB, eth_* server, L1 blocks every 0.2 s) with the TradeZone sequencer, batcher
and TzRpc attached, all in one event-loop thread, so synchronous clients (the SDK, urllib,
web3.py) talk to it over real sockets."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.config import BRIDGE_ADDRESS, DevnetConfig, dev_accounts
from node.db import LevelDBStore
from node.devnet import Devnet
from node.evm.bridge import BridgeClient
from node.sequencer.batcher import Batcher
from node.sequencer.chainstore import ChainStore
from node.sequencer.sequencer import Sequencer, SequencerConfig
from node.tradezone.genesis import load_devnet
from node.tradezone.signing import Signer
from node.tzrpc import TzRpc, TzRpcConfig
from tests.sequencer.conftest import devnet_chain_genesis

ACCOUNTS = dev_accounts()
SEQUENCER_KEY = ACCOUNTS[9].private_key
ORACLE = Signer(ACCOUNTS[8].private_key)  # oracle and resolver of the devnet markets
USDT, WCP = 1, 1000
SPOT, BTC_PERP, OUTCOME = 1, 2, 100


class TzService:
    """The sequencer, its batcher (stepped by the tests) and the tz_* server, as a devnet service."""

    def __init__(self, data_dir: Path, sequencer_config: SequencerConfig, rpc_config: TzRpcConfig) -> None:
        self.data_dir = data_dir
        self.sequencer_config = sequencer_config
        self.rpc_config = rpc_config
        self.kv: LevelDBStore | None = None
        self.sequencer: Sequencer
        self.batcher: Batcher
        self.rpc: TzRpc
        self.port = 0

    async def start(self, devnet: Devnet) -> None:
        assert devnet.l1 is not None
        self.kv = LevelDBStore(self.data_dir)
        self.sequencer = Sequencer(ChainStore(self.kv), load_devnet, devnet.l1, BRIDGE_ADDRESS,
                                   self.sequencer_config)
        await self.sequencer.start()
        self.batcher = Batcher(self.sequencer, BridgeClient(devnet.l1, BRIDGE_ADDRESS), SEQUENCER_KEY,
                               progress=lambda line: None)
        self.rpc = TzRpc(self.sequencer, self.batcher, self.rpc_config)
        self.port = await self.rpc.start(devnet.config.host, 0)
        devnet.tz_port = self.port

    async def stop(self) -> None:
        await self.rpc.stop()
        await self.sequencer.stop()
        if self.kv is not None:
            self.kv.close()


class Node:
    """The devnet with the TradeZone service, running in its own event-loop thread."""

    def __init__(self, data_dir: Path, *, block_ms: int = 50, mempool_total: int = 200_000,
                 rpc_config: TzRpcConfig | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.devnet = Devnet(DevnetConfig(data_dir=data_dir / "l1", eth_port=0, l1_block_time=0.2),
                             devnet_chain_genesis())
        self.service = TzService(data_dir / "tz", SequencerConfig(block_ms=block_ms, workers=0,
                                                                   mempool_total=mempool_total),
                                 rpc_config or TzRpcConfig())
        self.devnet.attach(self.service)

    def start(self) -> Node:
        self.thread.start()
        self.run(self.devnet.start())
        return self

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine in the node's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run a plain function in the node's loop thread (the state is only touched there)."""
        async def wrapper() -> Any:
            return fn(*args)

        return self.run(wrapper())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.service.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.service.port}/ws"

    @property
    def eth_url(self) -> str:
        return self.devnet.eth_url

    @property
    def sequencer(self) -> Sequencer:
        return self.service.sequencer

    def step_batcher(self) -> bool:
        return bool(self.run(self.service.batcher.step()))

    def stop(self) -> None:
        self.run(self.devnet.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    running = Node(tmp_path_factory.mktemp("tznode")).start()
    yield running
    running.stop()
