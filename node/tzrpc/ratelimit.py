"""Per-client limits on how fast transactions may be sent to the sequencer.

A public sequencer shares one bounded mempool among all its clients: without a limit per client,
one client sending as fast as it can fills the mempool, and every other client's transactions are
refused with "mempool full" until blocks drain it. ``TxRateLimiter`` gives each client (its IP
address) a token bucket: ``rate`` transactions a second on average, bursts of up to ``burst``.
A transaction beyond the budget is refused at once with a JSON-RPC error that says when to retry;
it never reaches the mempool, so it costs the node no signature recovery either.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

MAX_CLIENTS = 100_000  # buckets kept; the least recently seen client's is dropped past this


class TxRateLimiter:
    """Token buckets per client. ``take(client, wanted)`` returns how many of ``wanted``
    transactions the client may send now and spends that many tokens."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = MAX_CLIENTS) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, when)

    def _tokens(self, client: str, now: float) -> float:
        tokens, when = self._buckets.get(client, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - when) * self.rate)

    def take(self, client: str, wanted: int) -> int:
        now = self._clock()
        tokens = self._tokens(client, now)
        allowed = min(wanted, math.floor(tokens))
        self._buckets[client] = (tokens - allowed, now)
        self._buckets.move_to_end(client)
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after_ms(self, client: str) -> int:
        """Milliseconds until the client may send one more transaction."""
        missing = 1.0 - self._tokens(client, self._clock())
        return max(0, math.ceil(missing / self.rate * 1000))
