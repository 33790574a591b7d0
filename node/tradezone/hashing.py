"""Keccak-256 for TradeZone's hot paths: the Merkle roots of transactions and receipts, and the
trie keys and leaves the state hands to the commit engine.

``keccak256`` is the proofs engine's native Keccak (``proofs._commit``, built from C at install
when a compiler is present) unless it is missing or the environment sets ``EXOS_PROOFS_NATIVE=0``
(the switch that also selects the engine's Python pass); then it is pysha3's. Both are Ethereum's
Keccak-256 and give the same bytes: the choice changes only the cost of a call (about 0.4 us
against 0.7 us for a 33-byte input on the development machine). ``native_module`` (the proofs
engine's) gives the extension under the same rule for its other helpers (the RLP decoder).
"""

from __future__ import annotations

from collections.abc import Callable

from proofs.engine import native_module

__all__ = ["BACKEND", "keccak256", "native_module"]


def _load() -> tuple[Callable[[bytes], bytes], str]:
    native = native_module()
    if native is not None:
        return native.keccak256, "native"
    from sha3 import keccak_256  # safe-pysha3, a pinned dependency

    def keccak256_pysha3(data: bytes) -> bytes:
        return keccak_256(data).digest()

    return keccak256_pysha3, "pysha3"


keccak256: Callable[[bytes], bytes]
keccak256, BACKEND = _load()
"""``keccak256(data) -> bytes``: the 32-byte Keccak-256 digest of ``data``; ``BACKEND`` names
the implementation in use ("native" or "pysha3")."""
