"""A Python SDK for TradeZone: sign and send every action, read the node, move funds on L1.

``TradeZoneClient(url, signer)`` speaks the tz_* JSON-RPC (docs/rpc.md) over HTTP with the
standard library; ``AsyncTradeZoneClient`` does the same over aiohttp and adds WebSocket
subscriptions. Both sign actions locally with a ``node.tradezone.signing.Signer`` (EIP-712,
docs/tradezone.md) and track the signing key's nonce: the first action asks the node for the
key's pending nonce (tz_getNonce), each admitted action takes the next one, and any failure to
send makes the client ask again before its next action. An agent key signs for the
account it trades for: ``TradeZoneClient(url, Signer(agent_key), account=owner_address)``.

Every helper that sends takes ``wait``: False returns the transaction hash as soon as the
sequencer admitted it; True returns the receipt once the transaction is in a block. A refused
transaction raises ``TransactionRejected`` (``.reason`` is the VM's stable reason code); any
other JSON-RPC error raises ``RpcCallError`` with the code, message and data.

``L1Bridge(eth_url, private_key)`` deposits OKB or ERC-20 assets to the bridge and claims
withdrawals, with web3.py against any standard eth_* endpoint (the ABIs are the node's own
compiled artifacts).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from node.tradezone.eip712 import DEVNET_DOMAIN, Domain, typed_data
from node.tradezone.signing import Signer
from node.tradezone.transactions import (
    ALL_MARKETS,
    BUY,
    NEVER_EXPIRES,
    SELL,
    TIF_GTC,
    TIF_IOC,
    TIF_POST_ONLY,
    Action,
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
    SignedTx,
    Transfer,
    Withdraw,
    encode_transaction,
)

__all__ = [
    "ALL_MARKETS", "BUY", "SELL", "TIF_GTC", "TIF_IOC", "TIF_POST_ONLY",
    "AsyncTradeZoneClient", "L1Bridge", "RpcCallError", "SdkError", "TradeZoneClient", "TransactionRejected",
]

TX_REJECTED = -32010
INCLUSION_TIMEOUT = -32011


class SdkError(Exception):
    """Base of the SDK's errors."""


class RpcCallError(SdkError):
    """The node answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


class TransactionRejected(RpcCallError):
    """The sequencer refused a transaction; ``reason`` is the VM's reason code."""

    @property
    def reason(self) -> str:
        return str(self.data.get("reason", "")) if isinstance(self.data, dict) else ""


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _error(error: dict[str, Any]) -> RpcCallError:
    code = int(error.get("code", 0))
    cls = TransactionRejected if code == TX_REJECTED else RpcCallError
    return cls(code, str(error.get("message", "")), error.get("data"))


def _address(value: bytes | str) -> str:
    return value if isinstance(value, str) else _hex(value)


class _Core:
    """What both clients share: request building, signing and the nonce counter."""

    def __init__(self, signer: Signer | None, account: bytes | None, domain: Domain) -> None:
        self.signer = signer
        self.account = account if account is not None else (signer.address if signer is not None else None)
        self.domain = domain
        self._ids = itertools.count(1)
        self._nonce: int | None = None
        self._lock = threading.Lock()

    def request(self, method: str, params: list[Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}

    @staticmethod
    def result(answer: Any) -> Any:
        if not isinstance(answer, dict):
            raise SdkError(f"not a JSON-RPC answer: {answer!r}")
        if "error" in answer:
            raise _error(answer["error"])
        return answer.get("result")

    def require_signer(self) -> Signer:
        if self.signer is None:
            raise SdkError("this client has no signer: pass one to send actions")
        return self.signer

    def sign(self, action: Action, nonce: int) -> SignedTx:
        return self.require_signer().sign(action, nonce, self.account, self.domain)

    def send_options(self, wait: bool, timeout_ms: int | None) -> list[Any]:
        if not wait:
            return []
        options: dict[str, Any] = {"waitForInclusion": True}
        if timeout_ms is not None:
            options["timeoutMs"] = timeout_ms
        return [options]


class _Methods(ABC):
    """The read and action helpers both clients share: each returns what ``call`` / ``send``
    return (the value for ``TradeZoneClient``, an awaitable for ``AsyncTradeZoneClient``)."""

    _core: _Core

    @abstractmethod
    def call(self, method: str, *params: Any) -> Any:
        """Call one tz_* method (each client has its transport)."""

    @abstractmethod
    def send(self, action: Action, *, wait: bool = False, timeout_ms: int | None = None) -> Any:
        """Sign and send one action (each client has its transport)."""

    @property
    def signer(self) -> Signer | None:
        return self._core.signer

    @property
    def account(self) -> bytes | None:
        """The account this client's actions act for (the signer's own, or the agent's owner)."""
        return self._core.account

    # --- reads -------------------------------------------------------------------------------

    def chain_id(self) -> Any:
        return self.call("tz_chainId")

    def block_number(self) -> Any:
        return self.call("tz_blockNumber")

    def get_block(self, block: int | str = "latest", full: bool = False) -> Any:
        return self.call("tz_getBlockByNumber", block, full)

    def get_block_by_hash(self, block_hash: str, full: bool = False) -> Any:
        return self.call("tz_getBlockByHash", block_hash, full)

    def get_transaction(self, tx_hash: str) -> Any:
        return self.call("tz_getTransactionByHash", tx_hash)

    def get_receipt(self, tx_hash: str) -> Any:
        return self.call("tz_getTransactionReceipt", tx_hash)

    def get_account(self, address: bytes | str | None = None) -> Any:
        return self.call("tz_getAccount", _address(address or self._own()))

    def get_nonce(self, signer: bytes | str | None = None) -> Any:
        return self.call("tz_getNonce", _address(signer or self._core.require_signer().address))

    def get_open_orders(self, address: bytes | str | None = None, market: int | None = None) -> Any:
        params: list[Any] = [_address(address or self._own())]
        if market is not None:
            params.append(market)
        return self.call("tz_getOpenOrders", *params)

    def get_order_book(self, market: int, depth: int = 20) -> Any:
        return self.call("tz_getOrderBook", market, depth)

    def get_markets(self) -> Any:
        return self.call("tz_getMarkets")

    def get_assets(self) -> Any:
        return self.call("tz_getAssets")

    def get_trades(self, market: int, limit: int = 100) -> Any:
        return self.call("tz_getTrades", market, limit)

    def sync_status(self) -> Any:
        return self.call("tz_syncStatus")

    def get_batch(self, index: int) -> Any:
        return self.call("tz_getBatch", index)

    def get_proof(self, asset_ids: Sequence[int], address: bytes | str | None = None,
                  block: int | str = "latest") -> Any:
        return self.call("tz_getProof", _address(address or self._own()), list(asset_ids), block)

    def _own(self) -> bytes:
        if self.account is None:
            raise SdkError("this client has no account: pass an address")
        return self.account

    # --- actions -------------------------------------------------------------------------------

    def place_order(self, market: int, side: int, price: int, size: int, *, tif: int = TIF_GTC,
                    reduce_only: bool = False, client_order_id: int = 0, wait: bool = False) -> Any:
        """A limit order (``tif=TIF_IOC`` with a protective price for a market order)."""
        return self.send(PlaceOrder(market, side, price, size, tif, reduce_only, client_order_id), wait=wait)

    def place_orders(self, orders: Sequence[PlaceOrder], *, wait: bool = False) -> Any:
        return self.send(PlaceOrders(tuple(orders)), wait=wait)

    def cancel_order(self, market: int, order_id: int, *, wait: bool = False) -> Any:
        return self.send(CancelOrder(market, order_id), wait=wait)

    def cancel_by_client_id(self, market: int, client_order_id: int, *, wait: bool = False) -> Any:
        return self.send(CancelByClientId(market, client_order_id), wait=wait)

    def cancel_all(self, market: int = ALL_MARKETS, *, wait: bool = False) -> Any:
        return self.send(CancelAll(market), wait=wait)

    def modify_order(self, market: int, order_id: int, new_price: int, new_size: int, *, wait: bool = False) -> Any:
        return self.send(ModifyOrder(market, order_id, new_price, new_size), wait=wait)

    def approve_agent(self, agent: bytes, expires_at_ms: int = NEVER_EXPIRES, *, wait: bool = False) -> Any:
        return self.send(ApproveAgent(agent, expires_at_ms), wait=wait)

    def revoke_agent(self, agent: bytes, *, wait: bool = False) -> Any:
        return self.send(RevokeAgent(agent), wait=wait)

    def transfer(self, to: bytes, asset_id: int, amount: int, *, wait: bool = False) -> Any:
        return self.send(Transfer(to, asset_id, amount), wait=wait)

    def withdraw(self, asset_id: int, amount: int, recipient: bytes | None = None, *, wait: bool = False) -> Any:
        """Withdraw to ``recipient`` on L1 (default: the account itself); claim it with L1Bridge."""
        return self.send(Withdraw(asset_id, amount, recipient or self._own()), wait=wait)

    def set_margin_mode(self, market: int, isolated: bool, *, wait: bool = False) -> Any:
        """Trade a perpetual in isolated margin (or back in cross); no position or order open there."""
        return self.send(SetMarginMode(market, isolated), wait=wait)

    def adjust_isolated_margin(self, market: int, amount: int, add: bool = True, *, wait: bool = False) -> Any:
        """Move collateral into (``add``) or out of the isolated margin of a perpetual position."""
        return self.send(AdjustIsolatedMargin(market, amount, add), wait=wait)

    def oracle_update(self, market: int, price: int, timestamp_ms: int, *, wait: bool = False) -> Any:
        """An oracle price; the signer must be the market's oracle key."""
        return self.send(OracleUpdate(market, price, timestamp_ms), wait=wait)

    def resolve_market(self, market: int, outcome: int, *, wait: bool = False) -> Any:
        """Resolve an outcome market; the signer must be the market's resolver key."""
        return self.send(ResolveMarket(market, outcome), wait=wait)


class TradeZoneClient(_Methods):
    """A synchronous TradeZone client over HTTP (standard library only). Thread-safe."""

    def __init__(
        self,
        url: str,
        signer: Signer | None = None,
        *,
        account: bytes | None = None,
        domain: Domain = DEVNET_DOMAIN,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._core = _Core(signer, account, domain)

    # --- transport ---------------------------------------------------------------------------

    def _post(self, payload: Any) -> Any:
        body = json.dumps(payload).encode()
        request = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            if not raw:
                raise SdkError(f"HTTP {err.code} from {self.url}") from err
        except urllib.error.URLError as err:
            raise SdkError(f"cannot reach {self.url}: {err.reason}") from err
        return json.loads(raw) if raw else None

    def call(self, method: str, *params: Any) -> Any:
        """Call one method; returns its result or raises RpcCallError / TransactionRejected."""
        return self._core.result(self._post(self._core.request(method, list(params))))

    def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Call several methods in one JSON-RPC batch; each item is a result or an RpcCallError
        (returned, not raised), in the order of ``calls``."""
        requests = [self._core.request(method, list(params)) for method, params in calls]
        answers = self._post(requests)
        if not isinstance(answers, list):
            raise _error(answers["error"]) if isinstance(answers, dict) and "error" in answers else \
                SdkError(f"not a batch answer: {answers!r}")
        by_id = {answer.get("id"): answer for answer in answers}
        out: list[Any] = []
        for request in requests:
            answer = by_id.get(request["id"])
            try:
                out.append(self._core.result(answer))
            except RpcCallError as err:
                out.append(err)
        return out

    # --- sending -----------------------------------------------------------------------------

    def _next_nonce(self) -> int:
        core = self._core
        if core._nonce is None:
            core._nonce = int(self.get_nonce()["pendingNonce"])
        return core._nonce

    def send(self, action: Action, *, wait: bool = False, timeout_ms: int | None = None) -> Any:
        """Sign ``action`` with the next nonce and send it as raw canonical bytes. Returns the
        hash (0x-hex), or with ``wait`` the receipt. Raises TransactionRejected if refused."""
        core = self._core
        with core._lock:
            tx = core.sign(action, self._next_nonce())
            try:
                result = self.call("tz_sendTransaction", _hex(encode_transaction(tx)),
                                   *core.send_options(wait, timeout_ms))
            except SdkError as err:
                # admitted but not included in time: the nonce is used; otherwise ask again
                core._nonce = tx.nonce + 1 if isinstance(err, RpcCallError) and err.code == INCLUSION_TIMEOUT \
                    else None
                raise
            core._nonce = tx.nonce + 1
            return result

    def send_typed(self, action: Action, *, wait: bool = False, timeout_ms: int | None = None) -> Any:
        """Like ``send``, but as a wallet would: the EIP-712 typed-data document and its signature."""
        core = self._core
        with core._lock:
            tx = core.sign(action, self._next_nonce())
            document = typed_data(tx.action, tx.account, tx.nonce, core.domain)
            try:
                result = self.call("tz_sendTransaction", {"typedData": document, "signature": _hex(tx.signature)},
                                   *core.send_options(wait, timeout_ms))
            except SdkError as err:
                core._nonce = tx.nonce + 1 if isinstance(err, RpcCallError) and err.code == INCLUSION_TIMEOUT \
                    else None
                raise
            core._nonce = tx.nonce + 1
            return result

    def send_many(self, actions: Sequence[Action]) -> list[str | RpcCallError]:
        """Sign consecutive nonces and send every action in one tz_sendTransactions request; per
        action, its hash or the error that refused it. After any refusal the nonce is asked again."""
        core = self._core
        with core._lock:
            first = self._next_nonce()
            txs = [core.sign(action, first + i) for i, action in enumerate(actions)]
            results = self.call("tz_sendTransactions", [_hex(encode_transaction(tx)) for tx in txs])
            out: list[str | RpcCallError] = [r if isinstance(r, str) else _error(r) for r in results]
            if all(isinstance(r, str) for r in out):
                core._nonce = first + len(txs)
            else:
                core._nonce = None
            return out

    def wait_for_receipt(self, tx_hash: str, timeout: float = 10.0, poll: float = 0.05) -> dict[str, Any]:
        """Poll until the transaction has a receipt; SdkError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            receipt = self.get_receipt(tx_hash)
            if receipt is not None:
                return receipt
            if time.monotonic() > deadline:
                raise SdkError(f"no receipt for {tx_hash} within {timeout} s")
            time.sleep(poll)


class AsyncTradeZoneClient(_Methods):
    """The asyncio client: tz_* calls over aiohttp and WebSocket subscriptions.

    Use as ``async with AsyncTradeZoneClient(url, signer) as client: ...``. ``subscribe`` yields
    the results of one subscription's notifications."""

    def __init__(self, url: str, signer: Signer | None = None, *, account: bytes | None = None,
                 domain: Domain = DEVNET_DOMAIN, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        self._core = _Core(signer, account, domain)
        self._session: Any = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncTradeZoneClient:
        import aiohttp

        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, *params: Any) -> Any:
        if self._session is None:
            raise SdkError("use the client inside `async with`")
        async with self._session.post(self.url, json=self._core.request(method, list(params))) as response:
            return self._core.result(await response.json(content_type=None))

    async def send(self, action: Action, *, wait: bool = False, timeout_ms: int | None = None) -> Any:
        """As ``TradeZoneClient.send``."""
        core = self._core
        async with self._lock:
            if core._nonce is None:
                signer = core.require_signer()
                core._nonce = int((await self.call("tz_getNonce", _hex(signer.address)))["pendingNonce"])
            tx = core.sign(action, core._nonce)
            try:
                result = await self.call("tz_sendTransaction", _hex(encode_transaction(tx)),
                                         *core.send_options(wait, timeout_ms))
            except SdkError as err:
                core._nonce = tx.nonce + 1 if isinstance(err, RpcCallError) and err.code == INCLUSION_TIMEOUT \
                    else None
                raise
            core._nonce = tx.nonce + 1
            return result

    async def subscribe(self, *topic: Any) -> AsyncGenerator[Any, None]:
        """Subscribe (``"newHeads"``, ``"trades", market``, ``"book", market, depth``,
        ``"account", address``) on the node's /ws and yield each notification's result."""
        import aiohttp

        if self._session is None:
            raise SdkError("use the client inside `async with`")
        ws_url = self.url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://") + "/ws"
        async with self._session.ws_connect(ws_url) as ws:
            await ws.send_json(self._core.request("tz_subscribe", list(topic)))
            sub_id = None
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(message.data)
                if sub_id is None and "id" in data:
                    sub_id = self._core.result(data)
                elif data.get("method") == "tz_subscription" and data["params"]["subscription"] == sub_id:
                    yield data["params"]["result"]
            if ws.close_code not in (None, 1000):
                raise SdkError(f"subscription closed by the node: {ws.close_code} {ws.extra or ''}".strip())


class L1Bridge:
    """Deposits to and claims from the bridge on the EVM chain, with web3.py over eth_* JSON-RPC."""

    def __init__(self, eth_url: str, private_key: bytes, bridge: bytes | None = None, *,
                 timeout: float = 60.0) -> None:
        from eth_account import Account
        from web3 import HTTPProvider, Web3

        from node.config import BRIDGE_ADDRESS
        from node.evm.compile import load_artifact

        self.w3 = Web3(HTTPProvider(eth_url))
        self.account = Account.from_key(private_key)
        self.timeout = timeout
        self.bridge = self.w3.eth.contract(address=Web3.to_checksum_address(bridge or BRIDGE_ADDRESS),
                                           abi=list(load_artifact("Bridge").abi))
        self._erc20_abi = list(load_artifact("ERC20").abi)

    @property
    def address(self) -> bytes:
        return bytes.fromhex(self.account.address[2:])

    def _transact(self, call: Any, value: int = 0) -> Any:
        tx = call.build_transaction({
            "from": self.account.address,
            "nonce": self.w3.eth.get_transaction_count(self.account.address, "pending"),
            "value": value,
        })
        signed = self.account.sign_transaction(tx)
        tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=self.timeout, poll_latency=0.05)
        if receipt["status"] != 1:
            raise SdkError(f"L1 transaction 0x{bytes(tx_hash).hex()} failed")
        return receipt

    def token_of(self, asset_id: int) -> str:
        """The L1 token address of an asset (the zero address is the native coin, OKB)."""
        return str(self.bridge.functions.tokenOf(asset_id).call())

    def token_balance(self, asset_id: int, owner: bytes | None = None) -> int:
        """The L1 balance of ``owner`` (default: this key) in an asset."""
        who = self.w3.to_checksum_address(owner or self.address)
        token = self.token_of(asset_id)
        if int(token, 16) == 0:
            return int(self.w3.eth.get_balance(who))
        return int(self.w3.eth.contract(address=self.w3.to_checksum_address(token), abi=self._erc20_abi).functions.balanceOf(who).call())

    def deposit(self, asset_id: int, amount: int, recipient: bytes | None = None) -> Any:
        """Deposit ``amount`` of an asset for ``recipient``'s TradeZone account (default: this
        key's): native OKB with value, an ERC-20 after approving the bridge. Returns the deposit's
        L1 receipt; the sequencer credits it once its inbox reads the queue."""
        to = self.w3.to_checksum_address(recipient or self.address)
        token = self.token_of(asset_id)
        if int(token, 16) == 0:
            return self._transact(self.bridge.functions.deposit(token, to, amount), value=amount)
        erc20 = self.w3.eth.contract(address=self.w3.to_checksum_address(token), abi=self._erc20_abi)
        self._transact(erc20.functions.approve(self.bridge.address, amount))
        return self._transact(self.bridge.functions.deposit(token, to, amount))

    def claim(self, withdrawal_id: int, recipient: bytes, asset_id: int, amount: int) -> Any:
        """Claim a withdrawal made claimable by a committed batch (anyone may send it; the bridge
        pays ``recipient`` once). Returns the L1 receipt."""
        return self._transact(self.bridge.functions.claim(
            withdrawal_id, self.w3.to_checksum_address(recipient), asset_id, amount))

    def last_committed_root(self) -> bytes:
        return bytes(self.bridge.functions.lastCommittedRoot().call())
