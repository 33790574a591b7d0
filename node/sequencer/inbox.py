"""The L1 inbox reader: follows the bridge's message queue on the EVM chain.

It reads ``MessageQueued`` events from the bridge, block range by block range, decodes each into
the TradeZone L1 message it stands for, and checks that the indexes are consecutive and the
rolling hash matches the one the bridge logged: a message the node decoded differently from the
bridge would make every later root unprovable, so a mismatch is critical, not retried.

The reader is a stage in the op-node sense: ``poll()`` pulls from the L1 client and appends to
its queue, ``take()`` hands the due messages to the block producer, and ``reset(origin, cursor)``
restarts it from a known point (after a restart or a reorg of the external chain).
"""

from __future__ import annotations

from collections import deque

from eth_abi import decode as abi_decode
from eth_utils import keccak

from node.evm.l1 import L1Client
from node.sequencer.errors import CriticalError
from node.tradezone.errors import InvalidTransaction
from node.tradezone.transactions import (
    L1Message,
    encode_transaction,
    l1_message_from_event,
    next_rolling_hash,
)

MESSAGE_QUEUED_TOPIC = keccak(text="MessageQueued(uint256,uint8,bytes,uint256,uint256,bytes32)")
MAX_LOG_RANGE = 500


class QueuedMessage:
    """An L1 message with the L1 block it was queued in and its deadline."""

    __slots__ = ("message", "l1_block", "deadline")

    def __init__(self, message: L1Message, l1_block: int, deadline: int) -> None:
        self.message = message
        self.l1_block = l1_block
        self.deadline = deadline


class InboxReader:
    """Follows the bridge queue from ``cursor`` (the next index TradeZone expects)."""

    def __init__(self, l1: L1Client, bridge: bytes, *, confirmations: int = 0) -> None:
        self.l1 = l1
        self.bridge = bridge
        self.confirmations = confirmations
        self.queue: deque[QueuedMessage] = deque()
        self.scanned_to = 0  # every L1 block <= scanned_to has been read
        self.next_index = 0  # the index of the next message the reader expects
        self.rolling_hash = b"\x00" * 32

    def reset(self, origin: int, cursor: int, rolling_hash: bytes) -> None:
        """Restart reading after L1 block ``origin``, expecting message ``cursor`` next."""
        self.queue.clear()
        self.scanned_to = origin
        self.next_index = cursor
        self.rolling_hash = rolling_hash

    async def poll(self) -> int:
        """Read new confirmed L1 blocks (at most MAX_LOG_RANGE per call); return how many
        messages were queued. L1 client errors propagate (the caller retries with backoff)."""
        head = await self.l1.block_number() - self.confirmations
        if head <= self.scanned_to:
            return 0
        start = self.scanned_to + 1
        stop = min(head, start + MAX_LOG_RANGE - 1)
        logs = await self.l1.get_logs(start, stop, self.bridge, (MESSAGE_QUEUED_TOPIC,))
        added = 0
        for log in logs:
            if log.removed:
                continue
            index = int.from_bytes(log.topics[1], "big")
            if index < self.next_index:
                continue  # already consumed before the restart point
            kind, payload, l1_block, deadline, rolling = abi_decode(
                ["uint8", "bytes", "uint256", "uint256", "bytes32"], log.data
            )
            if index != self.next_index:
                raise CriticalError(f"L1 queue gap: expected message {self.next_index}, the bridge logged {index}")
            try:
                message = l1_message_from_event(index, kind, payload)
            except InvalidTransaction as err:
                raise CriticalError(f"bridge message {index} does not decode: {err}") from err
            expected = next_rolling_hash(self.rolling_hash, message)
            if expected != rolling:
                raise CriticalError(
                    f"rolling hash of message {index}: computed 0x{expected.hex()}, bridge 0x{bytes(rolling).hex()}"
                )
            self.rolling_hash = expected
            self.next_index = index + 1
            self.queue.append(QueuedMessage(message, l1_block, deadline))
            added += 1
        self.scanned_to = stop
        return added

    def take(self, max_bytes: int | None = None) -> tuple[list[L1Message], int]:
        """The queued messages, in order, whose encodings add up to at most ``max_bytes`` (at
        least one if any is queued), and that size. The producer includes each as soon as it is
        read, far inside its deadline; what does not fit waits for the next block."""
        messages: list[L1Message] = []
        size = 0
        queue = self.queue
        while queue:
            weight = len(encode_transaction(queue[0].message))
            if messages and max_bytes is not None and size + weight > max_bytes:
                break
            messages.append(queue.popleft().message)
            size += weight
        return messages, size
