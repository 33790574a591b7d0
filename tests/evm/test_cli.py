"""`exos init` and the subcommand registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from node import cli
from node.config import DEV_PRIVATE_KEYS, address_of
from node.evm.chain import EmbeddedChain


def write_genesis(path: Path, balance: int) -> Path:
    doc = {
        "chainId": 1960,
        "timestamp": "0x6553f100",
        "gasLimit": 30_000_000,
        "alloc": {"0x" + address_of(DEV_PRIVATE_KEYS[0]).hex(): {"balance": hex(balance)}},
    }
    path.write_text(json.dumps(doc))
    return path


def test_init_creates_the_chain_once_and_refuses_another_genesis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    genesis = write_genesis(tmp_path / "g.json", 10**21)
    data_dir = tmp_path / "data"
    assert cli.main(["init", "--genesis", str(genesis), "--data-dir", str(data_dir)]) == 0
    assert "initialised, chain id 1960" in capsys.readouterr().out
    assert cli.main(["init", "--genesis", str(genesis), "--data-dir", str(data_dir)]) == 0
    assert "already initialised" in capsys.readouterr().out
    other = write_genesis(tmp_path / "other.json", 5)
    assert cli.main(["init", "--genesis", str(other), "--data-dir", str(data_dir)]) == 2
    assert "genesis" in capsys.readouterr().err
    chain = EmbeddedChain.open(data_dir)
    try:
        assert chain.get_balance(address_of(DEV_PRIVATE_KEYS[0])) == 10**21
        assert chain.head.gas_limit == 30_000_000
    finally:
        chain.close()


def test_init_with_a_missing_genesis_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["init", "--genesis", str(tmp_path / "nope.json"), "--data-dir", str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_init_builds_the_devnet_genesis_with_its_contracts(tmp_path: Path) -> None:
    from node.config import BRIDGE_ADDRESS, USDT_ADDRESS
    from node.devnet import DEFAULT_GENESIS_FILE

    assert cli.main(["init", "--genesis", str(DEFAULT_GENESIS_FILE), "--data-dir", str(tmp_path / "d")]) == 0
    chain = EmbeddedChain.open(tmp_path / "d")
    try:
        assert chain.get_code(BRIDGE_ADDRESS) and chain.get_code(USDT_ADDRESS)
    finally:
        chain.close()


def test_registered_subcommands_appear_in_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    def configure(parser: argparse.ArgumentParser) -> cli.Runner:
        parser.add_argument("--word", required=True)
        return lambda args: print(f"said {args.word}") or 0

    cli.command("say-test", help="test command")(configure)
    try:
        assert cli.main(["say-test", "--word", "hi"]) == 0
        assert "said hi" in capsys.readouterr().out
    finally:
        del cli.COMMANDS["say-test"]
