"""`exos devnet`: one asyncio service that owns the embedded L1 chain, its block producer and its
eth_* JSON-RPC server, with hooks other services (the TradeZone sequencer) plug into.

Composition, in start order:
1. the chain (`EmbeddedChain.open`: initialised from the genesis on first start, resumed after);
2. the eth_* server on `eth_port` (`node.evm.rpc.EthRpc` over `node.jsonrpc.RpcServer`);
3. the attached services (`Devnet.attach`), each started with the running devnet;
4. the block producer: one block every `l1_block_time` seconds from the wall clock, empty or not;
   after each block every `on_block` listener is called.
Stop runs this in reverse and closes the store; no block is half-written at any point, because
each block is one atomic LevelDB write (see node/evm/chain.py).

Everything runs in one event loop thread, except the EVM execution and store write of each
block, which `EmbeddedChain.mine_pending_async` runs in a worker thread so that RPC requests
and attached services (TradeZone's 100 ms blocks) keep being served while a large L1 block is
mined; readers see the previous head until the whole new block is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web
from eth_utils import keccak

from node.config import (
    BRIDGE_ADDRESS,
    GOVERNANCE_ADDRESS,
    L1_CHAIN_ID,
    SEQUENCER_DEV_INDEX,
    STAKING_ADDRESS,
    TZ_CHAIN_ID,
    USDT_ADDRESS,
    WBTC_ADDRESS,
    DevnetConfig,
    dev_accounts,
)
from node.evm.chain import ChainGenesis, EmbeddedChain, GenesisAccount, MinedBlock
from node.evm.l1 import CallRequest, EmbeddedL1Client, L1Error
from node.evm.rpc import EthRpc
from node.jsonrpc import start_site

log = logging.getLogger(__name__)

DEFAULT_GENESIS_FILE = Path(__file__).resolve().parent.parent / "genesis" / "devnet.json"
DEV_BALANCE = 10_000 * 10**18
CONTRACTS: dict[str, bytes] = {
    "Bridge": BRIDGE_ADDRESS,
    "Staking": STAKING_ADDRESS,
    "Governance": GOVERNANCE_ADDRESS,
    "USDT": USDT_ADDRESS,
    "WBTC": WBTC_ADDRESS,
}
ARTIFACT_OF = {"USDT": "ERC20", "WBTC": "ERC20"}  # contract name -> artifact name
ASSET_IDS = {"OKB": 0, "USDT": 1, "WBTC": 2}
DEPLOYMENT_FILE = "deployment.json"


class DevnetError(Exception):
    """The devnet cannot start as configured."""


class DevnetFailed(Exception):
    """The devnet stopped because its block producer hit an unexpected error."""


class Service(Protocol):
    """Something that runs alongside the devnet (for example the TradeZone sequencer)."""

    async def start(self, devnet: Devnet) -> None: ...

    async def stop(self) -> None: ...


BlockListener = Callable[[MinedBlock], Awaitable[None] | None]


def plain_dev_genesis() -> ChainGenesis:
    """A genesis of the ten pre-funded dev accounts and no contracts (DEVNET ONLY)."""
    return ChainGenesis(
        chain_id=L1_CHAIN_ID,
        alloc={a.address: GenesisAccount(balance=DEV_BALANCE) for a in dev_accounts()},
        timestamp=int(time.time()),
    )


def load_genesis(path: Path | None) -> ChainGenesis:
    """The chain genesis from a genesis file (genesis/devnet.json when `path` is None).

    A genesis spec with predeployed `contracts` (the format of genesis/devnet.json) is built
    with `genesis.builder.build_l1_genesis`; a geth-style document with an `alloc` is read
    directly. Without any file the devnet falls back to `plain_dev_genesis()`.
    """
    if path is None:
        if not DEFAULT_GENESIS_FILE.exists():
            return plain_dev_genesis()
        path = DEFAULT_GENESIS_FILE
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        raise DevnetError(f"cannot read genesis file {path}: {exc}") from exc
    if not isinstance(doc, dict):
        raise DevnetError(f"genesis file {path} is not a JSON object")
    if "contracts" in doc:
        from genesis.builder import GenesisError, build_l1_genesis
        from node.tradezone.genesis import devnet_genesis_root

        try:
            # The bridge starts from TradeZone's genesis root, computed from the TradeZone
            # genesis the node runs (so the two can never drift apart).
            return build_l1_genesis(doc, tradezone_genesis_root=devnet_genesis_root()).chain_genesis()
        except GenesisError as exc:
            raise DevnetError(f"invalid genesis {path}: {exc}") from exc
    return ChainGenesis.from_json(doc)


def prepare_data_dir(data_dir: Path, fresh: bool) -> None:
    """Create `data_dir`; with `fresh`, first wipe it, but only if it holds a devnet (or nothing)."""
    if fresh and data_dir.exists():
        entries = {p.name for p in data_dir.iterdir()}
        if entries and not entries & {"l1", DEPLOYMENT_FILE}:
            raise DevnetError(f"refusing to wipe {data_dir}: it does not look like a devnet data dir")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)


class Devnet:
    """The devnet service. `await start()`, then `await wait_stopped()` or `await stop()`."""

    def __init__(
        self,
        config: DevnetConfig,
        genesis: ChainGenesis | None = None,
        *,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self._genesis = genesis
        self.progress = progress
        self.chain: EmbeddedChain | None = None
        self.eth: EthRpc | None = None
        self.l1: EmbeddedL1Client | None = None
        self.eth_port: int | None = None
        self.tz_port: int | None = None  # the bound TradeZone RPC port, set by the service serving it
        self.on_block: list[BlockListener] = []
        self._services: list[Service] = []
        self._started_services: list[Service] = []
        self._runner: web.AppRunner | None = None
        self._producer: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self._failed = asyncio.Event()
        self.failure: BaseException | None = None

    # -- composition ---------------------------------------------------------------------------

    def attach(self, service: Service) -> None:
        """Run `service` with the devnet: started after the eth server, stopped before it."""
        self._services.append(service)

    def add_block_listener(self, listener: BlockListener) -> None:
        self.on_block.append(listener)

    @property
    def eth_url(self) -> str:
        return f"http://{self.config.host}:{self.eth_port}"

    @property
    def tz_url(self) -> str:
        """The TradeZone RPC URL for deployment.json: the port an attached service reported in
        `tz_port` (set it in `Service.start` when binding port 0), else the configured one."""
        return f"http://{self.config.host}:{self.tz_port or self.config.tz_port}"

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the chain, serve eth_*, start attached services and the producer."""
        data_dir = Path(self.config.data_dir)
        prepare_data_dir(data_dir, self.config.fresh)
        genesis = self._genesis
        if genesis is None and (self.config.genesis_file is not None or not EmbeddedChain.is_initialized(data_dir)):
            # an explicit genesis file is checked against an existing chain (GenesisMismatchError)
            genesis = load_genesis(self.config.genesis_file)
        self.chain = EmbeddedChain.open(data_dir, genesis)
        self.l1 = EmbeddedL1Client(self.chain)
        self.eth = EthRpc(self.chain)
        try:
            self._runner, self.eth_port = await start_site(
                self.eth.server.make_app(), self.config.host, self.config.eth_port
            )
            for service in self._services:
                await service.start(self)
                self._started_services.append(service)
            self.write_deployment()
        except BaseException:
            await self._shutdown()
            raise
        head = self.chain.head
        self._say(
            f"L1 chain {self.chain.chain_id} at block {head.block_number} (0x{head.hash.hex()[:12]}), "
            f"eth_* JSON-RPC on {self.eth_url}, data in {data_dir}"
        )
        self._producer = asyncio.create_task(self._produce_blocks(), name="l1-block-producer")

    async def _produce_blocks(self) -> None:
        assert self.chain is not None
        loop = asyncio.get_running_loop()
        interval = self.config.l1_block_time
        deadline = loop.time() + interval
        while True:
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            started = loop.time()
            try:
                mined = await self.chain.mine_pending_async(int(time.time()))
            except Exception as exc:  # the chain is intact (atomic blocks); stop rather than limp on
                log.exception("L1 block producer failed")
                self._say(f"L1 block producer stopped: {type(exc).__name__}: {exc}")
                self.failure = exc
                self._failed.set()
                return
            took = loop.time() - started
            self._say(
                f"L1 block {mined.number:>6}  0x{mined.hash.hex()[:12]}  txs {mined.transaction_count:>4}  "
                f"gas {mined.gas_used:>10}  base fee {mined.base_fee_per_gas}  "
                f"pending {self.chain.pending_count}  ({took * 1000:.0f} ms)"
            )
            for tx_hash, reason in mined.dropped:
                self._say(f"  dropped 0x{tx_hash.hex()}: {reason}")
            for listener in list(self.on_block):
                try:
                    result = listener(mined)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("block listener failed on block %d", mined.number)
            deadline += interval
            if deadline < loop.time():  # mining took longer than the interval: no backlog
                deadline = loop.time()

    async def stop(self) -> None:
        """Stop the producer, the services and the server, then close the store."""
        await self._shutdown()
        self._stopped.set()

    async def _shutdown(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
            self._producer = None
        for service in reversed(self._started_services):
            try:
                await service.stop()
            except Exception:
                log.exception("service %r failed to stop", service)
        self._started_services.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self.chain is not None:
            self.chain.close()
            self.chain = None

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def wait_failed(self) -> BaseException | None:
        """Return the block producer's error once it has failed."""
        await self._failed.wait()
        return self.failure

    def _say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)
        else:
            log.info(line)

    # -- deployment.json -----------------------------------------------------------------------

    def deployment(self) -> dict[str, Any]:
        """Chain ids, RPC URLs, contracts (address and ABI), dev accounts and the sequencer."""
        assert self.chain is not None
        contracts: dict[str, Any] = {}
        for name, address in CONTRACTS.items():
            if not self.chain.get_code(address):
                continue
            entry: dict[str, Any] = {"address": _checksum(address)}
            abi = _contract_abi(name)
            if abi is not None:
                entry["abi"] = abi
            contracts[name] = entry
        accounts = dev_accounts()
        return {
            "l1": {
                "chainId": self.chain.chain_id,
                "rpcUrl": self.eth_url,
                "genesisHash": "0x" + self.chain.genesis_hash.hex(),
                "blockTime": self.config.l1_block_time,
            },
            "tradezone": {"chainId": TZ_CHAIN_ID, "rpcUrl": self.tz_url},
            "contracts": contracts,
            "assets": {
                symbol: {
                    "assetId": asset_id,
                    "token": _checksum(CONTRACTS[symbol]) if symbol in CONTRACTS else _checksum(b"\x00" * 20),
                }
                for symbol, asset_id in ASSET_IDS.items()
            },
            "sequencer": _checksum(self._sequencer_address()),
            "devAccountsWarning": "DEVNET ONLY: well-known public keys, anyone can spend from them",
            "devAccounts": [
                {
                    "index": a.index,
                    "role": a.role,
                    "address": _checksum(a.address),
                    "privateKey": "0x" + a.private_key.hex(),
                }
                for a in accounts
            ],
        }

    def _sequencer_address(self) -> bytes:
        """The bridge's sequencer (read from the chain), or the devnet's sequencer dev key."""
        assert self.chain is not None
        if self.chain.get_code(BRIDGE_ADDRESS):
            try:
                output = self.chain.call(CallRequest(to=BRIDGE_ADDRESS, data=keccak(b"sequencer()")[:4]))
                return output[12:32]
            except L1Error:
                log.warning("cannot read the bridge's sequencer; using the dev sequencer key")
        return dev_accounts()[SEQUENCER_DEV_INDEX].address

    def write_deployment(self) -> Path:
        """Write DIR/deployment.json atomically (temp file + rename)."""
        path = Path(self.config.data_dir) / DEPLOYMENT_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.deployment(), indent=2) + "\n")
        tmp.replace(path)
        return path


def _checksum(address: bytes) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)


def _contract_abi(name: str) -> list[Any] | None:
    from node.evm.compile import ArtifactError, load_artifact

    try:
        return list(load_artifact(ARTIFACT_OF.get(name, name)).abi)
    except ArtifactError:
        return None


async def run_devnet(
    config: DevnetConfig,
    *,
    progress: Callable[[str], None] | None = print,
    services: Sequence[Service] = (),
) -> None:
    """Run the devnet (with `services` attached) until SIGINT/SIGTERM, then shut it down cleanly."""
    import signal

    devnet = Devnet(config, progress=progress)
    for service in services:
        devnet.attach(service)
    await devnet.start()
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_requested.set)
    stop_wait = asyncio.ensure_future(stop_requested.wait())
    fail_wait = asyncio.ensure_future(devnet.wait_failed())
    try:
        await asyncio.wait([stop_wait, fail_wait], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop_wait.cancel()
        fail_wait.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if progress is not None:
            progress("shutting down")
        await devnet.stop()
        if progress is not None:
            progress("stopped cleanly" if devnet.failure is None else "stopped after a failure")
    if devnet.failure is not None:
        raise DevnetFailed(f"the L1 block producer failed: {devnet.failure}") from devnet.failure
