"""Process-level configuration: chain ids, ports, fixed addresses and the devnet's dev accounts.

The values here restate docs/interfaces.md; change them only together with that page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eth_keys import keys

L1_CHAIN_ID = 1960
TZ_CHAIN_ID = 1961

DEFAULT_HOST = "127.0.0.1"
DEFAULT_ETH_PORT = 8545
DEFAULT_TZ_PORT = 8546
DEFAULT_L1_BLOCK_TIME = 1.0
DEFAULT_DATA_DIR = Path("data/devnet")
CLIENT_VERSION = "exos-node/0.1.0"

# Predeployed contracts (docs/interfaces.md).
BRIDGE_ADDRESS = bytes.fromhex("4200000000000000000000000000000000000010")
STAKING_ADDRESS = bytes.fromhex("4200000000000000000000000000000000000011")
GOVERNANCE_ADDRESS = bytes.fromhex("4200000000000000000000000000000000000012")
USDT_ADDRESS = bytes.fromhex("4200000000000000000000000000000000000020")
WBTC_ADDRESS = bytes.fromhex("4200000000000000000000000000000000000021")

# DEVNET ONLY. The well-known public development keys of the mnemonic
# "test test test test test test test test test test test junk" (m/44'/60'/0'/0/i).
# Anyone can spend from these keys on any network.
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_PRIVATE_KEYS: tuple[bytes, ...] = tuple(
    bytes.fromhex(k)
    for k in (
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
        "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
        "47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
        "8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
        "92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
        "4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
        "dbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
        "2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
    )
)
DEV_ROLES: tuple[str, ...] = (
    "deployer/faucet",
    "council member",
    "council member",
    "council member",
    "staker/venue deployer",
    "trader",
    "trader",
    "trader",
    "oracle/resolver",
    "sequencer",
)
SEQUENCER_DEV_INDEX = 9


@dataclass(frozen=True)
class DevAccount:
    index: int
    role: str
    address: bytes
    private_key: bytes


def address_of(private_key: bytes) -> bytes:
    """The 20-byte address controlled by a 32-byte secp256k1 private key."""
    return keys.PrivateKey(private_key).public_key.to_canonical_address()


def dev_accounts() -> tuple[DevAccount, ...]:
    """The ten devnet accounts with their roles (docs/interfaces.md). DEVNET ONLY."""
    return tuple(
        DevAccount(index=i, role=DEV_ROLES[i], address=address_of(key), private_key=key)
        for i, key in enumerate(DEV_PRIVATE_KEYS)
    )


@dataclass(frozen=True)
class DevnetConfig:
    """How `exos devnet` runs: where it stores, where it listens, how fast L1 blocks come."""

    data_dir: Path = DEFAULT_DATA_DIR
    host: str = DEFAULT_HOST
    eth_port: int = DEFAULT_ETH_PORT
    tz_port: int = DEFAULT_TZ_PORT
    l1_block_time: float = DEFAULT_L1_BLOCK_TIME
    genesis_file: Path | None = None
    fresh: bool = False
