"""`exos escape ...`: the escape hatch from the command line.

    exos escape status                                    queue head, deadline, frozen, committed root
    exos escape request  --key K --asset A                queue a forced withdrawal (pays the fee)
    exos escape freeze   --key K                          freeze once the queue head is past its deadline
    exos escape watch    --key K                          freeze as soon as the bridge allows it
    exos escape withdraw --key K --asset A [--proof-file F | --tz-rpc URL]
                                                          escape-withdraw (default proof source: replay from L1)
    exos escape refund   --key K --index N                refund a deposit no committed batch consumed
    exos escape prove    --account ADDR --asset A --out F [--tz-rpc URL]
                                                          write the account's proof (default: replay from L1)

Common flags: ``--l1-rpc URL`` (default http://127.0.0.1:8545), ``--bridge ADDRESS`` (default the
devnet bridge of docs/interfaces.md). ``--key`` takes a hex private key or a file holding one
(default: the EXOS_ESCAPE_KEY environment variable). Assets are symbols (OKB, USDT, WBTC) or ids.
Every refusal exits with status 1 and one line saying why.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from node.cli import CliError, Runner, command, parse_address
from node.config import BRIDGE_ADDRESS, address_of

if TYPE_CHECKING:
    from node.escape.client import EscapeClient
    from node.escape.proof import EscapeProof

DEFAULT_L1_RPC = "http://127.0.0.1:8545"
ASSET_SYMBOLS = {"OKB": 0, "USDT": 1, "WBTC": 2}
KEY_ENV = "EXOS_ESCAPE_KEY"


def parse_asset(value: str) -> int:
    """An asset id from a symbol (OKB, USDT, WBTC) or a decimal id."""
    symbol = value.upper()
    if symbol in ASSET_SYMBOLS:
        return ASSET_SYMBOLS[symbol]
    if value.isdigit() and int(value) < 2**32:
        return int(value)
    raise argparse.ArgumentTypeError(f"unknown asset {value!r}: give OKB, USDT, WBTC or an asset id")


def load_key(value: str | None) -> bytes:
    """A 32-byte private key from 0x-hex, from a file holding it, or from $EXOS_ESCAPE_KEY."""
    if value is None:
        value = os.environ.get(KEY_ENV)
        if value is None:
            raise CliError(f"give --key (a hex private key or a file holding one) or set {KEY_ENV}")
    text = value.strip()
    digits = text.removeprefix("0x")
    if len(digits) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        try:
            digits = Path(text).read_text().strip().removeprefix("0x")
        except OSError as err:
            raise CliError(f"--key is neither a hex private key nor a readable key file: {err}") from err
    try:
        key = bytes.fromhex(digits)
    except ValueError as err:
        raise CliError("the key file does not hold a hex private key") from err
    if len(key) != 32:
        raise CliError("a private key is 32 bytes (64 hex digits)")
    return key


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--l1-rpc", default=DEFAULT_L1_RPC, help="eth_* JSON-RPC URL of the EVM chain")
    parser.add_argument("--bridge", type=parse_address, default=BRIDGE_ADDRESS, help="bridge contract address")


@command("escape", help="the escape hatch: forced withdrawals, freeze, withdrawals proved on L1, refunds")
def _escape(parser: argparse.ArgumentParser) -> Runner:
    sub = parser.add_subparsers(dest="escape_command", required=True, metavar="ACTION")

    p = sub.add_parser("status", help="queue head and deadline, L1 block, frozen, last committed root")
    _common(p)
    p.set_defaults(action=_status)

    p = sub.add_parser("request", help="request a forced withdrawal of your full free balance of an asset")
    _common(p)
    p.add_argument("--key", help="hex private key or key file")
    p.add_argument("--asset", type=parse_asset, required=True, help="OKB, USDT, WBTC or an asset id")
    p.set_defaults(action=_request)

    p = sub.add_parser("freeze", help="freeze the bridge (once the queue head is past its deadline)")
    _common(p)
    p.add_argument("--key", help="hex private key or key file (pays the gas)")
    p.set_defaults(action=_freeze)

    p = sub.add_parser("watch", help="watch the bridge and freeze it as soon as that is allowed")
    _common(p)
    p.add_argument("--key", help="hex private key or key file (pays the gas)")
    p.add_argument("--poll", type=float, default=1.0, help="seconds between checks")
    p.set_defaults(action=_watch)

    p = sub.add_parser("withdraw", help="withdraw your committed balance by proof, once frozen")
    _common(p)
    p.add_argument("--key", help="hex private key or key file")
    p.add_argument("--asset", type=parse_asset, required=True, help="OKB, USDT, WBTC or an asset id")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--proof-file", type=Path, help="proof file (tz_getProof JSON); default: replay from L1")
    source.add_argument("--tz-rpc", help="a TradeZone node URL to ask for the proof (tz_getProof)")
    p.set_defaults(action=_withdraw)

    p = sub.add_parser("refund", help="refund a deposit no committed batch consumed, once frozen")
    _common(p)
    p.add_argument("--key", help="hex private key or key file (pays the gas)")
    p.add_argument("--index", type=int, required=True, help="L1 queue index of the deposit")
    p.set_defaults(action=_refund)

    p = sub.add_parser("prove", help="write an account's escape proof, rebuilt from the EVM chain alone")
    _common(p)
    p.add_argument("--account", type=parse_address, required=True, help="account address")
    p.add_argument("--asset", type=parse_asset, required=True, help="OKB, USDT, WBTC or an asset id")
    p.add_argument("--out", type=Path, required=True, help="proof file to write")
    p.add_argument("--tz-rpc", help="ask this TradeZone node (tz_getProof) instead of replaying the EVM chain")
    p.set_defaults(action=_prove)
    return run_escape


def run_escape(args: argparse.Namespace) -> int:
    """Run one escape action; a refusal prints one line and exits 1."""
    from node.escape.errors import EscapeError
    from node.evm.l1 import JsonRpcL1Client, L1Error

    action: Callable[[argparse.Namespace, EscapeClient], Awaitable[int]] = args.action

    async def main() -> int:
        from node.escape.client import EscapeClient

        async with JsonRpcL1Client(args.l1_rpc) as l1:
            return await action(args, EscapeClient(l1, args.bridge))

    try:
        return asyncio.run(main())
    except EscapeError as err:
        print(f"exos escape {args.escape_command}: {err}", file=sys.stderr, flush=True)
        return 1
    except L1Error as err:
        print(f"exos escape {args.escape_command}: EVM chain at {args.l1_rpc}: {err}", file=sys.stderr, flush=True)
        return 1


def _say(line: str) -> None:
    print(line, flush=True)


async def _status(args: argparse.Namespace, client: EscapeClient) -> int:
    for line in (await client.status()).lines():
        _say(line)
    return 0


async def _request(args: argparse.Namespace, client: EscapeClient) -> int:
    key = load_key(args.key)
    request = await client.request_forced_withdrawal(key, args.asset)
    _say(f"forced withdrawal queued: index {request.index}, account 0x{address_of(key).hex()}, asset {args.asset}, "
         f"L1 block {request.l1_block}, deadline {request.deadline}, gas {request.gas_used}, "
         f"tx 0x{request.transaction_hash.hex()}")
    return 0


async def _freeze(args: argparse.Namespace, client: EscapeClient) -> int:
    key = load_key(args.key)
    head = await client.check_freeze()
    receipt = await client.freeze(key)
    _say(f"frozen at L1 block {receipt.block_number} on queue head {head.index} (deadline {head.deadline}), "
         f"gas {receipt.gas_used}, tx 0x{receipt.transaction_hash.hex()}")
    return 0


async def _watch(args: argparse.Namespace, client: EscapeClient) -> int:
    from node.escape.watcher import watch_and_freeze

    key = load_key(args.key)
    _say("watching the bridge; it will be frozen as soon as the queue head is past its deadline")
    await watch_and_freeze(client, key, poll_seconds=args.poll, progress=_say)
    return 0


async def _proof(args: argparse.Namespace, client: EscapeClient, account: bytes) -> EscapeProof:
    from node.escape.proof import load_proof_file, proof_from_replay, proof_from_tz_rpc

    if getattr(args, "proof_file", None) is not None:
        return load_proof_file(args.proof_file, account, args.asset)
    if getattr(args, "tz_rpc", None) is not None:
        count = await client.bridge.batch_count()
        tz_block = (await client.bridge.batch(count - 1)).tz_block if count else 0
        return await proof_from_tz_rpc(args.tz_rpc, account, args.asset, tz_block)
    return await proof_from_replay(client.l1, client.address, account, args.asset)


async def _withdraw(args: argparse.Namespace, client: EscapeClient) -> int:
    key = load_key(args.key)
    account = address_of(key)
    # The refusals that need no proof first, so that nobody waits for a replay to learn them.
    await client.check_escape_open(account, args.asset)
    proof = await _proof(args, client, account)
    leaf = await client.check_withdraw(account, args.asset, proof)
    escaped = await client.withdraw(key, args.asset, proof)
    _say(f"escaped {escaped.amount} of asset {args.asset} to 0x{account.hex()} (committed balance {leaf.balance}, "
         f"root 0x{leaf.root.hex()}), proof {len(proof.nodes)} nodes, gas {escaped.gas_used}, "
         f"tx 0x{escaped.transaction_hash.hex()}")
    return 0


async def _refund(args: argparse.Namespace, client: EscapeClient) -> int:
    key = load_key(args.key)
    refunded = await client.refund(key, args.index)
    _say(f"refunded deposit {refunded.index}: {refunded.amount} of asset {refunded.asset_id} to "
         f"0x{refunded.depositor.hex()}, gas {refunded.gas_used}, tx 0x{refunded.transaction_hash.hex()}")
    return 0


async def _prove(args: argparse.Namespace, client: EscapeClient) -> int:
    from node.escape.proof import check_escape_proof, write_proof_file

    proof = await _proof(args, client, args.account)
    leaf = check_escape_proof(proof, await client.bridge.last_committed_root())
    write_proof_file(args.out, proof)
    _say(f"wrote {args.out}: account 0x{args.account.hex()}, asset {args.asset}, balance {leaf.balance}, "
         f"root 0x{leaf.root.hex()}")
    return 0
