"""The freeze watcher: anyone may run it; it freezes the bridge as soon as the bridge allows.

The bridge allows a freeze once the oldest L1 message no committed batch consumed is past its
deadline (``canFreeze()``). A watcher that polls that view and sends ``freeze()`` the moment it
turns true is all it takes for the escape hatch to open without trusting anyone to do it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from node.escape.client import EscapeClient
from node.escape.errors import AlreadyFrozen, ChainRefused, DeadlineNotPassed, NoPendingMessage

log = logging.getLogger(__name__)


async def freeze_if_possible(client: EscapeClient, key: bytes) -> bool:
    """Send ``freeze()`` if ``canFreeze()`` says it would succeed. Returns True when this call
    froze the bridge, False when a freeze is not (or no longer) possible. Never raises for the
    ordinary races (someone else froze first, a batch consumed the head meanwhile)."""
    if not await client.can_freeze():
        return False
    try:
        await client.freeze(key)
    except (AlreadyFrozen, NoPendingMessage, DeadlineNotPassed, ChainRefused) as err:
        log.info("freeze not sent: %s", err)
        return False
    return True


async def watch_and_freeze(
    client: EscapeClient,
    key: bytes,
    *,
    poll_seconds: float = 1.0,
    stop: asyncio.Event | None = None,
    progress: Callable[[str], None] | None = None,
) -> bool:
    """Poll the bridge every ``poll_seconds`` until it is frozen (by this watcher: True, or by
    anyone else: False) or ``stop`` is set (False)."""
    while stop is None or not stop.is_set():
        if await client.frozen():
            if progress is not None:
                progress("the bridge is frozen")
            return False
        if await freeze_if_possible(client, key):
            if progress is not None:
                progress("froze the bridge")
            return True
        if stop is None:
            await asyncio.sleep(poll_seconds)
        else:
            try:
                await asyncio.wait_for(stop.wait(), poll_seconds)
            except TimeoutError:
                pass
    return False
