"""The EVM chain's Vyper contracts: sources (*.vy), compiled artifacts (build/*.json) and the
fixed facts about them that every component shares (docs/interfaces.md, docs/contracts.md)."""

from typing import Final

from eth_utils import to_canonical_address

BRIDGE_ADDRESS: Final[str] = "0x4200000000000000000000000000000000000010"
STAKING_ADDRESS: Final[str] = "0x4200000000000000000000000000000000000011"
GOVERNANCE_ADDRESS: Final[str] = "0x4200000000000000000000000000000000000012"
USDT_ADDRESS: Final[str] = "0x4200000000000000000000000000000000000020"
WBTC_ADDRESS: Final[str] = "0x4200000000000000000000000000000000000021"

# Contract name (artifact name) of each predeployed contract, keyed by its role in the genesis.
PREDEPLOYS: Final[dict[str, tuple[str, str]]] = {
    "Bridge": ("Bridge", BRIDGE_ADDRESS),
    "Staking": ("Staking", STAKING_ADDRESS),
    "Governance": ("Governance", GOVERNANCE_ADDRESS),
    "USDT": ("ERC20", USDT_ADDRESS),
    "WBTC": ("ERC20", WBTC_ADDRESS),
}

NATIVE_TOKEN: Final[str] = "0x0000000000000000000000000000000000000000"

# L1 message kinds of the bridge's queue.
KIND_DEPOSIT: Final[int] = 1
KIND_STAKE: Final[int] = 2
KIND_FORCED_WITHDRAWAL: Final[int] = 3

# Bounds fixed in Bridge.vy.
MAX_BATCH_DATA: Final[int] = 262144
MAX_WITHDRAWALS_PER_BATCH: Final[int] = 256
MAX_PROOF_NODE: Final[int] = 700
MAX_PROOF_NODES: Final[int] = 64
MAX_LEAF_VALUE: Final[int] = 256

EMPTY_TRIE_ROOT: Final[bytes] = bytes.fromhex(
    "56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
)


def canonical(address: str) -> bytes:
    """The 20-byte form of a hex address."""
    return to_canonical_address(address)


__all__ = [
    "BRIDGE_ADDRESS",
    "EMPTY_TRIE_ROOT",
    "GOVERNANCE_ADDRESS",
    "KIND_DEPOSIT",
    "KIND_FORCED_WITHDRAWAL",
    "KIND_STAKE",
    "MAX_BATCH_DATA",
    "MAX_LEAF_VALUE",
    "MAX_PROOF_NODE",
    "MAX_PROOF_NODES",
    "MAX_WITHDRAWALS_PER_BATCH",
    "NATIVE_TOKEN",
    "PREDEPLOYS",
    "STAKING_ADDRESS",
    "USDT_ADDRESS",
    "WBTC_ADDRESS",
    "canonical",
]
