"""Fixtures for the sequencer: a real embedded EVM chain with the devnet contracts, a real
LevelDB store for TradeZone, and helpers that act on the chain as users do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from genesis.builder import DEVNET_SPEC_PATH, build_l1_genesis
from node.config import BRIDGE_ADDRESS, USDT_ADDRESS, dev_accounts
from node.db import LevelDBStore
from node.evm.chain import EmbeddedChain
from node.evm.l1 import EmbeddedL1Client, send_transaction
from node.sequencer.chainstore import ChainStore
from node.sequencer.sequencer import Sequencer, SequencerConfig
from node.tradezone.genesis import devnet_genesis_root, load_devnet


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def devnet_chain_genesis():  # type: ignore[no-untyped-def]
    spec = json.loads(Path(DEVNET_SPEC_PATH).read_text())
    return build_l1_genesis(spec, tradezone_genesis_root=devnet_genesis_root()).chain_genesis()


class L1:
    """The embedded EVM chain, mined on demand by the test."""

    def __init__(self, path: Path) -> None:
        self.chain = EmbeddedChain.open(path, devnet_chain_genesis())
        self.client = EmbeddedL1Client(self.chain, auto_mine=True)
        self.timestamp = self.chain.head.timestamp

    def mine(self) -> None:
        self.timestamp += 1
        self.chain.mine_pending(self.timestamp)

    async def deposit_usdt(self, key: bytes, recipient: bytes, amount: int) -> None:
        await send_transaction(
            self.client, key, USDT_ADDRESS, selector("approve(address,uint256)") + abi_encode(
                ["address", "uint256"], [BRIDGE_ADDRESS, amount]))
        await send_transaction(
            self.client, key, BRIDGE_ADDRESS, selector("deposit(address,address,uint256)") + abi_encode(
                ["address", "address", "uint256"], [USDT_ADDRESS, recipient, amount]))


@pytest.fixture
def l1(tmp_path: Path) -> Iterator[L1]:
    chain = L1(tmp_path / "l1")
    yield chain
    chain.chain.close()


def open_sequencer(path: Path, l1: L1, **config: int) -> Sequencer:
    store = ChainStore(LevelDBStore(path))
    sequencer = Sequencer(store, load_devnet, l1.client, BRIDGE_ADDRESS, SequencerConfig(workers=0, **config))
    sequencer.open()
    return sequencer


@pytest.fixture
def sequencer(tmp_path: Path, l1: L1) -> Iterator[Sequencer]:
    seq = open_sequencer(tmp_path / "tz", l1)
    yield seq
    seq.store.kv.close()


TRADERS = dev_accounts()[5:8]


async def produce_order_blocks(seq: Sequencer, count: int, first_nonce: int) -> dict[int, bytes]:
    """``count`` blocks of one resting outcome-market bid each, signed by the first trader with
    nonces from ``first_nonce``; their state roots by block number."""
    from node.tradezone.signing import Signer
    from node.tradezone.transactions import PlaceOrder, encode_transaction

    trader = Signer(TRADERS[0].private_key)
    roots = {}
    for nonce in range(first_nonce, first_nonce + count):
        order = trader.sign(PlaceOrder(100, 0, 10 + nonce % 30, 1, 2, False, 0), nonce)
        assert isinstance((await seq.submit([encode_transaction(order)]))[0], bytes)
        assert seq.produce_block(seq.head.timestamp_ms + 100) is not None
        roots[seq.head.number] = seq.head.state_root
    return roots
