"""Light client: an account's balance proven against the state root committed on the EVM chain.

Trusts only the EVM chain's JSON-RPC (plain `eth_call`s on the bridge, pinned to one L1 block). The
TradeZone node is asked for `tz_getProof` and not trusted at all: its answer must prove, under the
bridge's `lastCommittedRoot()`, the balance leaf whose key this client computes itself.

`tz_getProof(address, [assetId, ...], block)` answer, as this client reads it (docs/rpc.md,
docs/proofs.md)::

    {"address": "0x<20 bytes>", "blockNumber": <int>, "stateRoot": "0x<32 bytes>",
     "batch": {"index": <int>, "l1Block": <int>, ...} | null,
     "balances": [{"assetId": <int>, "key": "0x<32 bytes>", "value": "0x<RLP([balance, reserved])>",
                   "balance": "<decimal>", "reserved": "<decimal>", "proof": ["0x<node>", ...]}]}

`key` is `keccak256(0x01 ‖ address ‖ assetId as 4 bytes big-endian)`; `value` is "0x" and `proof` an
absence proof when the account holds none of the asset. The list may also be named "assets". Fields
the node adds are ignored; the anchoring batch is always read from the bridge, never from the node.

Only the standard library, `proofs.verify` and a keccak256 are used: no node, no py-evm.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proofs.verify import MalformedProofError, ProofError, keccak256, read_rlp_header, verify_proof

__all__ = [
    "ASSET_IDS",
    "AnchorBatch",
    "BalanceEncodingError",
    "BridgeStateError",
    "ClaimMismatchError",
    "InvalidBalanceProofError",
    "LightClientError",
    "ResponseShapeError",
    "RpcError",
    "UnanchoredProofError",
    "VerifiedBalance",
    "balance_key",
    "add_arguments",
    "main",
    "read_committed_state",
    "run",
    "verify_balance",
]

ASSET_IDS: dict[str, int] = {"OKB": 0, "USDT": 1, "WBTC": 2}  # devnet asset ids (docs/interfaces.md)
BALANCE_KEY_TAG = b"\x01"


class LightClientError(Exception):
    """The balance could not be proven; the message says which step failed."""


class RpcError(LightClientError):
    """An RPC endpoint could not be reached or answered with an error."""

    def __init__(self, url: str, method: str, detail: str) -> None:
        super().__init__(f"{method} at {url}: {detail}")
        self.url = url
        self.method = method
        self.detail = detail


class BridgeStateError(LightClientError):
    """The bridge's views contradict each other (or its answers are not ABI words)."""


class ResponseShapeError(LightClientError):
    """The TradeZone node's answer does not have the tz_getProof shape."""


class UnanchoredProofError(LightClientError):
    """The TradeZone node proved against a root that is not the bridge's last committed root."""

    def __init__(self, got: bytes, expected: bytes) -> None:
        super().__init__(
            f"the TradeZone node proves against root 0x{got.hex()}, the bridge's committed root is "
            f"0x{expected.hex()}"
        )
        self.got = got
        self.expected = expected


class InvalidBalanceProofError(LightClientError):
    """The proof does not prove any value of the balance leaf under the committed root."""


class ClaimMismatchError(LightClientError):
    """The TradeZone node claims a key, value or balance that the proof does not establish."""


class BalanceEncodingError(LightClientError):
    """The proven leaf value is not RLP([balance, reserved, ...]) with canonical integers."""


@dataclass(frozen=True)
class AnchorBatch:
    """A batch committed on the bridge (`batches(index)`)."""

    index: int
    state_root: bytes
    tz_block: int
    l1_block: int
    message_cursor: int
    data_hash: bytes


@dataclass(frozen=True)
class CommittedState:
    """What the bridge says at one L1 block: the last committed root and the batch that set it."""

    l1_block: int
    root: bytes
    batch: AnchorBatch | None  # None while only the genesis root is committed
    frozen: bool


@dataclass(frozen=True)
class VerifiedBalance:
    """A balance proven against the bridge's committed root."""

    account: bytes
    asset_id: int
    balance: int
    reserved: int
    value: bytes  # the proven leaf value (b"" when the account holds none of the asset)
    state_root: bytes
    batch: AnchorBatch | None
    l1_block: int  # the L1 block the bridge was read at
    frozen: bool

    @property
    def free(self) -> int:
        """The part of the balance not locked by resting orders."""
        return self.balance - self.reserved


def balance_key(account: bytes, asset_id: int) -> bytes:
    """Return the trie key of `account`'s balance leaf for `asset_id` (docs/interfaces.md)."""
    if len(account) != 20 or not 0 <= asset_id < 2**32:
        raise ValueError("an account is 20 bytes and an asset id a uint32")
    return keccak256(BALANCE_KEY_TAG + account + asset_id.to_bytes(4, "big"))


def decode_balance_value(value: bytes) -> tuple[int, int]:
    """Return (balance, reserved) of a balance leaf value; (0, 0) for b"". Later fields are ignored."""
    if not value:
        return 0, 0
    try:
        is_list, start, end = read_rlp_header(value, 0)
        if not is_list or end != len(value):
            raise BalanceEncodingError("a balance leaf is one RLP list")
        figures: list[int] = []
        position = start
        while position < end and len(figures) < 2:
            item_is_list, item_start, item_end = read_rlp_header(value, position)
            if item_is_list or item_end > end:
                raise BalanceEncodingError("balance and reserved are RLP integers")
            raw = value[item_start:item_end]
            if raw[:1] == b"\x00":
                raise BalanceEncodingError("a balance figure has a leading zero byte")
            figures.append(int.from_bytes(raw, "big"))
            position = item_end
    except MalformedProofError as exc:
        raise BalanceEncodingError(f"the balance leaf is not canonical RLP: {exc}") from exc
    if len(figures) < 2:
        raise BalanceEncodingError("a balance leaf holds at least [balance, reserved]")
    return figures[0], figures[1]


# ---------------------------------------------------------------------------------------- JSON-RPC


def _rpc(url: str, method: str, params: list[Any], timeout: float) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RpcError(url, method, f"HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise RpcError(url, method, f"unreachable: {exc}") from exc
    except ValueError as exc:
        raise RpcError(url, method, "the answer is not JSON") from exc
    if not isinstance(answer, dict):
        raise RpcError(url, method, "the answer is not a JSON-RPC object")
    if answer.get("error") is not None:
        error = answer["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise RpcError(url, method, f"error {message}")
    if "result" not in answer:
        raise RpcError(url, method, "the answer has no result")
    return answer["result"]


def _selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


def _hex_bytes(value: Any, what: str, length: int | None = None) -> bytes:
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise ResponseShapeError(f"{what} must be a 0x-prefixed hex string")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError as exc:
        raise ResponseShapeError(f"{what} is not hex") from exc
    if length is not None and len(data) != length:
        raise ResponseShapeError(f"{what} must be {length} bytes")
    return data


def _eth_call(url: str, bridge: bytes, signature: str, args: Sequence[int], block: int, timeout: float) -> bytes:
    data = _selector(signature) + b"".join(arg.to_bytes(32, "big") for arg in args)
    call = {"to": "0x" + bridge.hex(), "data": "0x" + data.hex()}
    result = _rpc(url, "eth_call", [call, hex(block)], timeout)
    try:
        return _hex_bytes(result, f"eth_call {signature}")
    except ResponseShapeError as exc:
        raise BridgeStateError(str(exc)) from exc


def _words(data: bytes, count: int, signature: str) -> list[bytes]:
    if len(data) != 32 * count:
        raise BridgeStateError(f"{signature} answered {len(data)} bytes, expected {32 * count}")
    return [data[i : i + 32] for i in range(0, len(data), 32)]


def read_committed_state(l1_rpc_url: str, bridge_address: bytes, timeout: float = 10.0) -> CommittedState:
    """Read the bridge's last committed root, its batch and the frozen flag, all at one L1 block.

    Raises RpcError if the EVM chain cannot be asked, BridgeStateError if the views disagree.
    """
    head = _rpc(l1_rpc_url, "eth_blockNumber", [], timeout)
    if not isinstance(head, str):
        raise RpcError(l1_rpc_url, "eth_blockNumber", "the answer is not a quantity")
    try:
        block = int(head, 16)
    except ValueError as exc:
        raise RpcError(l1_rpc_url, "eth_blockNumber", "the answer is not a quantity") from exc

    def view(signature: str, *args: int) -> bytes:
        return _eth_call(l1_rpc_url, bridge_address, signature, args, block, timeout)

    (root,) = _words(view("lastCommittedRoot()"), 1, "lastCommittedRoot()")
    (count_word,) = _words(view("batchCount()"), 1, "batchCount()")
    (frozen_word,) = _words(view("frozen()"), 1, "frozen()")
    count = int.from_bytes(count_word, "big")
    batch: AnchorBatch | None = None
    if count:
        state_root, tz_block, l1_block, cursor, data_hash = _words(
            view("batches(uint256)", count - 1), 5, "batches(uint256)"
        )
        batch = AnchorBatch(
            index=count - 1,
            state_root=state_root,
            tz_block=int.from_bytes(tz_block, "big"),
            l1_block=int.from_bytes(l1_block, "big"),
            message_cursor=int.from_bytes(cursor, "big"),
            data_hash=data_hash,
        )
        if batch.state_root != root:
            raise BridgeStateError(
                f"lastCommittedRoot() 0x{root.hex()} differs from batch {count - 1}'s root 0x{state_root.hex()}"
            )
    return CommittedState(l1_block=block, root=root, batch=batch, frozen=int.from_bytes(frozen_word, "big") != 0)


# ---------------------------------------------------------------------------------------- verification


def _find_entry(result: Any, account: bytes, asset_id: int) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise ResponseShapeError("the tz_getProof answer is not an object")
    if "address" in result and _hex_bytes(result["address"], "address", 20) != account:
        raise ClaimMismatchError(f"the TradeZone node answered for account {result['address']}")
    entries = result.get("balances", result.get("assets"))
    if not isinstance(entries, list):
        raise ResponseShapeError("the tz_getProof answer has no balances list")
    found = [entry for entry in entries if isinstance(entry, dict) and entry.get("assetId") == asset_id]
    if len(found) != 1:
        raise ResponseShapeError(f"the tz_getProof answer has {len(found)} entries for asset {asset_id}")
    return found[0]


def check_balance_answer(result: Any, committed_root: bytes, account: bytes, asset_id: int) -> tuple[bytes, int, int]:
    """Check a tz_getProof answer against the committed root; return (value, balance, reserved).

    Guarantees: the returned value is what the trie with root `committed_root` holds under the
    balance key of (`account`, `asset_id`); every claim the node makes about it (key, value,
    balance, reserved) agrees with that value. Raises a LightClientError subclass otherwise.
    """
    entry = _find_entry(result, account, asset_id)
    if "stateRoot" not in result:
        raise ResponseShapeError("the tz_getProof answer has no stateRoot")
    claimed_root = _hex_bytes(result["stateRoot"], "stateRoot", 32)
    if claimed_root != committed_root:
        raise UnanchoredProofError(claimed_root, committed_root)
    key = balance_key(account, asset_id)
    if "key" in entry and _hex_bytes(entry["key"], "key", 32) != key:
        raise ClaimMismatchError("the proof's key is not this account's balance key for this asset")
    nodes = entry.get("proof")
    if not isinstance(nodes, list):
        raise ResponseShapeError("the balance entry has no proof list")
    proof = [_hex_bytes(node, "proof node") for node in nodes]
    try:
        value = verify_proof(committed_root, key, proof)
    except ProofError as exc:
        raise InvalidBalanceProofError(f"{type(exc).__name__}: {exc}") from exc
    if "value" in entry and _hex_bytes(entry["value"], "value") != value:
        raise ClaimMismatchError("the claimed leaf value is not the value the proof establishes")
    balance, reserved = decode_balance_value(value)
    for field, proven in (("balance", balance), ("reserved", reserved)):
        if field in entry and str(entry[field]) != str(proven):
            raise ClaimMismatchError(f"the claimed {field} {entry[field]} is not the proven {proven}")
    return value, balance, reserved


def verify_balance(
    l1_rpc_url: str,
    bridge_address: bytes,
    tz_rpc_url: str,
    account: bytes,
    asset_id: int,
    *,
    timeout: float = 10.0,
) -> VerifiedBalance:
    """Return `account`'s balance of `asset_id` proven against the bridge's last committed root.

    Reads the committed root and its batch from the bridge (eth_call at one L1 block), asks the
    TradeZone node for `tz_getProof` at that batch's TradeZone block, and verifies the proof locally.
    Raises a LightClientError subclass if anything fails to verify; never returns an unproven figure.
    """
    if len(account) != 20 or len(bridge_address) != 20:
        raise ValueError("account and bridge addresses are 20 bytes")
    committed = read_committed_state(l1_rpc_url, bridge_address, timeout)
    tz_block = committed.batch.tz_block if committed.batch is not None else 0
    result = _rpc(tz_rpc_url, "tz_getProof", ["0x" + account.hex(), [asset_id], tz_block], timeout)
    value, balance, reserved = check_balance_answer(result, committed.root, account, asset_id)
    return VerifiedBalance(
        account=account,
        asset_id=asset_id,
        balance=balance,
        reserved=reserved,
        value=value,
        state_root=committed.root,
        batch=committed.batch,
        l1_block=committed.l1_block,
        frozen=committed.frozen,
    )


# ---------------------------------------------------------------------------------------- CLI


def _address(text: str) -> bytes:
    if not text.startswith(("0x", "0X")) or len(text) != 42:
        raise argparse.ArgumentTypeError(f"not a 0x-prefixed 20-byte address: {text}")
    try:
        return bytes.fromhex(text[2:])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not hex: {text}") from exc


def _asset(text: str) -> int:
    if text.upper() in ASSET_IDS:
        return ASSET_IDS[text.upper()]
    try:
        asset_id = int(text, 0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"unknown asset {text} (a symbol of {sorted(ASSET_IDS)} or an id)") from exc
    if not 0 <= asset_id < 2**32:
        raise argparse.ArgumentTypeError("an asset id is a uint32")
    return asset_id


def _describe(result: VerifiedBalance) -> str:
    names = {asset_id: name for name, asset_id in ASSET_IDS.items()}
    asset = f"{names[result.asset_id]} ({result.asset_id})" if result.asset_id in names else str(result.asset_id)
    if result.batch is None:
        anchor = "the genesis root (no batch committed yet)"
    else:
        anchor = (
            f"batch {result.batch.index} (TradeZone block {result.batch.tz_block}, "
            f"committed in L1 block {result.batch.l1_block})"
        )
    return "\n".join(
        [
            f"account     0x{result.account.hex()}",
            f"asset       {asset}",
            f"balance     {result.balance} (reserved {result.reserved}, free {result.free})",
            f"state root  0x{result.state_root.hex()}",
            f"anchored to {anchor}",
            f"bridge read at L1 block {result.l1_block}; frozen: {'yes' if result.frozen else 'no'}",
            "proof verified locally against the root committed on the EVM chain",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `verify-proof` arguments to `parser` (used by `main` and by the `exos` CLI)."""
    parser.add_argument("--l1-rpc", required=True, help="EVM chain JSON-RPC URL (trusted)")
    parser.add_argument("--bridge", required=True, type=_address, help="bridge contract address")
    parser.add_argument("--tz-rpc", required=True, help="TradeZone JSON-RPC URL (not trusted)")
    parser.add_argument("--account", required=True, type=_address, help="account address")
    parser.add_argument("--asset", required=True, type=_asset, help="asset symbol (OKB, USDT, WBTC) or id")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per RPC call")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    """Prove the balance the parsed `args` name; print it and return 0, or print why not and return 1."""
    try:
        result = verify_balance(args.l1_rpc, args.bridge, args.tz_rpc, args.account, args.asset, timeout=args.timeout)
    except LightClientError as exc:
        print(f"verify-proof: NOT VERIFIED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        batch = result.batch
        print(
            json.dumps(
                {
                    "account": "0x" + result.account.hex(),
                    "assetId": result.asset_id,
                    "balance": str(result.balance),
                    "reserved": str(result.reserved),
                    "stateRoot": "0x" + result.state_root.hex(),
                    "batch": None
                    if batch is None
                    else {"index": batch.index, "tzBlock": batch.tz_block, "l1Block": batch.l1_block},
                    "l1Block": result.l1_block,
                    "frozen": result.frozen,
                }
            )
        )
    else:
        print(_describe(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`exos verify-proof`: print the proven balance and its batch; return 0, or 1 if unproven (2: usage)."""
    parser = argparse.ArgumentParser(
        prog="exos verify-proof",
        description="Prove an account's TradeZone balance against the state root committed on the EVM chain.",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
