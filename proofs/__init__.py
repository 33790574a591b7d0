"""Merkle-Patricia commit engine, EIP-1186 proofs and a light client, usable without the node."""

import os

os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")
