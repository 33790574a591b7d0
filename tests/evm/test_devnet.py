"""The devnet service: composition hooks, deployment.json, producer failure handling, --fresh."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from node.config import DevnetConfig
from node.db import StoreClosedError
from node.devnet import Devnet, DevnetError, prepare_data_dir
from node.evm.chain import MinedBlock
from tests.evm.conftest import plain_genesis


class RecordingService:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def start(self, devnet: Devnet) -> None:
        assert devnet.chain is not None and devnet.eth_port
        self.log.append("start")

    async def stop(self) -> None:
        self.log.append("stop")


def test_services_blocks_listeners_and_deployment(tmp_path: Path) -> None:
    events: list[str] = []
    blocks: list[MinedBlock] = []

    async def main() -> dict[str, Any]:
        devnet = Devnet(DevnetConfig(data_dir=tmp_path / "d", eth_port=0, l1_block_time=0.05), plain_genesis())
        devnet.attach(RecordingService(events))
        devnet.add_block_listener(blocks.append)
        await devnet.start()
        while len(blocks) < 3:
            await asyncio.sleep(0.02)
        deployment = json.loads((tmp_path / "d" / "deployment.json").read_text())
        await devnet.stop()
        return deployment

    deployment = asyncio.run(main())
    assert events == ["start", "stop"]
    assert [b.number for b in blocks[:3]] == [1, 2, 3]
    assert all(b.timestamp > a.timestamp for a, b in zip(blocks, blocks[1:], strict=False))
    assert deployment["l1"]["chainId"] == 1960 and deployment["tradezone"]["chainId"] == 1961
    assert deployment["l1"]["rpcUrl"].startswith("http://127.0.0.1:")
    assert len(deployment["devAccounts"]) == 10 and deployment["contracts"] == {}


def test_producer_failure_stops_the_devnet_with_the_error(tmp_path: Path) -> None:
    async def main() -> BaseException | None:
        devnet = Devnet(DevnetConfig(data_dir=tmp_path / "d", eth_port=0, l1_block_time=0.05), plain_genesis())
        await devnet.start()
        assert devnet.chain is not None
        devnet.chain.store.close()  # the store goes away under the producer
        failure = await asyncio.wait_for(devnet.wait_failed(), 10)
        await devnet.stop()
        return failure

    assert isinstance(asyncio.run(main()), StoreClosedError)


def test_fresh_refuses_to_wipe_a_directory_that_is_not_a_devnet(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(DevnetError, match="refusing"):
        prepare_data_dir(tmp_path, fresh=True)
    assert (tmp_path / "precious.txt").exists()
    devnet_dir = tmp_path / "dn"
    (devnet_dir / "l1").mkdir(parents=True)
    prepare_data_dir(devnet_dir, fresh=True)
    assert list(devnet_dir.iterdir()) == []


def test_an_explicit_genesis_must_match_the_existing_chain(tmp_path: Path) -> None:
    from node.evm.chain import GenesisMismatchError

    genesis_file = tmp_path / "other.json"
    genesis_file.write_text(json.dumps({"chainId": 1960, "alloc": {}, "timestamp": 5}))

    async def main() -> None:
        first = Devnet(DevnetConfig(data_dir=tmp_path / "d", eth_port=0), plain_genesis())
        await first.start()
        await first.stop()
        second = Devnet(DevnetConfig(data_dir=tmp_path / "d", eth_port=0, genesis_file=genesis_file))
        with pytest.raises(GenesisMismatchError):
            await second.start()
        resumed = Devnet(DevnetConfig(data_dir=tmp_path / "d", eth_port=0))  # no genesis: resume
        await resumed.start()
        await resumed.stop()

    asyncio.run(main())
