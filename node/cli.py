"""`exos`: the node's command line.

Subcommands live in one registry: a component adds its own with

    @command("replay", help="...")
    def _replay(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
        parser.add_argument(...)
        return run_replay          # run_replay(args) -> exit code

(the decorated function configures its parser and returns the function that runs it). Commands
that belong to other packages are registered by importing their module in `_load_commands`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from node.config import (
    DEFAULT_DATA_DIR,
    DEFAULT_ETH_PORT,
    DEFAULT_HOST,
    DEFAULT_L1_BLOCK_TIME,
    DEFAULT_TZ_PORT,
    DevnetConfig,
)

Runner = Callable[[argparse.Namespace], int]
Configure = Callable[[argparse.ArgumentParser], Runner]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Configure


COMMANDS: dict[str, Command] = {}

# Modules that register more subcommands when imported (missing ones are skipped).
COMMAND_MODULES: tuple[str, ...] = (
    "proofs.cli",
    "node.escape.cli",
    "node.sequencer.cli",
)


def command(name: str, help: str) -> Callable[[Configure], Configure]:
    """Register a subcommand: the decorated function gets its parser and returns its runner."""

    def register(configure: Configure) -> Configure:
        COMMANDS[name] = Command(name=name, help=help, configure=configure)
        return configure

    return register


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


def parse_address(value: str) -> bytes:
    """A 20-byte address from 0x-hex."""
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"not a hex address: {value}") from err
    if len(raw) != 20:
        raise argparse.ArgumentTypeError(f"an address is 20 bytes: {value}")
    return raw


# ---------------------------------------------------------------------------------------------
# exos init


@command("init", help="create a chain data directory from a genesis file")
def _init(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("--genesis", type=Path, required=True, help="genesis file (JSON)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="data directory")
    return run_init


def run_init(args: argparse.Namespace) -> int:
    """Build the genesis block into DIR; an existing chain with the same genesis is left as is."""
    from node.devnet import load_genesis
    from node.evm.chain import EmbeddedChain

    if not args.genesis.exists():
        raise CliError(f"genesis file {args.genesis} does not exist")
    genesis = load_genesis(args.genesis)
    existed = EmbeddedChain.is_initialized(args.data_dir)
    chain = EmbeddedChain.open(args.data_dir, genesis)
    try:
        head = chain.head
        verb = "already initialised" if existed else "initialised"
        print(
            f"{args.data_dir}: {verb}, chain id {chain.chain_id}, genesis 0x{chain.genesis_hash.hex()}, "
            f"head block {head.block_number}"
        )
    finally:
        chain.close()
    return 0


# ---------------------------------------------------------------------------------------------
# exos devnet


@command("devnet", help="run the devnet: embedded EVM chain, TradeZone sequencer and batcher, both JSON-RPC servers, demo traders")
def _devnet(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="data directory")
    parser.add_argument("--fresh", action="store_true", help="wipe the data directory first")
    parser.add_argument("--genesis", type=Path, default=None, help="genesis file for a new chain")
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to listen on")
    parser.add_argument("--eth-port", type=int, default=DEFAULT_ETH_PORT, help="eth_* JSON-RPC port")
    parser.add_argument("--tz-port", type=int, default=DEFAULT_TZ_PORT, help="TradeZone JSON-RPC port")
    parser.add_argument(
        "--l1-block-time", type=float, default=DEFAULT_L1_BLOCK_TIME, help="seconds between L1 blocks"
    )
    parser.add_argument("--tz-block-ms", type=int, default=100, help="milliseconds between TradeZone blocks")
    parser.add_argument("--tx-rate-limit", type=float, default=0.0,
                        help="transactions a second one client (IP address) may send to tz_sendTransaction(s); 0: no limit")
    parser.add_argument("--max-pending-batches", type=int, default=4,
                        help="batches in flight on the EVM chain at once (each continues the one before)")
    parser.add_argument(
        "--no-sequencer", action="store_true",
        help="run the EVM chain alone (the sequencer halted), e.g. to rehearse an escape",
    )
    parser.add_argument("--no-demo", action="store_true", help="do not run the demo market maker and takers")
    return run_devnet_command


def run_devnet_command(args: argparse.Namespace) -> int:
    from node.devnet import run_devnet

    if args.l1_block_time <= 0:
        raise CliError("--l1-block-time must be positive")
    if args.tz_block_ms <= 0:
        raise CliError("--tz-block-ms must be positive")
    if args.max_pending_batches < 1:
        raise CliError("--max-pending-batches must be at least 1")
    if args.tx_rate_limit < 0:
        raise CliError("--tx-rate-limit must not be negative")
    config = DevnetConfig(
        data_dir=args.data_dir,
        host=args.host,
        eth_port=args.eth_port,
        tz_port=args.tz_port,
        l1_block_time=args.l1_block_time,
        genesis_file=args.genesis,
        fresh=args.fresh,
    )
    progress = lambda line: print(line, flush=True)  # noqa: E731
    services = []
    if not args.no_sequencer:
        from node.sequencer.sequencer import SequencerConfig
        from node.sequencer.service import SequencerService

        services.append(SequencerService(
            args.data_dir, host=args.host, tz_port=args.tz_port, config=SequencerConfig(block_ms=args.tz_block_ms, manage_gc=True),
            demo=not args.no_demo, progress=progress, max_pending_batches=args.max_pending_batches,
            tx_rate_limit=args.tx_rate_limit,
        ))
    asyncio.run(run_devnet(config, progress=progress, services=services))
    return 0


# ---------------------------------------------------------------------------------------------
# entry point


def _load_commands() -> None:
    for module in COMMAND_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module.startswith(exc.name):
                raise


def build_parser() -> argparse.ArgumentParser:
    """The `exos` parser with every registered subcommand."""
    _load_commands()
    parser = argparse.ArgumentParser(prog="exos", description="exos-node: EVM root of trust + TradeZone")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        sub_parser = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        sub_parser.set_defaults(run=cmd.configure(sub_parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `exos`; return the exit status (0 ok, 1 failure, 2 usage or user error)."""
    from node.db import StoreLockedError
    from node.devnet import DevnetError, DevnetFailed
    from node.evm.chain import ChainError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except (CliError, ChainError, DevnetError, StoreLockedError, OSError) as exc:
        print(f"exos {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except DevnetFailed as exc:
        print(f"exos {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run through the importable module, so that subcommands registered by other modules (which
    # import `node.cli`) land in the same registry as the one this entry point reads.
    from node.cli import main as _main

    sys.exit(_main())
