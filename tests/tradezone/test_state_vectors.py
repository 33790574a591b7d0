"""Run the shared JSON state-transition vectors under tests/vectors/tradezone: build the
pre-state from its genesis spec, check the pre-root, decode every block from its canonical
bytes (signers recovered afresh), apply it with state_transition, and compare the post-root and
every receipt (JSON view and canonical bytes). Also checks the generator reproduces the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.tradezone.blocks import decode_block, decode_header
from node.tradezone.genesis import build_genesis_state
from node.tradezone.receipts import encode_receipt, receipt_to_json
from node.tradezone.state_transition import state_transition
from node.tradezone.transactions import ACTION_TYPES, L1_MESSAGE_TYPES, SignedTx
from tests.vectors.generate import SCENARIOS, build_vector, render

VECTOR_DIR = Path(__file__).resolve().parents[1] / "vectors" / "tradezone"
VECTORS = sorted(VECTOR_DIR.glob("*.json"))


def test_every_scenario_has_a_vector_file() -> None:
    assert sorted(p.stem for p in VECTORS) == sorted(SCENARIOS)


def test_the_vectors_exercise_every_action_and_l1_message_type() -> None:
    seen: set[type] = set()
    for path in VECTORS:
        for entry in json.loads(path.read_text())["blocks"]:
            for tx in decode_block(bytes.fromhex(entry["block"])).transactions:
                seen.add(type(tx.action) if isinstance(tx, SignedTx) else type(tx))
                if isinstance(tx, SignedTx) and hasattr(tx.action, "orders"):
                    seen.update(type(order) for order in tx.action.orders)
    missing = {cls.__name__ for cls in (*ACTION_TYPES, *L1_MESSAGE_TYPES)} - {cls.__name__ for cls in seen}
    assert not missing, f"no vector applies {sorted(missing)}"


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_vector_replays_to_the_expected_roots_and_receipts(path: Path) -> None:
    vector = json.loads(path.read_text())
    state = build_genesis_state(vector["pre_state"]["genesis"])
    assert "0x" + state.trie.root.hex() == vector["pre_state"]["pre_root"]
    parent = decode_header(bytes.fromhex(vector["genesis_header"]))
    assert parent.state_root == state.trie.root
    for entry in vector["blocks"]:
        block = decode_block(bytes.fromhex(entry["block"]))
        receipts = state_transition(state, parent, block)
        assert "0x" + state.trie.root.hex() == entry["post_root"]
        assert [receipt_to_json(r) for r in receipts] == entry["receipts"]
        assert [encode_receipt(r).hex() for r in receipts] == entry["receipts_encoded"]
        parent = block.header


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_vectors_regenerate_byte_for_byte(name: str) -> None:
    assert render(build_vector(name)) == (VECTOR_DIR / f"{name}.json").read_text()
