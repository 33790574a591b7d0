"""Shared fixtures for the EVM chain tests: dev keys, a pre-funded genesis, a test contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import vyper
from eth_account import Account

from node.config import DEV_PRIVATE_KEYS, L1_CHAIN_ID, address_of
from node.evm.chain import ChainGenesis, EmbeddedChain, GenesisAccount

ONE_ETHER = 10**18
GENESIS_TIMESTAMP = 1_700_000_000
FUNDED_KEYS = DEV_PRIVATE_KEYS[:4]

# A small contract with a log, a revert with a reason, storage and a view.
PING_SOURCE = """
event Ping:
    who: indexed(address)
    n: indexed(uint256)
    total: uint256

counter: public(uint256)

@external
def ping(n: uint256):
    assert n != 0, "zero ping"
    self.counter += n
    log Ping(who=msg.sender, n=n, total=self.counter)

@external
@view
def fail_view():
    raise "always fails"
"""


def plain_genesis(balance: int = 1_000 * ONE_ETHER) -> ChainGenesis:
    """A genesis of plain pre-funded accounts (the first dev keys)."""
    return ChainGenesis(
        chain_id=L1_CHAIN_ID,
        alloc={address_of(k): GenesisAccount(balance=balance) for k in FUNDED_KEYS},
        timestamp=GENESIS_TIMESTAMP,
        gas_limit=60_000_000,
        base_fee_per_gas=1_000_000_000,
    )


def sign(key: bytes, **fields: Any) -> bytes:
    """A raw signed transaction; EIP-1559 unless `gasPrice` is given."""
    tx: dict[str, Any] = {"chainId": L1_CHAIN_ID, "gas": 21_000, "value": 0, "data": b""}
    tx.update(fields)
    if "gasPrice" not in tx:
        tx.setdefault("maxFeePerGas", 10 * 10**9)
        tx.setdefault("maxPriorityFeePerGas", 10**9)
        tx.setdefault("type", 2)
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


@pytest.fixture(scope="session")
def ping_artifact() -> dict[str, Any]:
    out = vyper.compile_code(PING_SOURCE, output_formats=["bytecode", "abi"])
    return {"bytecode": bytes.fromhex(out["bytecode"][2:]), "abi": out["abi"]}


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[EmbeddedChain]:
    c = EmbeddedChain.open(tmp_path / "chain", plain_genesis())
    yield c
    c.close()


def deploy(chain: EmbeddedChain, key: bytes, bytecode: bytes) -> bytes:
    """Deploy `bytecode` from `key` in the next block; return the contract address."""
    nonce = chain.pending_nonce(address_of(key))
    tx_hash = chain.submit(sign(key, nonce=nonce, gas=1_000_000, data=bytecode, to=b""))
    chain.mine_pending(chain.head.timestamp + 1)
    receipt = chain.get_receipt(tx_hash)
    assert receipt is not None and receipt.status == 1 and receipt.contract_address is not None
    return receipt.contract_address


class DevnetThread:
    """A `Devnet` service running in its own event-loop thread (real chain, real LevelDB, real
    HTTP server on a free port), for synchronous clients such as web3.py's HTTPProvider."""

    def __init__(self, data_dir: Path, genesis: ChainGenesis | None, block_time: float = 0.1) -> None:
        import asyncio
        import threading

        from node.config import DevnetConfig
        from node.devnet import Devnet

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.devnet = Devnet(DevnetConfig(data_dir=data_dir, eth_port=0, l1_block_time=block_time), genesis)

    def start(self) -> DevnetThread:
        self.thread.start()
        self.run(self.devnet.start())
        return self

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine in the devnet's loop and return its result."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.devnet.eth_url

    @property
    def chain(self) -> EmbeddedChain:
        assert self.devnet.chain is not None
        return self.devnet.chain

    def stop(self) -> None:
        self.run(self.devnet.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def devnet_thread(tmp_path: Path) -> Iterator[DevnetThread]:
    node = DevnetThread(tmp_path / "devnet", plain_genesis()).start()
    yield node
    node.stop()
