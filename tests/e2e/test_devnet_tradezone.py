"""End to end on a real `exos devnet` process, through public interfaces only: deposits on the
EVM chain with web3.py, balances over tz_getAccount, a trade between two accounts seen over the
WebSocket, a withdrawal whose batch commits on the bridge and is claimed for exactly its amount,
and `exos replay --from-l1` rebuilding every committed root from the EVM chain alone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.config import dev_accounts
from node.sdk import L1Bridge, TradeZoneClient
from node.tradezone.signing import Signer
from node.tradezone.transactions import TIF_IOC, TIF_POST_ONLY

from .devnet_process import DevnetProcess

pytestmark = pytest.mark.slow

USDT = 1
BTC_PERP = 2
UNIT = 10**6


def wait_for(predicate: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def free_usdt(client: TradeZoneClient, who: bytes) -> int:
    account = client.get_account("0x" + who.hex())
    return next((int(b["free"]) for b in account["balances"] if b["assetId"] == USDT), 0)


def test_deposit_trade_withdraw_claim_and_replay_on_a_real_devnet(tmp_path: Path) -> None:
    node = DevnetProcess(tmp_path / "devnet", "--no-demo", "--l1-block-time", "0.3", "--tz-block-ms", "50")
    try:
        alice_key, bob_key = dev_accounts()[5].private_key, dev_accounts()[6].private_key
        alice_l1, bob_l1 = L1Bridge(node.eth_url, alice_key), L1Bridge(node.eth_url, bob_key)
        alice = TradeZoneClient(node.tz_url, Signer(alice_key))
        bob = TradeZoneClient(node.tz_url, Signer(bob_key))
        assert int(str(alice.chain_id()), 0) == 1961

        alice_l1.deposit(USDT, 5_000 * UNIT)
        bob_l1.deposit(USDT, 5_000 * UNIT)
        wait_for(lambda: free_usdt(alice, alice.signer.address) == 5_000 * UNIT, timeout=60, what="alice's deposit")
        wait_for(lambda: free_usdt(bob, bob.signer.address) == 5_000 * UNIT, timeout=60, what="bob's deposit")

        async def trade_and_watch() -> list[Any]:
            ws_url = node.tz_url.replace("http://", "ws://") + "/ws"
            async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
                await ws.send_json({"jsonrpc": "2.0", "id": 1, "method": "tz_subscribe", "params": ["trades", BTC_PERP]})
                subscription = (await ws.receive_json(timeout=30))["result"]  # in place before the trade
                mark = int(next(m for m in alice.get_markets() if m["marketId"] == BTC_PERP)["markPrice"])
                await asyncio.to_thread(alice.place_order, BTC_PERP, 1, mark, 2, tif=TIF_POST_ONLY, wait=True)
                receipt = await asyncio.to_thread(bob.place_order, BTC_PERP, 0, mark, 2, tif=TIF_IOC, wait=True)
                assert receipt["status"] == 1 and len(receipt["fills"]) == 1, receipt
                while True:
                    message = await ws.receive_json(timeout=30)
                    if message.get("method") == "tz_subscription" and message["params"]["subscription"] == subscription:
                        return list(message["params"]["result"]["trades"])

        trades = asyncio.run(trade_and_watch())
        assert len(trades) == 1 and trades[0]["size"] == 2
        assert trades[0]["maker"].lower() == "0x" + alice.signer.address.hex()
        position = bob.get_account()["positions"][0]
        assert position["marketId"] == BTC_PERP and int(position["size"]) == 2

        before = alice_l1.token_balance(USDT)
        receipt = alice.withdraw(USDT, 1_000 * UNIT, wait=True)
        withdrawal_id = receipt["withdrawal_id"]
        block = receipt.get("blockNumber")
        assert withdrawal_id is not None
        wait_for(lambda: alice.sync_status()["safe"]["number"] >= (block or alice.block_number()),
                 timeout=60, what="the withdrawal's batch to commit")
        alice_l1.claim(withdrawal_id, alice.signer.address, USDT, 1_000 * UNIT)
        assert alice_l1.token_balance(USDT) == before + 1_000 * UNIT
        with pytest.raises(Exception, match="already claimed|failed|revert"):
            alice_l1.claim(withdrawal_id, alice.signer.address, USDT, 1_000 * UNIT)

        replay = subprocess.run(
            [sys.executable, "-m", "node.cli", "replay", "--from-l1", "--l1-rpc", node.eth_url],
            capture_output=True, text=True, timeout=120,
        )
        assert replay.returncode == 0, replay.stdout + replay.stderr
        assert "matches the bridge" in replay.stdout
    finally:
        code = node.stop()
    assert code == 0, node.output()
    assert "stopped cleanly" in node.output()
