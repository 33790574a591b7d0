"""Write the shared TradeZone state-transition vectors: `python -m tests.vectors.generate`.

Each vector file ``tests/vectors/tradezone/<name>.json`` holds:

* ``pre_state``: a genesis spec (the format of ``genesis/tradezone-devnet.json``) and its
  ``pre_root``, the state root of the state it describes;
* ``genesis_header``: the header every first block builds on (hex of its canonical encoding);
* ``blocks``: each block's canonical encoding (hex), its expected ``post_root``, and its
  receipts, both as JSON and as the hex of their canonical encodings.

Signatures are RFC 6979 deterministic, so running this again writes the same files; the test
``tests/tradezone/test_state_vectors.py`` replays them and also checks that they regenerate.

It also writes ``tests/vectors/merkle/roots_and_proofs.json``: item lists with the root and every
inclusion proof of the transactions/receipts Merkle tree (``tests/tradezone/test_merkle.py``).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.tradezone.blocks import encode_block, encode_header
from node.tradezone.genesis import genesis_header, load_genesis_spec
from node.tradezone.merkle import merkle_proof, merkle_root
from node.tradezone.receipts import encode_receipt, receipt_to_json
from node.tradezone.transactions import (
    ALL_MARKETS,
    BUY,
    OUTCOME_YES,
    SELL,
    TIF_IOC,
    TIF_POST_ONLY,
    AdjustIsolatedMargin,
    ApproveAgent,
    CancelAll,
    CancelByClientId,
    CancelOrder,
    ModifyOrder,
    OracleUpdate,
    PlaceOrder,
    PlaceOrders,
    ResolveMarket,
    RevokeAgent,
    SetMarginMode,
    Transfer,
    Withdraw,
)
from node.tradezone.venues import NO_SIDE_FLAG
from tests.vectors.harness import BTC_PERP, OUTCOME, SPOT, USDT, WBTC, WCP, Harness

VECTOR_DIR = Path(__file__).resolve().parent / "tradezone"
MARK = 1_000_000


def vector_spec(h_keys: list[bytes]) -> dict[str, Any]:
    """The devnet genesis plus WCP points for the test keys."""
    spec = copy.deepcopy(load_genesis_spec())
    for address in h_keys:
        spec["balances"].append({"account": "0x" + address.hex(), "asset_id": WCP, "amount": 1_000_000_000})
    return spec


def accounts_and_transfers(h: Harness) -> None:
    h.block([h.deposit(h.addr(1), USDT, 5_000_000), h.deposit(h.addr(2), WBTC, 200_000)])
    h.block([
        h.sign(1, Transfer(h.addr(2), USDT, 1_000_000)),
        h.sign(1, Withdraw(USDT, 500_000, h.addr(3))),
        h.sign(2, Withdraw(WBTC, 300_000, h.addr(2))),  # more than free: rejected
        h.sign(2, Transfer(h.addr(2), USDT, 1)),  # to itself: rejected
        h.signer(1).sign(Transfer(h.addr(2), USDT, 1), 0),  # replayed nonce: rejected
    ])
    h.block([h.sign(1, ApproveAgent(h.addr(4), 0))])
    h.block([h.sign(4, Withdraw(USDT, 1, h.addr(4)), h.addr(1)), h.sign(4, PlaceOrder(SPOT, BUY, 10, 1), h.addr(1))])


def spot_trading(h: Harness) -> None:
    h.block([h.deposit(h.addr(1), USDT, 10**9), h.deposit(h.addr(2), WBTC, 10**8), h.deposit(h.addr(3), WBTC, 10**8),
             h.deposit(h.addr(3), USDT, 10**9)])
    h.block([
        h.sign(2, PlaceOrder(SPOT, SELL, MARK, 3, TIF_POST_ONLY, client_order_id=11)),
        h.sign(3, PlaceOrder(SPOT, SELL, MARK + 10, 4)),
        h.sign(1, PlaceOrder(SPOT, SELL, MARK + 20, 1, TIF_POST_ONLY)),  # no WBTC: rejected
    ])
    h.block([
        h.sign(1, PlaceOrder(SPOT, BUY, MARK + 10, 5, TIF_IOC)),
        h.sign(2, PlaceOrder(SPOT, BUY, MARK - 5, 1, TIF_POST_ONLY)),
        h.sign(3, ModifyOrder(SPOT, 2, MARK + 10, 1)),
    ])
    h.block([h.sign(3, PlaceOrder(SPOT, BUY, MARK + 10, 3)), h.sign(2, CancelAll(ALL_MARKETS))])


def perp_trading(h: Harness) -> None:
    h.block([h.deposit(h.addr(i), USDT, 100 * 10**6) for i in (1, 2, 3)])
    h.block([h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 150)), h.sign(2, PlaceOrder(BTC_PERP, BUY, MARK, 150, TIF_IOC))])
    h.block([h.sign(8, OracleUpdate(BTC_PERP, MARK * 103 // 100, h.head.timestamp_ms))])
    h.block([
        h.sign(3, PlaceOrder(BTC_PERP, BUY, MARK * 103 // 100, 100)),
        h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK, 1_000)),  # beyond initial margin: rejected
        h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK * 103 // 100, 100, TIF_IOC, True)),
        h.sign(1, Withdraw(USDT, 95 * 10**6, h.addr(1))),  # would break margin: rejected
    ])


def outcome_trading(h: Harness) -> None:
    no = OUTCOME | NO_SIDE_FLAG
    h.block([h.sign(1, PlaceOrder(OUTCOME, BUY, 62, 10)), h.sign(2, PlaceOrder(no, BUY, 40, 4))])
    h.block([h.sign(3, PlaceOrder(no, BUY, 38, 10))])
    h.block([h.sign(1, PlaceOrder(OUTCOME, SELL, 70, 4)), h.sign(3, PlaceOrder(no, SELL, 30, 2, TIF_IOC))])
    h.block([h.sign(1, ResolveMarket(OUTCOME, OUTCOME_YES)), h.sign(8, ResolveMarket(OUTCOME, OUTCOME_YES))])
    h.block([h.sign(2, PlaceOrder(OUTCOME, BUY, 50, 1))])


def order_management(h: Harness) -> None:
    h.block([h.deposit(h.addr(1), USDT, 10**9), h.deposit(h.addr(1), WBTC, 10**8),
              h.deposit(h.addr(2), USDT, 10**9), h.deposit(h.addr(2), WBTC, 10**8), h.stake(h.addr(3), 5 * 10**18)])
    # A batch: three asks rest, one is off the tick grid's range and is rejected on its own.
    batch = h.block([h.sign(1, PlaceOrders((
        PlaceOrder(SPOT, SELL, MARK + 10, 2, TIF_POST_ONLY, client_order_id=7),
        PlaceOrder(SPOT, SELL, MARK + 20, 2, TIF_POST_ONLY, client_order_id=8),
        PlaceOrder(SPOT, SELL, 0, 2, TIF_POST_ONLY),
        PlaceOrder(SPOT, SELL, MARK + 30, 2),
    )))])
    first = batch[0].orders[0].order_id
    h.block([
        h.sign(1, CancelOrder(SPOT, first)),
        h.sign(1, CancelByClientId(SPOT, 8)),
        h.sign(1, CancelOrder(SPOT, first)),  # already gone: rejected
        h.sign(2, PlaceOrder(SPOT, BUY, MARK + 30, 1, TIF_POST_ONLY)),  # would cross: rejected
    ])
    # Self-trade prevention: account 1 bids into its own ask, which expires; then a market
    # order (IOC with a protective limit) of account 2 finds nothing under its limit.
    h.block([h.sign(1, PlaceOrder(SPOT, BUY, MARK + 30, 1)), h.sign(2, PlaceOrder(SPOT, BUY, MARK + 40, 3, TIF_IOC))])
    h.block([h.sign(2, PlaceOrder(SPOT, SELL, MARK - 5, 4)), h.sign(1, PlaceOrder(SPOT, BUY, MARK, 6, TIF_IOC))])
    # An agent places for account 2, which then revokes it: both actions are non-taking, so they
    # apply in arrival order. A taking order of the agent next block is refused.
    h.block([h.sign(2, ApproveAgent(h.addr(4), 0))])
    h.block([h.sign(4, PlaceOrder(SPOT, BUY, MARK - 50, 2, TIF_POST_ONLY), h.addr(2)), h.sign(2, RevokeAgent(h.addr(4)))])
    h.block([h.sign(4, PlaceOrder(SPOT, BUY, MARK - 60, 1), h.addr(2))])
    # A forced withdrawal of USDT cancels account 2's bid and withdraws its whole free USDT; the
    # stake drops to zero; a forced withdrawal with nothing to pay is consumed, rejected.
    h.block([h.forced_withdrawal(h.addr(2), USDT), h.stake(h.addr(3), 0), h.forced_withdrawal(h.addr(3), USDT)])


def isolated_margin(h: Harness) -> None:
    h.block([h.deposit(h.addr(i), USDT, 1_000 * 10**6) for i in (1, 2, 3)])
    h.block([
        h.sign(1, SetMarginMode(BTC_PERP, True)),
        h.sign(1, AdjustIsolatedMargin(BTC_PERP, 40 * 10**6, True)),
        h.sign(2, SetMarginMode(SPOT, True)),  # not a perpetual: rejected
        h.sign(3, AdjustIsolatedMargin(BTC_PERP, 10**6, True)),  # cross account: rejected
    ])
    # Isolated long of 50 lots (500 USDT of notional, 25 USDT of initial margin) against a
    # cross short; then an order the isolated margin cannot back: rejected.
    h.block([h.sign(2, PlaceOrder(BTC_PERP, SELL, MARK, 200)), h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 50, TIF_IOC))])
    h.block([h.sign(1, PlaceOrder(BTC_PERP, BUY, MARK, 100, TIF_IOC))])
    # The mark falls 3%: variation margin moves the loss out of the isolated margin.
    h.block([h.sign(8, OracleUpdate(BTC_PERP, MARK * 97 // 100, h.head.timestamp_ms))])
    h.block([
        h.sign(1, AdjustIsolatedMargin(BTC_PERP, 30 * 10**6, False)),  # more than it holds: rejected
        h.sign(1, AdjustIsolatedMargin(BTC_PERP, 10 * 10**6, True)),
        h.sign(1, AdjustIsolatedMargin(BTC_PERP, 5 * 10**6, False)),
        h.sign(1, AdjustIsolatedMargin(BTC_PERP, 6 * 10**6, False)),  # below the requirement: rejected
        h.sign(1, SetMarginMode(BTC_PERP, False)),  # a position is open: rejected
    ])
    # Close at the mark against account 3's bid, then switch back to cross.
    h.block([h.sign(3, PlaceOrder(BTC_PERP, BUY, MARK * 97 // 100, 50, TIF_POST_ONLY)),
             h.sign(1, PlaceOrder(BTC_PERP, SELL, MARK * 97 // 100, 50, TIF_IOC, True))])
    h.block([h.sign(1, SetMarginMode(BTC_PERP, False)), h.sign(2, CancelAll(ALL_MARKETS))])


SCENARIOS: dict[str, tuple[str, Callable[[Harness], None]]] = {
    "accounts_and_transfers": ("deposits, transfers, withdrawals, an agent, rejections", accounts_and_transfers),
    "spot_trading": ("spot placements, fills with fees and rebates, modify, cancel-all", spot_trading),
    "perp_trading": ("perp open, oracle move, reduce-only close, margin rejections", perp_trading),
    "outcome_trading": ("outcome mint, merge, resolution, trading after resolution", outcome_trading),
    "order_management": ("order batches, cancels by id and client id, self-trade prevention, market orders, "
                         "an agent revoked, stake changes, forced withdrawals", order_management),
    "isolated_margin": ("isolated margin: mode, margin in and out, fills and a stopped taker, variation "
                        "margin, closing, back to cross", isolated_margin),
}


def build_vector(name: str) -> dict[str, Any]:
    """Run one scenario on a fresh chain and describe it as a vector."""
    description, scenario = SCENARIOS[name]
    probe = Harness()
    spec = vector_spec([probe.addr(i) for i in (1, 2, 3, 4)])
    h = Harness(spec)
    pre_root = h.head.state_root
    scenario(h)
    blocks = []
    receipts_per_block = _replay_receipts(h, spec)
    for block, receipts in zip(h.blocks, receipts_per_block, strict=True):
        blocks.append({
            "block": encode_block(block).hex(),
            "post_root": "0x" + block.header.state_root.hex(),
            "receipts": [receipt_to_json(r) for r in receipts],
            "receipts_encoded": [encode_receipt(r).hex() for r in receipts],
        })
    return {
        "name": name,
        "description": description,
        "pre_state": {"genesis": spec, "pre_root": "0x" + pre_root.hex()},
        "genesis_header": encode_header(_genesis_header(spec)).hex(),
        "blocks": blocks,
    }


def _genesis_header(spec: dict[str, Any]) -> Any:
    from node.tradezone.genesis import build_genesis_state

    return genesis_header(build_genesis_state(spec), spec)


def _replay_receipts(h: Harness, spec: dict[str, Any]) -> list[list[Any]]:
    from node.tradezone.genesis import build_genesis_state
    from node.tradezone.state_transition import state_transition

    state = build_genesis_state(spec)
    parent = genesis_header(state, spec)
    out = []
    for block in h.blocks:
        out.append(state_transition(state, parent, block))
        parent = block.header
    return out


def render(vector: dict[str, Any]) -> str:
    """The file text of a vector (stable key order and layout)."""
    return json.dumps(vector, indent=1, sort_keys=True) + "\n"


MERKLE_VECTOR = Path(__file__).resolve().parent / "merkle" / "roots_and_proofs.json"
MERKLE_COUNTS = (0, 1, 2, 3, 4, 5, 7, 8, 9, 13)


def build_merkle_vector() -> dict[str, Any]:
    """Roots and every inclusion proof of the transactions/receipts Merkle tree for small item
    lists (items are deterministic byte strings of varied lengths, the empty string included)."""
    cases = []
    for count in MERKLE_COUNTS:
        items = [bytes((index * 37 + k) % 256 for k in range(index * 7 % 40)) for index in range(count)]
        cases.append({
            "items": ["0x" + item.hex() for item in items],
            "root": "0x" + merkle_root(items).hex(),
            "proofs": [["0x" + sibling.hex() for sibling in merkle_proof(items, index)] for index in range(count)],
        })
    return {
        "description": "transactions/receipts root: leaf = keccak256(0x00 ++ keccak256(item)), node = "
                       "keccak256(0x01 ++ left ++ right), an odd last node carried up unchanged, "
                       "empty root keccak256(b''); proofs list siblings from the leaf level up",
        "cases": cases,
    }


def main() -> None:
    VECTOR_DIR.mkdir(exist_ok=True)
    for name in SCENARIOS:
        (VECTOR_DIR / f"{name}.json").write_text(render(build_vector(name)))
        print(f"wrote {name}.json")
    MERKLE_VECTOR.parent.mkdir(exist_ok=True)
    MERKLE_VECTOR.write_text(render(build_merkle_vector()))
    print(f"wrote {MERKLE_VECTOR.name}")


if __name__ == "__main__":
    main()
