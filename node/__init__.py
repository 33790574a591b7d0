"""exos-node: an EVM root of trust and the TradeZone execution environment."""

import os

# The pysha3 keccak backend is about 4x faster than pycryptodome's; eth-hash reads this
# variable the first time it is imported, so it must be set before anything imports it.
os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")

__version__ = "0.1.0"
