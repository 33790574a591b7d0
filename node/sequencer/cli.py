"""`exos replay` and `exos sequencer`: the sequencer's subcommands.

- ``exos replay --from-l1 --l1-rpc URL [--bridge ADDRESS]`` rebuilds TradeZone from the EVM
  chain's calldata alone and checks every committed root (exit 1 on the first mismatch).
- ``exos sequencer --l1-rpc URL --data-dir DIR`` runs the sequencer, batcher and TradeZone RPC
  against an external EVM chain (any node speaking standard eth_* JSON-RPC).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from node.cli import CliError, Runner, command, parse_address
from node.config import BRIDGE_ADDRESS, DEFAULT_HOST, DEFAULT_TZ_PORT, SEQUENCER_DEV_INDEX, dev_accounts


@command("replay", help="rebuild TradeZone from the EVM chain alone and check every committed root")
def _replay(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("--from-l1", action="store_true", required=True, help="read batches from the EVM chain")
    parser.add_argument("--l1-rpc", default="http://127.0.0.1:8545", help="eth_* JSON-RPC URL")
    parser.add_argument("--bridge", type=parse_address, default=BRIDGE_ADDRESS, help="bridge contract address")
    return run_replay


def run_replay(args: argparse.Namespace) -> int:
    from node.evm.l1 import JsonRpcL1Client, L1Error
    from node.sequencer.replay import ReplayError, replay_from_l1
    from node.tradezone.genesis import load_devnet

    async def main() -> int:
        async with JsonRpcL1Client(args.l1_rpc) as l1:
            try:
                result = await replay_from_l1(l1, args.bridge, load_devnet, progress=lambda line: print(line, flush=True))
            except ReplayError as err:
                print(f"exos replay: MISMATCH: {err}", flush=True)
                return 1
            except L1Error as err:
                raise CliError(f"EVM chain at {args.l1_rpc}: {err}") from err
        print(f"replayed {result.batches} batches, {result.blocks} blocks: TradeZone block {result.head.number}, "
              f"state root 0x{result.head.state_root.hex()} matches the bridge", flush=True)
        return 0

    return asyncio.run(main())


@command("sequencer", help="run the TradeZone sequencer against an external EVM chain")
def _sequencer(parser: argparse.ArgumentParser) -> Runner:
    parser.add_argument("--l1-rpc", required=True, help="eth_* JSON-RPC URL of the EVM chain")
    parser.add_argument("--data-dir", type=Path, required=True, help="data directory (TradeZone store in DIR/tz)")
    parser.add_argument("--bridge", type=parse_address, default=BRIDGE_ADDRESS, help="bridge contract address")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--tz-port", type=int, default=DEFAULT_TZ_PORT)
    parser.add_argument("--tz-block-ms", type=int, default=100, help="TradeZone block interval (ms)")
    parser.add_argument("--tx-rate-limit", type=float, default=0.0,
                        help="transactions a second one client (IP address) may send to tz_sendTransaction(s); 0: no limit")
    parser.add_argument("--max-pending-batches", type=int, default=4,
                        help="batches in flight on the EVM chain at once (each continues the one before)")
    parser.add_argument("--sequencer-key-file", type=Path, help="file holding the sequencer key (hex)")
    parser.add_argument("--dev-key", action="store_true", help="use the well-known devnet sequencer key")
    return run_sequencer


def run_sequencer(args: argparse.Namespace) -> int:
    from node.evm.l1 import JsonRpcL1Client
    from node.sequencer.sequencer import SequencerConfig
    from node.sequencer.service import SequencerService

    if args.dev_key:
        key = dev_accounts()[SEQUENCER_DEV_INDEX].private_key
    elif args.sequencer_key_file is not None:
        try:
            key = bytes.fromhex(args.sequencer_key_file.read_text().strip().removeprefix("0x"))
        except ValueError as err:
            raise CliError(f"{args.sequencer_key_file} does not hold a hex key") from err
        if len(key) != 32:
            raise CliError("the sequencer key must be 32 bytes")
    else:
        raise CliError("give --sequencer-key-file FILE (or --dev-key on a devnet)")
    if args.tz_block_ms <= 0:
        raise CliError("--tz-block-ms must be positive")
    if args.max_pending_batches < 1:
        raise CliError("--max-pending-batches must be at least 1")
    if args.tx_rate_limit < 0:
        raise CliError("--tx-rate-limit must not be negative")

    async def main() -> None:
        async with JsonRpcL1Client(args.l1_rpc) as l1:
            service = SequencerService(args.data_dir, host=args.host, tz_port=args.tz_port,
                                       config=SequencerConfig(block_ms=args.tz_block_ms, manage_gc=True), sequencer_key=key,
                                       bridge=args.bridge, demo=False, progress=lambda line: print(line, flush=True),
                                       max_pending_batches=args.max_pending_batches,
                                       tx_rate_limit=args.tx_rate_limit)
            await service.start_with(l1)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await stop.wait()
            finally:
                await service.stop()
                print("stopped cleanly", flush=True)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(main())
    return 0
