"""The escape-hatch client: status, forced withdrawal requests, freeze, escape withdrawals and
refunds, over any ``L1Client`` (the embedded chain or any eth_* JSON-RPC node).

Every action first checks, from the bridge's views, each condition the bridge would check, and
raises the named refusal of ``node.escape.errors`` before anything is signed; if the chain
refuses anyway (its state moved in between), the revert reason is mapped to the same refusal.
Flow 5 of the architecture: a forced withdrawal joins the L1 queue with a deadline; once the
queue head is past its deadline unconsumed, anyone freezes the bridge; then every account
withdraws the ``balance`` of its leaf under the last committed root, once per asset, and
deposits never consumed are refunded to their depositors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak

from node.config import address_of
from node.escape.errors import (
    AlreadyFrozen,
    AlreadyRefunded,
    AlreadyWithdrawn,
    AssetNotListed,
    BridgeFrozen,
    BridgeShort,
    ChainRefused,
    DeadlineNotPassed,
    DepositConsumed,
    EscapeError,
    InsufficientFunds,
    NoPendingMessage,
    NoSuchMessage,
    NotADeposit,
    NotFrozen,
    error_for_revert,
)
from node.escape.proof import CheckedLeaf, EscapeProof, check_escape_proof
from node.evm import l1 as l1_errors
from node.evm.bridge import BatchInfo, BridgeClient, selector
from node.evm.l1 import BlockId, L1Client, L1Receipt, send_transaction
from node.sequencer.inbox import MESSAGE_QUEUED_TOPIC
from node.tradezone.transactions import L1_DEPOSIT

_ESCAPE_WITHDRAWN_TOPIC = keccak(text="EscapeWithdrawn(address,uint32,uint256)")
KIND_NAMES = {1: "DEPOSIT", 2: "STAKE", 3: "FORCED_WITHDRAWAL"}


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    """An L1 queue message as its ``MessageQueued`` event tells it."""

    index: int
    kind: int
    payload: bytes
    l1_block: int
    deadline: int

    @property
    def kind_name(self) -> str:
        return KIND_NAMES.get(self.kind, f"kind {self.kind}")


@dataclass(frozen=True, slots=True)
class QueueHead:
    """The oldest L1 message no committed batch consumed."""

    index: int
    l1_block: int
    deadline: int


@dataclass(frozen=True, slots=True)
class EscapeStatus:
    """Everything a user needs to know before acting, read at one L1 block."""

    l1_block: int
    frozen: bool
    can_freeze: bool
    message_count: int
    committed_cursor: int
    head: QueueHead | None
    last_committed_root: bytes
    batch_count: int
    last_batch: BatchInfo | None
    forced_inclusion_delay: int
    forced_withdrawal_fee: int

    def lines(self) -> list[str]:
        """The status as lines for a terminal."""
        out = [
            f"L1 block        {self.l1_block}",
            f"frozen          {'yes' if self.frozen else 'no'}",
            f"can freeze      {'yes' if self.can_freeze else 'no'}",
            f"L1 queue        {self.message_count} messages, {self.committed_cursor} consumed by committed batches",
        ]
        if self.head is None:
            out.append("queue head      none (every message consumed)")
        else:
            past = self.l1_block + 1 > self.head.deadline
            out.append(
                f"queue head      index {self.head.index}, queued in L1 block {self.head.l1_block}, "
                f"deadline {self.head.deadline} ({'passed' if past else f'{self.head.deadline - self.l1_block} blocks left'})"
            )
        out.append(f"committed root  0x{self.last_committed_root.hex()}")
        if self.last_batch is None:
            out.append("last batch      none (genesis root)")
        else:
            b = self.last_batch
            out.append(f"last batch      {b.index}: TradeZone block {b.tz_block}, L1 block {b.l1_block}")
        out.append(f"forced withdrawal: fee {self.forced_withdrawal_fee} wei, deadline after {self.forced_inclusion_delay} L1 blocks")
        return out


@dataclass(frozen=True, slots=True)
class ForcedRequest:
    """A forced withdrawal request the bridge queued."""

    index: int
    l1_block: int
    deadline: int
    transaction_hash: bytes
    gas_used: int


@dataclass(frozen=True, slots=True)
class Escaped:
    """An escape withdrawal the bridge paid."""

    account: bytes
    asset_id: int
    amount: int
    transaction_hash: bytes
    gas_used: int


@dataclass(frozen=True, slots=True)
class Refunded:
    """A deposit refund the bridge paid."""

    index: int
    depositor: bytes
    asset_id: int
    amount: int
    transaction_hash: bytes
    gas_used: int


class EscapeClient:
    """The bridge's escape hatch at ``bridge_address`` seen through ``l1``."""

    def __init__(self, l1: L1Client, bridge_address: bytes, *, timeout: float = 60.0) -> None:
        self.l1 = l1
        self.address = bridge_address
        self.bridge = BridgeClient(l1, bridge_address)
        self.timeout = timeout

    # --- views ------------------------------------------------------------------------------

    async def _view(self, signature: str, types: Sequence[str], args: Sequence[object], out: str,
                    block: BlockId = "latest") -> object:
        data = selector(signature) + (abi_encode(list(types), list(args)) if types else b"")
        return abi_decode([out], await self.l1.call(self.address, data, block))[0]

    async def _int(self, signature: str, types: Sequence[str] = (), args: Sequence[object] = (),
                   block: BlockId = "latest") -> int:
        return int(await self._view(signature, types, args, "uint256", block))  # type: ignore[call-overload]

    async def _bool(self, signature: str, types: Sequence[str] = (), args: Sequence[object] = (),
                    block: BlockId = "latest") -> bool:
        return bool(await self._view(signature, types, args, "bool", block))

    async def frozen(self, block: BlockId = "latest") -> bool:
        return await self._bool("frozen()", block=block)

    async def can_freeze(self, block: BlockId = "latest") -> bool:
        """True when freeze() would succeed in the block after ``block``."""
        return await self._bool("canFreeze()", block=block)

    async def committed_cursor(self, block: BlockId = "latest") -> int:
        return await self._int("committedCursor()", block=block)

    async def message_deadline(self, index: int, block: BlockId = "latest") -> int:
        return await self._int("messageDeadline(uint256)", ["uint256"], [index], block)

    async def forced_withdrawal_fee(self, block: BlockId = "latest") -> int:
        return await self._int("forcedWithdrawalFee()", block=block)

    async def forced_inclusion_delay(self, block: BlockId = "latest") -> int:
        return await self._int("forcedInclusionDelay()", block=block)

    async def is_listed(self, asset_id: int) -> bool:
        return await self._bool("isListed(uint32)", ["uint32"], [asset_id])

    async def escaped(self, account: bytes, asset_id: int) -> bool:
        """True once ``account`` escaped ``asset_id`` (the bridge pays each pair once)."""
        return await self._bool("escaped(address,uint32)", ["address", "uint32"], [account, asset_id])

    async def holdings(self, asset_id: int) -> int:
        """How much of ``asset_id`` the bridge holds on L1 (native balance or ERC-20 balance)."""
        token = await self._view("tokenOf(uint32)", ["uint32"], [asset_id], "address")
        token_bytes = bytes.fromhex(str(token)[2:])
        if token_bytes == bytes(20):
            return await self.l1.get_balance(self.address)
        raw = await self.l1.call(token_bytes, selector("balanceOf(address)") + abi_encode(["address"], [self.address]))
        return int(abi_decode(["uint256"], raw)[0])

    async def refunded(self, index: int) -> bool:
        return await self._bool("refunded(uint256)", ["uint256"], [index])

    async def status(self) -> EscapeStatus:
        """The queue head (index, queued block, deadline), the current L1 block, frozen or not,
        whether a freeze is possible in the next block, and the last committed root and batch,
        every view read at the same L1 block."""
        b = await self.l1.block_number()
        count = await self.bridge.message_count(b)
        cursor = await self.committed_cursor(b)
        delay = await self.forced_inclusion_delay(b)
        head = None
        if cursor < count:
            deadline = await self.message_deadline(cursor, b)
            head = QueueHead(cursor, deadline - delay, deadline)
        batch_count = await self.bridge.batch_count(b)
        last_batch = await self.bridge.batch(batch_count - 1, b) if batch_count else None
        return EscapeStatus(
            l1_block=b,
            frozen=await self.frozen(b),
            can_freeze=await self.can_freeze(b),
            message_count=count,
            committed_cursor=cursor,
            head=head,
            last_committed_root=await self.bridge.last_committed_root(b),
            batch_count=batch_count,
            last_batch=last_batch,
            forced_inclusion_delay=delay,
            forced_withdrawal_fee=await self.forced_withdrawal_fee(b),
        )

    async def queued_message(self, index: int) -> QueuedMessage:
        """The message at ``index`` from its ``MessageQueued`` event (found in the L1 block its
        deadline names, since deadline = queued block + the fixed delay). Raises NoSuchMessage."""
        if index < 0 or index >= await self.bridge.message_count():
            raise NoSuchMessage(f"no such L1 message: the queue holds {await self.bridge.message_count()} messages")
        block = await self.message_deadline(index) - await self.forced_inclusion_delay()
        logs = await self.l1.get_logs(block, block, self.address, (MESSAGE_QUEUED_TOPIC, index.to_bytes(32, "big")))
        if not logs:
            raise NoSuchMessage(f"L1 message {index}: no MessageQueued event in L1 block {block}")
        kind, payload, l1_block, deadline, _rolling = abi_decode(
            ["uint8", "bytes", "uint256", "uint256", "bytes32"], logs[0].data)
        return QueuedMessage(index, int(kind), bytes(payload), int(l1_block), int(deadline))

    # --- sending ----------------------------------------------------------------------------

    async def _send(self, key: bytes, data: bytes, value: int = 0) -> L1Receipt:
        try:
            return await send_transaction(self.l1, key, self.address, data, value=value, timeout=self.timeout)
        except l1_errors.ExecutionReverted as err:
            raise error_for_revert(err.reason) from err
        except l1_errors.InsufficientFunds as err:
            raise InsufficientFunds(
                f"the account 0x{address_of(key).hex()} cannot pay for this transaction: {err}") from err
        except l1_errors.TransactionFailed as err:
            raise ChainRefused(f"{err}: the bridge's state changed after the checks; run the command again") from err

    async def request_forced_withdrawal(self, key: bytes, asset_id: int) -> ForcedRequest:
        """Queue a FORCED_WITHDRAWAL of the key's account for ``asset_id``, paying the bridge's
        fee. Refuses if frozen (BridgeFrozen) or the asset is not listed (AssetNotListed)."""
        if await self.frozen():
            raise BridgeFrozen("the bridge is frozen: no forced withdrawal can be requested any more; escape instead")
        if not await self.is_listed(asset_id):
            raise AssetNotListed(f"asset {asset_id} is not listed on the bridge (it exists only in TradeZone)")
        fee = await self.forced_withdrawal_fee()
        sender = address_of(key)
        if await self.l1.get_balance(sender) < fee:
            raise InsufficientFunds(f"the account 0x{sender.hex()} cannot pay the forced withdrawal fee of {fee} wei")
        data = selector("requestForcedWithdrawal(uint32)") + abi_encode(["uint32"], [asset_id])
        receipt = await self._send(key, data, fee)
        for log in receipt.logs:
            if log.address == self.address and log.topics and log.topics[0] == MESSAGE_QUEUED_TOPIC:
                _kind, _payload, l1_block, deadline, _rolling = abi_decode(
                    ["uint8", "bytes", "uint256", "uint256", "bytes32"], log.data)
                return ForcedRequest(int.from_bytes(log.topics[1], "big"), int(l1_block), int(deadline),
                                     receipt.transaction_hash, receipt.gas_used)
        raise ChainRefused("the request was mined without a MessageQueued event")

    async def check_freeze(self) -> QueueHead:
        """The queue head a freeze in the next L1 block would name; raises AlreadyFrozen,
        NoPendingMessage or DeadlineNotPassed otherwise."""
        if await self.frozen():
            raise AlreadyFrozen("the bridge is already frozen")
        count = await self.bridge.message_count()
        cursor = await self.committed_cursor()
        if cursor >= count:
            raise NoPendingMessage(
                "no pending L1 message: every queued message was consumed by a committed batch, so the "
                "sequencer is serving the queue (request a forced withdrawal to start the clock)")
        deadline = await self.message_deadline(cursor)
        next_block = await self.l1.block_number() + 1
        if next_block <= deadline:
            raise DeadlineNotPassed.at(cursor, deadline, next_block)
        delay = await self.forced_inclusion_delay()
        return QueueHead(cursor, deadline - delay, deadline)

    async def freeze(self, key: bytes) -> L1Receipt:
        """Freeze the bridge (anyone may); refuses as :meth:`check_freeze` says."""
        await self.check_freeze()
        return await self._send(key, selector("freeze()"))

    async def check_escape_open(self, account: bytes, asset_id: int) -> None:
        """The refusals that need no proof: NotFrozen, AssetNotListed, AlreadyWithdrawn."""
        if not await self.frozen():
            raise NotFrozen("not frozen yet: escape withdrawals open only after a freeze (see `exos escape status`)")
        if not await self.is_listed(asset_id):
            raise AssetNotListed(f"asset {asset_id} is not listed on the bridge: nothing of it is held on L1")
        if await self.escaped(account, asset_id):
            raise AlreadyWithdrawn(f"already withdrawn: 0x{account.hex()} escaped asset {asset_id} before")

    async def check_withdraw(self, account: bytes, asset_id: int, proof: EscapeProof) -> CheckedLeaf:
        """Every check of ``escapeWithdraw`` for ``account``, done locally: frozen, listed, not
        yet escaped, the proof verified against the bridge's last committed root with a positive
        balance, and the bridge holding at least that balance. Returns the verified leaf (its
        ``balance`` is what the bridge pays)."""
        if proof.account != account:
            raise EscapeError(f"the proof is for account 0x{proof.account.hex()}, the key is 0x{account.hex()}'s")
        if proof.asset_id != asset_id:
            raise EscapeError(f"the proof is for asset {proof.asset_id}, not {asset_id}")
        await self.check_escape_open(account, asset_id)
        leaf = check_escape_proof(proof, await self.bridge.last_committed_root())
        held = await self.holdings(asset_id)
        if held < leaf.balance:
            raise BridgeShort(
                f"the bridge holds {held} of asset {asset_id}, less than the committed balance {leaf.balance}: "
                "the escape would revert (earlier escapes were paid balances that open perpetual losses did not "
                "back; see docs/escape.md)")
        return leaf

    async def withdraw(self, key: bytes, asset_id: int, proof: EscapeProof) -> Escaped:
        """Escape-withdraw the key's own balance of ``asset_id`` with ``proof``, after every
        check of :meth:`check_withdraw`. The bridge pays the leaf's ``balance`` to the account."""
        account = address_of(key)
        await self.check_withdraw(account, asset_id, proof)
        data = selector("escapeWithdraw(uint32,bytes,bytes[])") + abi_encode(
            ["uint32", "bytes", "bytes[]"], [asset_id, proof.value, list(proof.nodes)])
        receipt = await self._send(key, data)
        for log in receipt.logs:
            if log.address == self.address and log.topics and log.topics[0] == _ESCAPE_WITHDRAWN_TOPIC:
                amount = int.from_bytes(log.data[:32], "big")
                return Escaped(account, asset_id, amount, receipt.transaction_hash, receipt.gas_used)
        raise ChainRefused("the escape was mined without an EscapeWithdrawn event")

    async def check_refund(self, index: int) -> tuple[bytes, bytes, int, int]:
        """(depositor, recipient, asset id, amount) of the unconsumed deposit at ``index``;
        raises NotFrozen, NoSuchMessage, NotADeposit, DepositConsumed or AlreadyRefunded."""
        if not await self.frozen():
            raise NotFrozen("not frozen yet: deposits are refunded only after a freeze")
        message = await self.queued_message(index)
        if message.kind != L1_DEPOSIT:
            raise NotADeposit(f"L1 message {index} is a {message.kind_name}, not a deposit")
        if index < await self.committed_cursor():
            raise DepositConsumed(
                f"deposit {index} was consumed by a committed batch: it is in the committed state, escape it instead")
        if await self.refunded(index):
            raise AlreadyRefunded(f"deposit {index} was already refunded")
        depositor, recipient, asset_id, amount = abi_decode(["address", "address", "uint32", "uint256"], message.payload)
        return (bytes.fromhex(depositor[2:]), bytes.fromhex(recipient[2:]), int(asset_id), int(amount))

    async def refund(self, key: bytes, index: int) -> Refunded:
        """Refund the never-consumed deposit at ``index`` to its depositor (anyone may send it;
        ``key`` pays the gas)."""
        depositor, recipient, asset_id, amount = await self.check_refund(index)
        data = selector("refundDeposit(uint256,address,address,uint32,uint256)") + abi_encode(
            ["uint256", "address", "address", "uint32", "uint256"], [index, depositor, recipient, asset_id, amount])
        receipt = await self._send(key, data)
        return Refunded(index, depositor, asset_id, amount, receipt.transaction_hash, receipt.gas_used)
