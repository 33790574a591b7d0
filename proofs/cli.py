"""Registers `exos verify-proof` (the light client) with the node's CLI.

Imported only by `node.cli` when it builds its parser; the light client itself
(`proofs.lightclient`) does not depend on the node.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from node.cli import command
from proofs.lightclient import add_arguments, run


@command("verify-proof", help="prove a TradeZone balance against the state root committed on the EVM chain")
def _verify_proof(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    add_arguments(parser)
    return run
