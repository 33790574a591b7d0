"""Build the EVM chain's genesis (header parameters and alloc) from a genesis spec.

Every predeployed contract sits at its fixed address (docs/interfaces.md) with its constructor
state already applied: the constructors run on a scratch py-evm state whose create addresses are
the fixed addresses themselves, so every cross-reference (bridge <-> staking <-> governance) and
every Vyper immutable (kept in the runtime code) already points at the right place. The runtime
code, nonce and every storage slot written there are then copied into the alloc.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import encode as abi_encode
from eth_typing import Address
from eth_utils import function_signature_to_4byte_selector, to_canonical_address, to_checksum_address

from node.evm.chain import ChainGenesis, GenesisAccount
from node.evm.compile import load_artifact

DEVNET_SPEC_PATH = Path(__file__).resolve().parent / "devnet.json"
SCRATCH_GAS = 30_000_000
ZERO_ADDRESS = b"\x00" * 20


class GenesisError(Exception):
    """The genesis spec is invalid, or a constructor reverted while building it."""



@dataclass(frozen=True)
class DevAccount:
    """A devnet-only account from the well-known mnemonic (its key is public)."""

    index: int
    role: str
    address: str
    private_key: str


@dataclass(frozen=True)
class L1Genesis:
    """The EVM chain's genesis: chain id, header parameters and alloc, plus where things are."""

    chain_id: int
    gas_limit: int
    base_fee_per_gas: int
    timestamp: int
    extra_data: bytes
    coinbase: bytes
    alloc: Mapping[bytes, GenesisAccount]
    contracts: Mapping[str, str]
    asset_ids: Mapping[str, int]
    dev_accounts: tuple[DevAccount, ...]
    spec: Mapping[str, Any]

    def header_params(self) -> dict[str, Any]:
        """Genesis header parameters in the form `eth.chains.base.Chain.from_genesis` takes."""
        return self.chain_genesis().header_params()

    def chain_genesis(self) -> ChainGenesis:
        """The genesis as the embedded chain opens it."""
        return ChainGenesis(
            chain_id=self.chain_id, alloc=dict(self.alloc), timestamp=self.timestamp, gas_limit=self.gas_limit,
            base_fee_per_gas=self.base_fee_per_gas, coinbase=self.coinbase, extra_data=self.extra_data,
        )

    def state(self) -> dict[Address, Any]:
        """The alloc in the form `Chain.from_genesis` takes as genesis_state."""
        return self.chain_genesis().state()


def load_genesis_spec(path: str | Path = DEVNET_SPEC_PATH) -> dict[str, Any]:
    """Read a genesis spec (JSON); raises GenesisError if it is not a JSON object."""
    try:
        spec = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GenesisError(f"cannot read genesis spec {path}: {exc}") from exc
    if not isinstance(spec, dict):
        raise GenesisError(f"genesis spec {path} is not a JSON object")
    return spec


def _int(value: Any, what: str) -> int:
    """An integer from a JSON number or a decimal/0x string; rejects floats and negatives."""
    if isinstance(value, bool) or isinstance(value, float):
        raise GenesisError(f"{what} must be an integer, got {value!r}")
    try:
        number = int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError) as exc:
        raise GenesisError(f"{what} must be an integer, got {value!r}") from exc
    if number < 0:
        raise GenesisError(f"{what} must not be negative, got {number}")
    return number


def _address(value: Any, what: str) -> bytes:
    try:
        return bytes(to_canonical_address(value))
    except (TypeError, ValueError) as exc:
        raise GenesisError(f"{what} is not an address: {value!r}") from exc


def _bytes32(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(str(value).removeprefix("0x"))
    except ValueError as exc:
        raise GenesisError(f"{what} is not hex: {value!r}") from exc
    if len(raw) != 32:
        raise GenesisError(f"{what} must be 32 bytes, got {len(raw)}")
    return raw


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    section = spec.get(name)
    if not isinstance(section, Mapping):
        raise GenesisError(f"genesis spec has no {name!r} section")
    return section


class _ScratchState:
    """A py-evm Prague state on an in-memory database, recording every storage slot written."""

    def __init__(self, chain_id: int, funded: Mapping[bytes, int]) -> None:
        from eth.chains.base import MiningChain
        from eth.db.atomic import AtomicDB
        from eth.vm.forks.prague import PragueVM

        chain_class = MiningChain.configure(
            __name__="GenesisScratchChain", vm_configuration=((0, PragueVM),), chain_id=chain_id
        )
        genesis_state: dict[Address, Any] = {
            Address(address): {"balance": balance, "nonce": 0, "code": b"", "storage": {}}
            for address, balance in funded.items()
        }
        params: dict[str, Any] = {
            "difficulty": 0,
            "gas_limit": SCRATCH_GAS,
            "timestamp": 0,
            "base_fee_per_gas": 0,
        }
        chain = chain_class.from_genesis(AtomicDB(), params, genesis_state)
        self.state = chain.get_vm().state
        self.written: dict[bytes, set[int]] = {}
        original_set_storage = self.state.set_storage

        def recording_set_storage(address: Address, slot: int, value: int) -> None:
            self.written.setdefault(bytes(address), set()).add(slot)
            original_set_storage(address, slot, value)

        self.state.set_storage = recording_set_storage  # type: ignore[method-assign]

    def _context(self, origin: bytes) -> Any:
        return self.state.get_transaction_context_class()(gas_price=0, origin=Address(origin))

    def create_at(self, address: bytes, sender: bytes, initcode: bytes, what: str) -> None:
        """Run `initcode` as a contract creation whose new address is `address`."""
        from eth.vm.message import Message

        if self.state.get_code(Address(address)):
            raise GenesisError(f"two contracts at {to_checksum_address(address)}")
        message = Message(
            gas=SCRATCH_GAS,
            to=Address(b""),
            sender=Address(sender),
            value=0,
            data=b"",
            code=initcode,
            create_address=Address(address),
        )
        computation = self.state.computation_class.apply_create_message(
            self.state, message, self._context(sender)
        )
        if computation.is_error:
            raise GenesisError(f"constructor of {what} failed: {computation.error!r}")

    def call(self, address: bytes, sender: bytes, data: bytes, what: str) -> None:
        """Run a message call of `address` with `data` from `sender`; raises if it reverts."""
        from eth.vm.message import Message

        message = Message(
            gas=SCRATCH_GAS,
            to=Address(address),
            sender=Address(sender),
            value=0,
            data=data,
            code=self.state.get_code(Address(address)),
        )
        computation = self.state.computation_class.apply_message(self.state, message, self._context(sender))
        if computation.is_error:
            raise GenesisError(f"{what} failed: {computation.error!r}")

    def account(self, address: bytes, balance: int) -> GenesisAccount:
        """The final alloc entry of a contract built here (non-zero storage only)."""
        addr = Address(address)
        storage = {
            slot: value
            for slot in sorted(self.written.get(address, ()))
            if (value := self.state.get_storage(addr, slot)) != 0
        }
        return GenesisAccount(
            balance=balance,
            nonce=self.state.get_nonce(addr),
            code=self.state.get_code(addr),
            storage=storage,
        )


def _initcode(contract: str, types: list[str], args: list[Any]) -> bytes:
    return load_artifact(contract).bytecode + abi_encode(types, args)


def _calldata(signature: str, types: list[str], args: list[Any]) -> bytes:
    return function_signature_to_4byte_selector(signature) + abi_encode(types, args)


def build_l1_genesis(spec: Mapping[str, Any], *, tradezone_genesis_root: bytes | None = None) -> L1Genesis:
    """Build the EVM genesis described by `spec` (the format of genesis/devnet.json).

    Guarantees: the alloc funds every dev account and every `alloc` entry; Bridge, Staking,
    Governance and each ERC-20 asset sit at their spec addresses with constructor state applied
    and token balances minted; the bridge lists every asset under its asset id and starts from
    `tradezone_genesis_root` (if given) or the spec's `bridge.genesisStateRoot`. Raises
    GenesisError on any invalid field and builds nothing partial.
    """
    chain_id = _int(spec.get("chainId"), "chainId")
    header = _section(spec, "header")
    contracts = _section(spec, "contracts")
    governance_spec = _section(spec, "governance")
    bridge_spec = _section(spec, "bridge")
    staking_spec = _section(spec, "staking")
    assets = spec.get("assets")
    if not isinstance(assets, list) or not assets:
        raise GenesisError("genesis spec has no 'assets' list")

    gas_limit = _int(header.get("gasLimit"), "header.gasLimit")
    if gas_limit < 5_000:
        raise GenesisError(f"header.gasLimit {gas_limit} is below the protocol minimum of 5000")
    try:
        extra_data = bytes.fromhex(str(header.get("extraData", "0x")).removeprefix("0x"))
    except ValueError as exc:
        raise GenesisError(f"header.extraData is not hex: {exc}") from exc
    if len(extra_data) > 32:
        raise GenesisError(f"header.extraData is {len(extra_data)} bytes, at most 32 are allowed")

    bridge = _address(contracts.get("Bridge"), "contracts.Bridge")
    staking = _address(contracts.get("Staking"), "contracts.Staking")
    governance = _address(contracts.get("Governance"), "contracts.Governance")

    balances: dict[bytes, int] = {}
    dev_accounts: list[DevAccount] = []
    for entry in spec.get("devAccounts", []):
        address = _address(entry.get("address"), "devAccounts[].address")
        balances[address] = balances.get(address, 0) + _int(entry.get("balance", 0), "devAccounts[].balance")
        dev_accounts.append(
            DevAccount(
                index=_int(entry.get("index"), "devAccounts[].index"),
                role=str(entry.get("role", "")),
                address=to_checksum_address(address),
                private_key=str(entry.get("privateKey", "")),
            )
        )
    for address_text, balance in dict(spec.get("alloc", {})).items():
        address = _address(address_text, "alloc key")
        balances[address] = balances.get(address, 0) + _int(balance, f"alloc[{address_text}]")

    members = [_address(m, "governance.members[]") for m in governance_spec.get("members", [])]
    threshold = _int(governance_spec.get("threshold"), "governance.threshold")
    if tradezone_genesis_root is not None:
        if len(tradezone_genesis_root) != 32:
            raise GenesisError("tradezone_genesis_root must be 32 bytes")
        genesis_root = bytes(tradezone_genesis_root)
    else:
        genesis_root = _bytes32(bridge_spec.get("genesisStateRoot"), "bridge.genesisStateRoot")

    deployer = _address(dev_accounts[0].address if dev_accounts else ZERO_ADDRESS, "deployer")
    scratch = _ScratchState(chain_id, {})
    scratch.create_at(
        governance,
        deployer,
        _initcode("Governance", ["address[]", "uint256"], [members, threshold]),
        "Governance",
    )
    scratch.create_at(
        staking,
        deployer,
        _initcode(
            "Staking",
            ["address", "address", "uint256"],
            [bridge, governance, _int(staking_spec.get("unbondingDelay"), "staking.unbondingDelay")],
        ),
        "Staking",
    )

    tokens: list[bytes] = []
    asset_ids: dict[str, int] = {}
    seen_ids: set[int] = set()
    token_accounts: list[bytes] = []
    for asset in assets:
        symbol = str(asset.get("symbol", ""))
        asset_id = _int(asset.get("assetId"), f"assets[{symbol}].assetId")
        if asset_id >= 2**32 or asset_id in seen_ids:
            raise GenesisError(f"asset id {asset_id} of {symbol} is out of range or used twice")
        seen_ids.add(asset_id)
        asset_ids[symbol] = asset_id
        if asset.get("native"):
            tokens.append(ZERO_ADDRESS)
            continue
        token = _address(asset.get("address"), f"assets[{symbol}].address")
        owner = _address(asset.get("owner"), f"assets[{symbol}].owner")
        decimals = _int(asset.get("decimals"), f"assets[{symbol}].decimals")
        scratch.create_at(
            token,
            deployer,
            _initcode(
                "ERC20",
                ["string", "string", "uint8", "address"],
                [str(asset.get("name", symbol)), symbol, decimals, owner],
            ),
            f"ERC20 {symbol}",
        )
        for holder, amount in dict(asset.get("balances", {})).items():
            scratch.call(
                token,
                owner,
                _calldata(
                    "mint(address,uint256)",
                    ["address", "uint256"],
                    [_address(holder, f"assets[{symbol}].balances key"), _int(amount, f"{symbol} balance")],
                ),
                f"mint of {symbol} to {holder}",
            )
        tokens.append(token)
        token_accounts.append(token)

    scratch.create_at(
        bridge,
        deployer,
        _initcode(
            "Bridge",
            [
                "address",
                "address",
                "address",
                "uint256",
                "uint256",
                "uint256",
                "bytes32",
                "address[]",
                "uint32[]",
            ],
            [
                _address(bridge_spec.get("sequencer"), "bridge.sequencer"),
                governance,
                staking,
                _int(bridge_spec.get("forcedInclusionDelay"), "bridge.forcedInclusionDelay"),
                _int(bridge_spec.get("finalizationDelay"), "bridge.finalizationDelay"),
                _int(bridge_spec.get("forcedWithdrawalFee"), "bridge.forcedWithdrawalFee"),
                genesis_root,
                tokens,
                [asset_ids[str(a.get("symbol", ""))] for a in assets],
            ],
        ),
        "Bridge",
    )

    alloc: dict[bytes, GenesisAccount] = {
        address: GenesisAccount(balance=balance) for address, balance in balances.items()
    }
    contract_addresses: dict[str, str] = {}
    for name, address in [("Bridge", bridge), ("Staking", staking), ("Governance", governance)]:
        if address in alloc:
            raise GenesisError(f"{name} address {to_checksum_address(address)} is also a funded account")
        alloc[address] = scratch.account(address, 0)
        contract_addresses[name] = to_checksum_address(address)
    for asset, token in zip([a for a in assets if not a.get("native")], token_accounts, strict=True):
        if token in alloc:
            raise GenesisError(f"token address {to_checksum_address(token)} is also a funded account")
        alloc[token] = scratch.account(token, 0)
        contract_addresses[str(asset.get("symbol"))] = to_checksum_address(token)

    return L1Genesis(
        chain_id=chain_id,
        gas_limit=gas_limit,
        base_fee_per_gas=_int(header.get("baseFeePerGas", 1_000_000_000), "header.baseFeePerGas"),
        timestamp=_int(header.get("timestamp", 0), "header.timestamp"),
        extra_data=extra_data,
        coinbase=_address(header.get("coinbase", "0x" + "00" * 20), "header.coinbase"),
        alloc=alloc,
        contracts=contract_addresses,
        asset_ids=asset_ids,
        dev_accounts=tuple(dev_accounts),
        spec=dict(spec),
    )
