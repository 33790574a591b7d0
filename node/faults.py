"""Crash points for fault-injection tests of durability.

A crash point is a named place in the code where a test may kill the process with SIGKILL,
exactly as ``kill -9`` from outside would, but at a chosen moment instead of a random one. The
environment variable ``EXOS_CRASH_AT=name[:n]`` arms one point: the process kills itself the
n-th time (default 1st) it reaches it. Unset, ``crashpoint`` is a dictionary lookup and nothing
else; no behaviour depends on it.
"""

from __future__ import annotations

import os
import signal

_ARMED: dict[str, int] = {}
_spec = os.environ.get("EXOS_CRASH_AT", "")
if _spec:
    _name, _, _count = _spec.partition(":")
    _ARMED[_name] = int(_count) if _count else 1


def crashpoint(name: str) -> None:
    """SIGKILL this process if ``name`` is the armed point and its count is reached."""
    left = _ARMED.get(name)
    if left is None:
        return
    if left <= 1:
        os.kill(os.getpid(), signal.SIGKILL)
    _ARMED[name] = left - 1
