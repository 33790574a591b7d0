"""A small test harness over a real in-memory py-evm chain (Prague rules): deploy, transact,
call and read logs. For tests only; the node's own chain lives in node/evm."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eth.abc import ComputationAPI, ReceiptAPI
from eth.chains.base import MiningChain
from eth.db.atomic import AtomicDB
from eth.vm.forks.prague import PragueVM
from eth.vm.message import Message
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_keys.datatypes import PrivateKey
from eth_typing import Address
from eth_utils import function_signature_to_4byte_selector, keccak, to_canonical_address, to_checksum_address

from genesis.builder import L1Genesis, build_l1_genesis, load_genesis_spec
from node.evm.compile import load_artifact

DEFAULT_GAS = 15_000_000
MAX_FEE = 100 * 10**9
ERROR_SELECTOR = bytes.fromhex("08c379a0")


class TxFailed(Exception):
    """A transaction or call reverted; `reason` is the decoded revert string, if any."""

    def __init__(self, reason: str, gas_used: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.gas_used = gas_used


def revert_reason(output: bytes) -> str:
    """The Error(string) message of revert data, or a hex dump of other revert data."""
    if output[:4] == ERROR_SELECTOR:
        return str(abi_decode(["string"], output[4:])[0])
    return "0x" + output.hex()


def _topic_bytes(topic: int | bytes) -> bytes:
    return topic.to_bytes(32, "big") if isinstance(topic, int) else bytes(topic)


def _normalize(value: Any) -> Any:
    """Checksum every decoded address (eth-abi returns them lower-case), recursively."""
    if isinstance(value, str) and len(value) == 42 and value.startswith("0x"):
        return to_checksum_address(value)
    if isinstance(value, tuple | list):
        return tuple(_normalize(v) for v in value)
    return value


def abi_type(param: Mapping[str, Any]) -> str:
    """The canonical ABI type string of an ABI parameter (tuples spelled out)."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(abi_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@dataclass
class TxResult:
    """The outcome of one mined transaction."""

    receipt: ReceiptAPI
    computation: ComputationAPI
    block_number: int
    gas_used: int
    receipt_gas_price: int = 0

    @property
    def ok(self) -> bool:
        return not self.computation.is_error

    @property
    def output(self) -> bytes:
        return bytes(self.computation.output)


class Harness:
    """A py-evm chain built from an L1 genesis (the devnet one by default)."""

    def __init__(self, genesis: L1Genesis | None = None) -> None:
        self.genesis = genesis or build_l1_genesis(load_genesis_spec())
        chain_class = MiningChain.configure(
            __name__="HarnessChain", vm_configuration=((0, PragueVM),), chain_id=self.genesis.chain_id
        )
        self.chain: Any = chain_class.from_genesis(
            AtomicDB(), self.genesis.header_params(), self.genesis.state()
        )
        self.keys: dict[str, PrivateKey] = {}
        for account in self.genesis.dev_accounts:
            key = PrivateKey(bytes.fromhex(account.private_key.removeprefix("0x")))
            self.keys[account.address] = key
        self.accounts = [a.address for a in sorted(self.genesis.dev_accounts, key=lambda a: a.index)]

    # -------------------------------------------------------------- chain access
    @property
    def block_number(self) -> int:
        """Number of the latest mined block."""
        return int(self.chain.get_canonical_head().block_number)

    def balance(self, address: str) -> int:
        return int(self.chain.get_vm().state.get_balance(Address(to_canonical_address(address))))

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks."""
        for _ in range(blocks):
            self.chain.mine_all([])

    def _sign(self, sender: str, to: str | None, data: bytes, value: int, gas: int, nonce: int) -> Any:
        vm = self.chain.get_vm()
        builder: Any = vm.get_transaction_builder()
        unsigned = builder.new_unsigned_dynamic_fee_transaction(
            chain_id=self.genesis.chain_id,
            nonce=nonce,
            max_priority_fee_per_gas=0,
            max_fee_per_gas=MAX_FEE,
            gas=gas,
            to=Address(to_canonical_address(to)) if to else b"",
            value=value,
            data=data,
            access_list=(),
        )
        return unsigned.as_signed_transaction(self.keys[to_checksum_address(sender)])

    def send_many(self, txs: Sequence[tuple[str, str | None, bytes, int, int]]) -> list[TxResult]:
        """Mine `txs` (sender, to, data, value, gas) together in one block with `mine_all`."""
        nonces: dict[str, int] = {}
        state = self.chain.get_vm().state
        signed = []
        for sender, to, data, value, gas in txs:
            sender = to_checksum_address(sender)
            if sender not in nonces:
                nonces[sender] = int(state.get_nonce(Address(to_canonical_address(sender))))
            signed.append(self._sign(sender, to, data, value, gas, nonces[sender]))
            nonces[sender] += 1
        block_result, receipts, computations = self.chain.mine_all(signed)
        header = block_result.imported_block.header
        number = int(header.block_number)
        results = []
        cumulative = 0
        for receipt, computation in zip(receipts, computations, strict=True):
            results.append(
                TxResult(
                    receipt,
                    computation,
                    number,
                    int(receipt.gas_used) - cumulative,
                    int(header.base_fee_per_gas),
                )
            )
            cumulative = int(receipt.gas_used)
        return results

    def send(
        self, sender: str, to: str | None, data: bytes, value: int = 0, gas: int = DEFAULT_GAS
    ) -> TxResult:
        """Mine one transaction; raises TxFailed with the revert reason if it reverts."""
        result = self.send_many([(sender, to, data, value, gas)])[0]
        if not result.ok:
            raise TxFailed(revert_reason(result.output), result.gas_used)
        return result

    def call(self, to: str, data: bytes, sender: str | None = None, value: int = 0) -> bytes:
        """Run a call against the latest state without mining; raises TxFailed on revert."""
        state = self.chain.get_vm().state
        origin = Address(to_canonical_address(sender or self.accounts[0]))
        target = Address(to_canonical_address(to))
        message = Message(
            gas=DEFAULT_GAS,
            to=target,
            sender=origin,
            value=value,
            data=data,
            code=state.get_code(target),
        )
        context = state.get_transaction_context_class()(gas_price=0, origin=origin)
        snapshot = state.snapshot()
        computation = state.computation_class.apply_message(state, message, context)
        state.revert(snapshot)
        if computation.is_error:
            raise TxFailed(revert_reason(bytes(computation.output)))
        return bytes(computation.output)

    def deploy(
        self, name: str, types: Sequence[str], args: Sequence[Any], sender: str | None = None
    ) -> Contract:
        """Deploy artifact `name` with constructor `args`; returns the contract at its new address."""
        artifact = load_artifact(name)
        result = self.send(
            sender or self.accounts[0], None, artifact.bytecode + abi_encode(list(types), list(args))
        )
        address = to_checksum_address(bytes(result.computation.msg.storage_address))
        return Contract(self, address, artifact.abi)

    def contract(self, name: str, address: str) -> Contract:
        """The contract of artifact `name` at `address`."""
        return Contract(self, to_checksum_address(address), load_artifact(name).abi)


class Contract:
    """ABI-aware access to one deployed contract."""

    def __init__(self, harness: Harness, address: str, abi: list[dict[str, Any]]) -> None:
        self.harness = harness
        self.address = address
        self.functions = {e["name"]: e for e in abi if e.get("type") == "function"}
        self.events = {e["name"]: e for e in abi if e.get("type") == "event"}

    def calldata(self, name: str, *args: Any) -> bytes:
        fn = self.functions[name]
        types = [abi_type(p) for p in fn["inputs"]]
        signature = f"{name}({','.join(types)})"
        return function_signature_to_4byte_selector(signature) + abi_encode(types, list(args))

    def transact(
        self, name: str, *args: Any, sender: str, value: int = 0, gas: int = DEFAULT_GAS
    ) -> TxResult:
        """Mine a call of `name`; raises TxFailed with the revert reason if it reverts."""
        return self.harness.send(sender, self.address, self.calldata(name, *args), value, gas)

    def call(self, name: str, *args: Any, sender: str | None = None) -> Any:
        """The decoded return value of `name` (a single value, or a tuple for several outputs)."""
        output = self.harness.call(self.address, self.calldata(name, *args), sender)
        outputs = self.functions[name]["outputs"]
        decoded = _normalize(abi_decode([abi_type(p) for p in outputs], output))
        return decoded[0] if len(decoded) == 1 else decoded

    def logs(self, result: TxResult, name: str) -> list[dict[str, Any]]:
        """The decoded `name` events this contract emitted in `result`, in order."""
        event = self.events[name]
        types = [abi_type(p) for p in event["inputs"]]
        topic0 = keccak(text=f"{name}({','.join(types)})")
        mine = to_canonical_address(self.address)
        decoded = []
        for entry in result.receipt.logs:
            topics = [_topic_bytes(t) for t in entry.topics]
            if bytes(entry.address) != mine or not topics or topics[0] != topic0:
                continue
            indexed = [p for p in event["inputs"] if p["indexed"]]
            plain = [p for p in event["inputs"] if not p["indexed"]]
            values = dict(
                zip(
                    [p["name"] for p in plain],
                    abi_decode([abi_type(p) for p in plain], entry.data),
                    strict=True,
                )
            )
            for param, topic in zip(indexed, topics[1:], strict=True):
                values[param["name"]] = abi_decode([abi_type(param)], topic)[0]
            decoded.append({k: _normalize(v) for k, v in values.items()})
        return decoded


def message_hash(index: int, kind: int, payload: bytes) -> bytes:
    """msgHash = keccak256(abi.encode(index, kind, payload fields...)) (docs/interfaces.md)."""
    return keccak(abi_encode(["uint256", "uint8"], [index, kind]) + payload)


def next_rolling_hash(previous: bytes, msg_hash: bytes) -> bytes:
    """rolling[i] = keccak256(rolling[i-1] ++ msgHash[i])."""
    return keccak(previous + msg_hash)
