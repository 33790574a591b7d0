"""Rebuild TradeZone from the EVM chain alone: ``exos replay --from-l1``.

For each batch the bridge committed, in order: find its ``commitBatch`` transaction through the
``BatchCommitted`` event, read the batch data from the transaction's calldata, check its keccak
against the hash the bridge stored, decode the blocks, apply each with the full
``state_transition`` (every root of every header checked), and check that the last block is the
batch's TradeZone block and its state root the root the bridge committed. Nothing but standard
``eth_*`` calls is needed, so any EVM node serves; the TradeZone node is not consulted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from eth_utils import keccak

from node.evm.bridge import BATCH_COMMITTED_TOPIC, BridgeClient, decode_commit_batch
from node.evm.l1 import L1Client
from node.sequencer.batch_codec import BatchDecodeError, decode_batch
from node.tradezone.blocks import Header
from node.tradezone.eip712 import DEVNET_DOMAIN, Domain
from node.tradezone.errors import InvalidBlock
from node.tradezone.state import State
from node.tradezone.state_transition import state_transition


class ReplayError(Exception):
    """The EVM chain's batches do not rebuild into the roots the bridge committed."""


@dataclass
class ReplayResult:
    state: State
    head: Header
    batches: int = 0
    blocks: int = 0
    lines: list[str] = field(default_factory=list)


async def _commit_transaction_input(l1: L1Client, bridge: bytes, index: int, l1_block: int) -> bytes:
    topic = index.to_bytes(32, "big")
    logs = await l1.get_logs(l1_block, l1_block, bridge, (BATCH_COMMITTED_TOPIC, topic))
    if not logs:
        raise ReplayError(f"no BatchCommitted event of batch {index} in L1 block {l1_block}")
    tx = await l1.get_transaction(logs[0].transaction_hash)
    if tx is None:
        raise ReplayError(f"L1 transaction 0x{logs[0].transaction_hash.hex()} of batch {index} is not available")
    return tx.input


async def replay_from_l1(
    l1: L1Client,
    bridge_address: bytes,
    genesis: Callable[[], tuple[State, Header]],
    *,
    domain: Domain = DEVNET_DOMAIN,
    progress: Callable[[str], None] | None = None,
) -> ReplayResult:
    """Rebuild the state from genesis and every committed batch; raise ReplayError on the first
    thing that does not check out."""
    bridge = BridgeClient(l1, bridge_address)
    state, head = genesis()
    count = await bridge.batch_count()
    result = ReplayResult(state, head)
    genesis_root = await bridge.last_committed_root(0)  # the bridge's state at the EVM genesis
    if genesis_root != head.state_root:
        raise ReplayError(
            f"the bridge started from TradeZone root 0x{genesis_root.hex()}, but this node's TradeZone genesis "
            f"has root 0x{head.state_root.hex()}: the EVM chain was created with another TradeZone genesis"
        )
    for index in range(count):
        info = await bridge.batch(index)
        calldata = await _commit_transaction_input(l1, bridge_address, index, info.l1_block)
        try:
            call = decode_commit_batch(calldata)
        except ValueError as err:
            raise ReplayError(f"batch {index}: {err}") from err
        if keccak(call.data) != info.data_hash:
            raise ReplayError(f"batch {index}: calldata hash differs from the bridge's data hash")
        try:
            blocks = decode_batch(call.data)
        except (BatchDecodeError, InvalidBlock) as err:
            raise ReplayError(f"batch {index}: {err}") from err
        for block in blocks:
            try:
                state_transition(state, head, block, domain)
            except InvalidBlock as err:
                raise ReplayError(f"batch {index}, TradeZone block {block.header.number}: {err!r}") from err
            head = block.header
        if head.number != info.tz_block or head.state_root != info.state_root:
            raise ReplayError(
                f"batch {index}: rebuilt block {head.number} root 0x{head.state_root.hex()}, bridge has block "
                f"{info.tz_block} root 0x{info.state_root.hex()}"
            )
        result.batches += 1
        result.blocks += len(blocks)
        line = (f"batch {index:>5}  blocks {blocks[0].header.number}..{head.number}  "
                f"root 0x{head.state_root.hex()}  verified")
        result.lines.append(line)
        if progress is not None:
            progress(line)
    result.state, result.head = state, head
    return result
