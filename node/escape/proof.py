"""Escape proofs: an account's balance leaf proved against the last committed state root.

Three sources, none of which is trusted:

* :func:`proof_from_replay` rebuilds TradeZone from the batches' calldata on the EVM chain alone
  (``replay_from_l1``, every committed root checked) and proves the leaf under the last
  committed root: no TradeZone node is needed;
* :func:`load_proof_file` reads a proof file (the asset entry of ``tz_getProof``, optionally
  wrapped in the whole ``tz_getProof`` answer; ``exos escape prove`` writes one);
* :func:`proof_from_tz_rpc` asks any TradeZone node's ``tz_getProof`` at the last batch's block.

Whatever the source, :func:`check_escape_proof` verifies the proof with
``proofs.verify.verify_proof`` against the root read from the bridge before anything is sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import aiohttp
import rlp

from node.escape.errors import NothingToWithdraw, ProofMismatch, ProofSourceError
from node.evm.bridge import BridgeClient
from node.evm.l1 import L1Client
from node.tradezone.blocks import Header
from node.tradezone.state import State, balance_key
from proofs.engine import TrieError
from proofs.verify import ProofError, verify_proof


@runtime_checkable
class ProvingTrie(Protocol):
    """A state trie that can prove a key under one of its roots (``proofs.engine.CommitEngine``)."""

    def prove(self, key: bytes, root: bytes | None = None) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class EscapeProof:
    """A claimed balance leaf of ``account`` in ``asset_id`` and its EIP-1186 node list."""

    account: bytes
    asset_id: int
    value: bytes  # RLP([balance, reserved, ...]); b"" for a proven absence
    nodes: tuple[bytes, ...]
    root: bytes | None = None  # the root the source says it proves against (informational)

    @property
    def key(self) -> bytes:
        """The balance leaf's trie key (docs/interfaces.md)."""
        return balance_key(self.account, self.asset_id)


@dataclass(frozen=True, slots=True)
class CheckedLeaf:
    """A balance leaf verified against a committed root."""

    root: bytes
    balance: int
    reserved: int


def decode_balance_value(value: bytes) -> tuple[int, int]:
    """(balance, reserved) of a balance leaf value; (0, 0) for an absent leaf. Later fields
    (appended by future versions) are ignored, as the bridge ignores them. Raises ValueError."""
    if not value:
        return 0, 0
    try:
        items = rlp.decode(value, strict=True)
    except rlp.exceptions.DecodingError as err:
        raise ValueError(f"balance leaf is not RLP: {err}") from err
    if not isinstance(items, list) or len(items) < 2 or not all(isinstance(i, bytes) for i in items[:2]):
        raise ValueError("balance leaf is not RLP([balance, reserved, ...])")
    for item in items[:2]:
        if item[:1] == b"\x00":
            raise ValueError("balance leaf holds a non-canonical integer")
    return int.from_bytes(items[0], "big"), int.from_bytes(items[1], "big")


def check_escape_proof(proof: EscapeProof, committed_root: bytes) -> CheckedLeaf:
    """Verify ``proof`` against ``committed_root`` exactly as the bridge will: the node list must
    prove the account's own balance key to hold ``proof.value``, and that value must carry a
    positive balance. Raises ProofMismatch (any proof that does not check, a value that is not
    the proven one) or NothingToWithdraw (absent leaf or zero balance)."""
    if proof.root is not None and proof.root != committed_root:
        raise ProofMismatch(
            f"the proof does not match the committed root: it is for root 0x{proof.root.hex()}, "
            f"the bridge's last committed root is 0x{committed_root.hex()}"
        )
    try:
        proven = verify_proof(committed_root, proof.key, list(proof.nodes))
    except ProofError as err:
        raise ProofMismatch(f"the proof does not match the committed root 0x{committed_root.hex()}: {err}") from err
    if proven != proof.value:
        raise ProofMismatch(
            f"the proof does not match the committed root: it proves leaf 0x{proven.hex() or '(absent)'}, "
            f"the proof file claims 0x{proof.value.hex()}"
        )
    if not proven:
        raise NothingToWithdraw(
            "nothing to withdraw: the account has no balance leaf for this asset under the committed root")
    try:
        balance, reserved = decode_balance_value(proven)
    except ValueError as err:
        raise ProofMismatch(f"the proven balance leaf does not decode: {err}") from err
    if balance == 0:
        raise NothingToWithdraw("nothing to withdraw: the committed balance of this account and asset is zero")
    return CheckedLeaf(committed_root, balance, reserved)


def proof_from_state(state: State, account: bytes, asset_id: int, root: bytes) -> EscapeProof:
    """The proof of ``account``'s leaf under ``root`` from a state whose trie still holds that
    root (for example one rebuilt by replay). Raises ProofSourceError if the root is gone."""
    trie = state.trie
    if not isinstance(trie, ProvingTrie):
        raise ProofSourceError("this state's trie cannot prove")
    key = balance_key(account, asset_id)
    try:
        nodes = trie.prove(key, root)
    except TrieError as err:  # the root is unknown or pruned, or a node is missing
        raise ProofSourceError(f"cannot prove under root 0x{root.hex()}: {err}") from err
    try:
        value = verify_proof(root, key, nodes)
    except ProofError as err:
        raise ProofSourceError(f"the rebuilt trie produced a proof that does not check: {err}") from err
    return EscapeProof(account, asset_id, value, tuple(nodes), root)


async def proof_from_replay(
    l1: L1Client,
    bridge_address: bytes,
    account: bytes,
    asset_id: int,
    genesis: Callable[[], tuple[State, Header]] | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> EscapeProof:
    """Rebuild TradeZone from the EVM chain's calldata (every committed batch, every root
    checked) and prove ``account``'s leaf under the last committed root. Raises
    ProofSourceError if the replay fails or the bridge's root moved during it."""
    from node.sequencer.replay import ReplayError, replay_from_l1
    from node.tradezone.genesis import load_devnet

    try:
        result = await replay_from_l1(l1, bridge_address, genesis or load_devnet, progress=progress)
    except ReplayError as err:
        raise ProofSourceError(f"cannot rebuild TradeZone from the EVM chain: {err}") from err
    root = result.head.state_root
    committed = await BridgeClient(l1, bridge_address).last_committed_root()
    if committed != root:
        raise ProofSourceError(
            f"a batch was committed during the replay (rebuilt root 0x{root.hex()}, bridge 0x{committed.hex()}); "
            "try again"
        )
    return proof_from_state(result.state, account, asset_id, root)


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith(("0x", "0X")):
        raise ProofSourceError(f"{what} must be a 0x-prefixed hex string")
    try:
        return bytes.fromhex(value[2:])
    except ValueError as err:
        raise ProofSourceError(f"{what} is not hex: {value[:20]}") from err


def proof_from_json(doc: Any, account: bytes, asset_id: int) -> EscapeProof:
    """Read a proof from a ``tz_getProof`` answer or one of its ``balances`` entries. The
    document's account and key, when present, must be ``account``'s. Raises ProofSourceError."""
    if not isinstance(doc, dict):
        raise ProofSourceError("a proof document is a JSON object")
    root: bytes | None = None
    if "stateRoot" in doc:
        root = _hex(doc["stateRoot"], "stateRoot")
    if "address" in doc and _hex(doc["address"], "address") != account:
        raise ProofSourceError(f"the proof is for account {doc['address']}, not 0x{account.hex()}")
    entry = doc
    if "balances" in doc:
        entries = doc["balances"]
        if not isinstance(entries, list):
            raise ProofSourceError("balances must be a list")
        found = [e for e in entries if isinstance(e, dict) and e.get("assetId") == asset_id]
        if not found:
            raise ProofSourceError(f"the proof document has no entry for asset {asset_id}")
        entry = found[0]
    if entry.get("assetId", asset_id) != asset_id:
        raise ProofSourceError(f"the proof is for asset {entry.get('assetId')}, not {asset_id}")
    if "key" in entry and _hex(entry["key"], "key") != balance_key(account, asset_id):
        raise ProofSourceError("the proof's key is not this account's balance key for this asset")
    nodes = entry.get("proof")
    if not isinstance(nodes, list):
        raise ProofSourceError("the proof entry has no proof node list")
    value = _hex(entry.get("value", "0x"), "value")
    return EscapeProof(account, asset_id, value, tuple(_hex(n, "proof node") for n in nodes), root)


def load_proof_file(path: Path, account: bytes, asset_id: int) -> EscapeProof:
    """Read a proof file (see :func:`proof_from_json`). Raises ProofSourceError."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ProofSourceError(f"cannot read proof file {path}: {err}") from err
    return proof_from_json(doc, account, asset_id)


def proof_to_json(proof: EscapeProof) -> dict[str, Any]:
    """The ``tz_getProof`` shape of one asset entry, with the account and root around it."""
    balance, reserved = decode_balance_value(proof.value)
    return {
        "address": "0x" + proof.account.hex(),
        "stateRoot": None if proof.root is None else "0x" + proof.root.hex(),
        "balances": [{
            "assetId": proof.asset_id,
            "key": "0x" + proof.key.hex(),
            "value": "0x" + proof.value.hex(),
            "balance": str(balance),
            "reserved": str(reserved),
            "proof": ["0x" + node.hex() for node in proof.nodes],
        }],
    }


def write_proof_file(path: Path, proof: EscapeProof) -> None:
    """Write ``proof`` as JSON (readable back with :func:`load_proof_file`), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(proof_to_json(proof), indent=2) + "\n")
    tmp.replace(path)


async def proof_from_tz_rpc(url: str, account: bytes, asset_id: int, tz_block: int, *,
                            timeout: float = 30.0) -> EscapeProof:
    """Ask a TradeZone node for ``tz_getProof`` at block ``tz_block`` (the last committed batch's
    block). The node is not trusted: the caller checks the proof against the bridge's root.
    Raises ProofSourceError when the node cannot be reached or answers with an error."""
    payload = {"jsonrpc": "2.0", "id": 1, "method": "tz_getProof",
               "params": ["0x" + account.hex(), [asset_id], tz_block]}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(url, json=payload) as response:
                answer = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as err:
        raise ProofSourceError(f"cannot reach the TradeZone node at {url}: {err}") from err
    if not isinstance(answer, dict):
        raise ProofSourceError(f"the TradeZone node at {url} answered {str(answer)[:80]}")
    if "error" in answer:
        error = answer["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ProofSourceError(f"the TradeZone node at {url} refused tz_getProof: {message}")
    return proof_from_json(answer.get("result"), account, asset_id)
