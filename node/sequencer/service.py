"""The TradeZone sequencer as a service of the devnet (or of any process with an L1 client).

``SequencerService`` composes the sequencer, the batcher, the TradeZone JSON-RPC/WebSocket
server and (optionally) the demo traders, over the devnet's L1 client. Its data lives in
``DATA_DIR/tz`` (LevelDB), next to the EVM chain's ``DATA_DIR/l1``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.config import BRIDGE_ADDRESS, SEQUENCER_DEV_INDEX, dev_accounts
from node.db import LevelDBStore
from node.evm.bridge import BridgeClient
from node.evm.l1 import L1Client
from node.sequencer.batcher import MAX_PENDING, Batcher
from node.sequencer.chainstore import ChainStore
from node.sequencer.sequencer import Sequencer, SequencerConfig, pruning_genesis

if TYPE_CHECKING:
    from node.demo import Demo

log = logging.getLogger(__name__)


class SequencerService:
    """Sequencer + batcher + TradeZone RPC (+ demo), started with the devnet."""

    def __init__(
        self,
        data_dir: Path,
        *,
        host: str = "127.0.0.1",
        tz_port: int = 8546,
        config: SequencerConfig | None = None,
        sequencer_key: bytes | None = None,
        bridge: bytes = BRIDGE_ADDRESS,
        demo: bool = True,
        progress: Callable[[str], None] | None = None,
        max_pending_batches: int = MAX_PENDING,
        tx_rate_limit: float = 0.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.max_pending_batches = max_pending_batches
        self.tx_rate_limit = tx_rate_limit
        self.host = host
        self.tz_port = tz_port
        self.config = config or SequencerConfig()
        self.key = sequencer_key if sequencer_key is not None else dev_accounts()[SEQUENCER_DEV_INDEX].private_key
        self.bridge = bridge
        self.with_demo = demo
        self.progress = progress
        self.sequencer: Sequencer | None = None
        self.batcher: Batcher | None = None
        self.rpc: Any = None
        self.demo: Demo | None = None
        self.port: int | None = None
        self._kv: LevelDBStore | None = None

    async def start(self, devnet: Any) -> None:
        await self.start_with(devnet.l1)
        devnet.tz_port = self.port

    async def start_with(self, l1: L1Client) -> None:
        """Open the TradeZone store, replay it, and start every part."""
        self._kv = LevelDBStore(self.data_dir / "tz")
        self.sequencer = Sequencer(ChainStore(self._kv), pruning_genesis(), l1, self.bridge, self.config)
        await self.sequencer.start()
        self.batcher = Batcher(self.sequencer, BridgeClient(l1, self.bridge), self.key, progress=self.progress,
                               max_pending=self.max_pending_batches)
        self.batcher.start()
        self._say(
            f"TradeZone at block {self.sequencer.head.number} root 0x{self.sequencer.head.state_root.hex()[:12]}, "
            f"{self.config.block_ms} ms blocks"
        )
        await self._start_rpc()
        if self.with_demo:
            from node.demo import Demo

            self.demo = Demo(self.sequencer, l1)
            self.demo.start()

    async def _start_rpc(self) -> None:
        from node.tzrpc import TzRpc
        from node.tzrpc.server import TzRpcConfig

        assert self.sequencer is not None
        self.rpc = TzRpc(self.sequencer, self.batcher, TzRpcConfig(tx_rate_per_client=self.tx_rate_limit))
        self.port = await self.rpc.start(self.host, self.tz_port)
        self._say(f"tz_* JSON-RPC and WebSocket on http://{self.host}:{self.port} (ws path /ws)")

    async def stop(self) -> None:
        if self.demo is not None:
            await self.demo.stop()
        if self.rpc is not None:
            await self.rpc.stop()
        if self.batcher is not None:
            await self.batcher.stop()
        if self.sequencer is not None:
            await self.sequencer.stop()
        if self._kv is not None:
            self._kv.close()

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)
        else:
            log.info(line)
