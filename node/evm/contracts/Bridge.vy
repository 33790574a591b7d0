# pragma version 0.4.3
"""
@title Exos bridge: custody, L1 message queue, batches, withdrawals and the escape hatch
@notice Holds every L1-backed asset of TradeZone. Deposits, stake changes and forced withdrawal
        requests are appended to one L1 message queue (sequential index, deadline, rolling hash).
        The sequencer commits batches (new TradeZone state root, consumed queue cursor, the batch
        data as calldata, the withdrawals it makes claimable). If the oldest unconsumed message
        passes its deadline, anyone may freeze the bridge for good; then every account withdraws
        its balance by proving its leaf against the last committed state root, and deposits that
        were never consumed are refunded. Layouts and encodings: docs/interfaces.md.
"""

interface IERC20:
    def transferFrom(sender: address, receiver: address, amount: uint256) -> bool: nonpayable
    def transfer(receiver: address, amount: uint256) -> bool: nonpayable

# L1 message kinds (docs/interfaces.md).
KIND_DEPOSIT: constant(uint8) = 1
KIND_STAKE: constant(uint8) = 2
KIND_FORCED_WITHDRAWAL: constant(uint8) = 3

MAX_LISTED_AT_GENESIS: constant(uint256) = 32
MAX_PAYLOAD: constant(uint256) = 128
# Batch data is carried in calldata and only hashed; see commitBatch and docs/contracts.md for
# why its declared maximum costs nothing unless used.
MAX_BATCH_DATA: constant(uint256) = 262144
MAX_WITHDRAWALS: constant(uint256) = 256
# Merkle-Patricia proofs: a branch node of 16 hashes is 532 bytes; 700 leaves room for values.
MAX_NODE: constant(uint256) = 700
MAX_PADDED: constant(uint256) = MAX_NODE + 32
MAX_PROOF_NODES: constant(uint256) = 64
MAX_LEAF_VALUE: constant(uint256) = 256
EMPTY_TRIE_ROOT: constant(bytes32) = 0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421
BALANCE_KEY_PREFIX: constant(bytes1) = 0x01
CLAIMED: constant(uint256) = max_value(uint256)

struct Batch:
    stateRoot: bytes32
    tzBlock: uint64
    l1Block: uint256
    messageCursor: uint256
    dataHash: bytes32

struct Withdrawal:
    withdrawalId: uint64
    recipient: address
    assetId: uint32
    amount: uint256

event MessageQueued:
    index: indexed(uint256)
    kind: uint8
    payload: Bytes[MAX_PAYLOAD]
    l1Block: uint256
    deadline: uint256
    rollingHash: bytes32

event BatchCommitted:
    batchIndex: indexed(uint256)
    stateRoot: bytes32
    tzBlock: uint64
    messageCursor: uint256
    dataHash: bytes32
    withdrawalCount: uint256

event WithdrawalClaimed:
    withdrawalId: indexed(uint64)
    recipient: indexed(address)
    assetId: uint32
    amount: uint256

event AssetListed:
    assetId: indexed(uint32)
    token: indexed(address)

event SequencerChanged:
    previous: indexed(address)
    sequencer: indexed(address)

event Frozen:
    l1Block: uint256
    messageIndex: uint256
    stateRoot: bytes32

event EscapeWithdrawn:
    account: indexed(address)
    assetId: indexed(uint32)
    amount: uint256

event DepositRefunded:
    index: indexed(uint256)
    depositor: indexed(address)
    assetId: uint32
    amount: uint256

# Roles and parameters (set at genesis).
sequencer: public(address)
governance: public(address)
staking: public(address)
forcedInclusionDelay: public(uint256)
finalizationDelay: public(uint256)
forcedWithdrawalFee: public(uint256)

# Asset listing: the native coin is the zero token address.
assetIdOf: public(HashMap[address, uint32])
tokenOf: public(HashMap[uint32, address])
isListed: public(HashMap[uint32, bool])
tokenListed: HashMap[address, bool]

# L1 message queue: count, rolling hash and deadline per index.
messageCount: public(uint256)
rollingHashes: HashMap[uint256, bytes32]
messageDeadline: public(HashMap[uint256, uint256])

# Batches.
batches: public(HashMap[uint256, Batch])
batchCount: public(uint256)
lastCommittedRoot: public(bytes32)
committedCursor: public(uint256)
# keccak256(abi.encode(withdrawalId, recipient, assetId, amount)) -> batch index + 1, or CLAIMED.
withdrawalStatus: HashMap[bytes32, uint256]

# Escape hatch.
frozen: public(bool)
escaped: public(HashMap[address, HashMap[uint32, bool]])
refunded: public(HashMap[uint256, bool])


@deploy
def __init__(
    sequencer_: address,
    governance_: address,
    staking_: address,
    forcedInclusionDelay_: uint256,
    finalizationDelay_: uint256,
    forcedWithdrawalFee_: uint256,
    genesisStateRoot_: bytes32,
    tokens_: DynArray[address, MAX_LISTED_AT_GENESIS],
    assetIds_: DynArray[uint32, MAX_LISTED_AT_GENESIS],
):
    assert sequencer_ != empty(address), "Bridge: zero sequencer"
    assert governance_ != empty(address), "Bridge: zero governance"
    assert staking_ != empty(address), "Bridge: zero staking"
    assert forcedInclusionDelay_ > 0, "Bridge: zero forced inclusion delay"
    assert len(tokens_) == len(assetIds_), "Bridge: listing length mismatch"
    self.sequencer = sequencer_
    self.governance = governance_
    self.staking = staking_
    self.forcedInclusionDelay = forcedInclusionDelay_
    self.finalizationDelay = finalizationDelay_
    self.forcedWithdrawalFee = forcedWithdrawalFee_
    self.lastCommittedRoot = genesisStateRoot_
    for i: uint256 in range(MAX_LISTED_AT_GENESIS):
        if i >= len(tokens_):
            break
        self._list_asset(tokens_[i], assetIds_[i])


# ---------------------------------------------------------------- listing and roles


@internal
def _list_asset(token: address, assetId: uint32):
    assert not self.tokenListed[token], "Bridge: token already listed"
    assert not self.isListed[assetId], "Bridge: asset id already used"
    self.tokenListed[token] = True
    self.isListed[assetId] = True
    self.assetIdOf[token] = assetId
    self.tokenOf[assetId] = token
    log AssetListed(assetId=assetId, token=token)


@external
def listAsset(token: address, assetId: uint32):
    """
    @notice List `token` (the zero address is the native coin) under `assetId`. Governance only;
            a token and an id can each be listed once.
    """
    assert msg.sender == self.governance, "Bridge: caller is not governance"
    self._list_asset(token, assetId)


@external
def setSequencer(newSequencer: address):
    """
    @notice Replace the address allowed to commit batches. Governance only.
    """
    assert msg.sender == self.governance, "Bridge: caller is not governance"
    assert newSequencer != empty(address), "Bridge: zero sequencer"
    log SequencerChanged(previous=self.sequencer, sequencer=newSequencer)
    self.sequencer = newSequencer


# ---------------------------------------------------------------- L1 message queue


@internal
def _queue(kind: uint8, payload: Bytes[MAX_PAYLOAD]) -> uint256:
    index: uint256 = self.messageCount
    msg_hash: bytes32 = keccak256(concat(abi_encode(index, kind), payload))
    previous: bytes32 = empty(bytes32)
    if index > 0:
        previous = self.rollingHashes[index - 1]
    rolling: bytes32 = keccak256(concat(previous, msg_hash))
    deadline: uint256 = block.number + self.forcedInclusionDelay
    self.rollingHashes[index] = rolling
    self.messageDeadline[index] = deadline
    self.messageCount = index + 1
    log MessageQueued(
        index=index, kind=kind, payload=payload, l1Block=block.number, deadline=deadline, rollingHash=rolling
    )
    return index


@view
@external
def rollingHashAt(index: uint256) -> bytes32:
    """
    @notice The queue's rolling hash after message `index`; reverts for an index not yet queued.
    """
    assert index < self.messageCount, "Bridge: no such message"
    return self.rollingHashes[index]


@internal
def _deposit(token: address, recipient: address, amount: uint256) -> uint256:
    assert not self.frozen, "Bridge: frozen"
    assert recipient != empty(address), "Bridge: zero recipient"
    assert amount > 0, "Bridge: zero amount"
    assert self.tokenListed[token], "Bridge: token not listed"
    asset_id: uint32 = self.assetIdOf[token]
    return self._queue(KIND_DEPOSIT, abi_encode(msg.sender, recipient, asset_id, amount))


@external
@payable
def depositNative(recipient: address) -> uint256:
    """
    @notice Deposit msg.value of the native coin (OKB) for TradeZone account `recipient`.
            Returns the queue index of the DEPOSIT message.
    """
    return self._deposit(empty(address), recipient, msg.value)


@external
@payable
@nonreentrant
def deposit(token: address, recipient: address, amount: uint256) -> uint256:
    """
    @notice Deposit `amount` of `token` for TradeZone account `recipient`. The zero token is the
            native coin (msg.value must equal `amount`); an ERC-20 is pulled with transferFrom
            (approve the bridge first; msg.value must be 0). Returns the queue index.
    """
    if token == empty(address):
        assert msg.value == amount, "Bridge: value does not match amount"
    else:
        assert msg.value == 0, "Bridge: value sent with a token deposit"
    index: uint256 = self._deposit(token, recipient, amount)
    if token != empty(address):
        assert extcall IERC20(token).transferFrom(msg.sender, self, amount, default_return_value=True), (
            "Bridge: token transfer failed"
        )
    return index


@external
def queueStakeChange(staker: address, newStake: uint256) -> uint256:
    """
    @notice Append a STAKE message with the staker's new total active stake. Staking only.
    """
    assert msg.sender == self.staking, "Bridge: caller is not staking"
    return self._queue(KIND_STAKE, abi_encode(staker, newStake))


@external
@payable
def requestForcedWithdrawal(assetId: uint32) -> uint256:
    """
    @notice Ask TradeZone to withdraw the caller's full free balance of `assetId`. msg.value
            must equal the forced-withdrawal fee, which goes to the treasury. If the sequencer
            does not consume the message by its deadline, anyone may freeze the bridge.
    """
    assert not self.frozen, "Bridge: frozen"
    assert self.isListed[assetId], "Bridge: asset not listed"
    assert msg.value == self.forcedWithdrawalFee, "Bridge: wrong forced withdrawal fee"
    index: uint256 = self._queue(KIND_FORCED_WITHDRAWAL, abi_encode(msg.sender, assetId))
    if msg.value > 0:
        raw_call(self.governance, b"", value=msg.value)
    return index


# ---------------------------------------------------------------- batches and withdrawals


@external
def commitBatch(
    prevRoot: bytes32,
    newRoot: bytes32,
    tzBlock: uint64,
    newCursor: uint256,
    rollingHash: bytes32,
    withdrawals: DynArray[Withdrawal, MAX_WITHDRAWALS],
    data: Bytes[MAX_BATCH_DATA],
):
    """
    @notice Commit a TradeZone batch: it moves the state from `prevRoot` (the last committed
            root) to `newRoot` at TradeZone block `tzBlock`, consumes the queue up to `newCursor`
            (exclusive) whose rolling hash is `rollingHash`, carries `data` as calldata (only its
            keccak is stored) and makes each withdrawal claimable once. Sequencer only, never
            once frozen. The new batch's index is batchCount() - 1 (see the BatchCommitted event).
    """
    # `data` is the last buffer of this frame and nothing here touches memory after it (internal
    # frames sit below external ones), so memory gas follows the data's actual size, not its
    # declared maximum.
    self._commit(prevRoot, newRoot, tzBlock, newCursor, rollingHash, withdrawals, keccak256(data))


@internal
def _commit(
    prevRoot: bytes32,
    newRoot: bytes32,
    tzBlock: uint64,
    newCursor: uint256,
    rollingHash: bytes32,
    withdrawals: DynArray[Withdrawal, MAX_WITHDRAWALS],
    dataHash: bytes32,
):
    assert not self.frozen, "Bridge: frozen"
    assert msg.sender == self.sequencer, "Bridge: caller is not the sequencer"
    assert prevRoot == self.lastCommittedRoot, "Bridge: prevRoot is not the last committed root"
    assert newCursor >= self.committedCursor, "Bridge: cursor goes back"
    assert newCursor <= self.messageCount, "Bridge: cursor past the queue"
    expected: bytes32 = empty(bytes32)
    if newCursor > 0:
        expected = self.rollingHashes[newCursor - 1]
    assert rollingHash == expected, "Bridge: rolling hash mismatch"
    index: uint256 = self.batchCount
    if index > 0:
        assert tzBlock > self.batches[index - 1].tzBlock, "Bridge: tzBlock does not advance"
    self.batches[index] = Batch(
        stateRoot=newRoot, tzBlock=tzBlock, l1Block=block.number, messageCursor=newCursor, dataHash=dataHash
    )
    self.batchCount = index + 1
    self.lastCommittedRoot = newRoot
    self.committedCursor = newCursor
    for w: Withdrawal in withdrawals:
        assert self.isListed[w.assetId], "Bridge: withdrawal of an unlisted asset"
        assert w.recipient != empty(address), "Bridge: withdrawal to the zero address"
        assert w.amount > 0, "Bridge: zero withdrawal"
        key: bytes32 = keccak256(abi_encode(w.withdrawalId, w.recipient, w.assetId, w.amount))
        assert self.withdrawalStatus[key] == 0, "Bridge: duplicate withdrawal"
        self.withdrawalStatus[key] = index + 1
    log BatchCommitted(
        batchIndex=index,
        stateRoot=newRoot,
        tzBlock=tzBlock,
        messageCursor=newCursor,
        dataHash=dataHash,
        withdrawalCount=len(withdrawals),
    )


@view
@external
def withdrawalState(withdrawalId: uint64, recipient: address, assetId: uint32, amount: uint256) -> (uint256, uint256):
    """
    @notice (status, batch index) of a withdrawal: status 0 unknown, 1 pending finality,
            2 claimable, 3 claimed. The batch index is meaningful for status 1 and 2 only.
    """
    key: bytes32 = keccak256(abi_encode(withdrawalId, recipient, assetId, amount))
    status: uint256 = self.withdrawalStatus[key]
    if status == 0:
        return 0, 0
    if status == CLAIMED:
        return 3, 0
    if block.number >= self.batches[status - 1].l1Block + self.finalizationDelay:
        return 2, status - 1
    return 1, status - 1


@internal
def _pay(receiver: address, assetId: uint32, amount: uint256):
    token: address = self.tokenOf[assetId]
    if token == empty(address):
        raw_call(receiver, b"", value=amount)
    else:
        assert extcall IERC20(token).transfer(receiver, amount, default_return_value=True), (
            "Bridge: token transfer failed"
        )


@external
@nonreentrant
def claim(withdrawalId: uint64, recipient: address, assetId: uint32, amount: uint256):
    """
    @notice Pay a committed withdrawal to its recipient, exactly once, once its batch is final
            (`finalizationDelay` L1 blocks after the batch was committed). Anyone may call.
    """
    key: bytes32 = keccak256(abi_encode(withdrawalId, recipient, assetId, amount))
    status: uint256 = self.withdrawalStatus[key]
    assert status != 0, "Bridge: unknown withdrawal"
    assert status != CLAIMED, "Bridge: already claimed"
    assert block.number >= self.batches[status - 1].l1Block + self.finalizationDelay, "Bridge: batch not final"
    self.withdrawalStatus[key] = CLAIMED
    log WithdrawalClaimed(withdrawalId=withdrawalId, recipient=recipient, assetId=assetId, amount=amount)
    self._pay(recipient, assetId, amount)


# ---------------------------------------------------------------- escape hatch


@external
def freeze():
    """
    @notice Freeze the bridge for good once the oldest unconsumed message (index equal to the
            committed cursor) is past its deadline (block.number > deadline). Anyone may call.
    """
    assert not self.frozen, "Bridge: already frozen"
    head: uint256 = self.committedCursor
    assert head < self.messageCount, "Bridge: no pending message"
    assert block.number > self.messageDeadline[head], "Bridge: deadline not passed"
    self.frozen = True
    log Frozen(l1Block=block.number, messageIndex=head, stateRoot=self.lastCommittedRoot)


@view
@external
def canFreeze() -> bool:
    """
    @notice True when freeze() would succeed now.
    """
    head: uint256 = self.committedCursor
    return (not self.frozen) and head < self.messageCount and block.number > self.messageDeadline[head]


@pure
@external
def balanceLeafKey(account: address, assetId: uint32) -> bytes32:
    """
    @notice The state-trie key of an account's balance leaf: keccak256(0x01 ++ account ++ assetId).
    """
    return keccak256(concat(BALANCE_KEY_PREFIX, convert(account, bytes20), convert(assetId, bytes4)))


@external
@nonreentrant
def escapeWithdraw(
    assetId: uint32,
    balanceLeafValue: Bytes[MAX_LEAF_VALUE],
    proof: DynArray[Bytes[MAX_NODE], MAX_PROOF_NODES],
):
    """
    @notice Once frozen, pay the caller the `balance` of their balance leaf for `assetId`, proved
            by a Merkle-Patricia inclusion proof (EIP-1186 node list) against the last committed
            state root. Once per account and asset.
    """
    assert self.frozen, "Bridge: not frozen"
    assert self.isListed[assetId], "Bridge: asset not listed"
    assert not self.escaped[msg.sender][assetId], "Bridge: already escaped"
    key: bytes32 = keccak256(concat(BALANCE_KEY_PREFIX, convert(msg.sender, bytes20), convert(assetId, bytes4)))
    proven: Bytes[MAX_NODE] = self._mpt_get(self.lastCommittedRoot, key, 64, proof)
    assert len(proven) > 0, "Bridge: no balance leaf for this account and asset"
    assert keccak256(proven) == keccak256(balanceLeafValue), "Bridge: leaf value does not match the proof"
    amount: uint256 = self._leaf_balance(balanceLeafValue)
    assert amount > 0, "Bridge: nothing to withdraw"
    self.escaped[msg.sender][assetId] = True
    log EscapeWithdrawn(account=msg.sender, assetId=assetId, amount=amount)
    self._pay(msg.sender, assetId, amount)


@external
@nonreentrant
def refundDeposit(index: uint256, depositor: address, recipient: address, assetId: uint32, amount: uint256):
    """
    @notice Once frozen, return a deposit that no committed batch consumed (index at or after the
            committed cursor) to its depositor, exactly once. The fields must hash to the queued
            message. Anyone may call.
    """
    assert self.frozen, "Bridge: not frozen"
    assert index < self.messageCount, "Bridge: no such message"
    assert index >= self.committedCursor, "Bridge: deposit was consumed by a batch"
    assert not self.refunded[index], "Bridge: already refunded"
    msg_hash: bytes32 = keccak256(abi_encode(index, KIND_DEPOSIT, depositor, recipient, assetId, amount))
    previous: bytes32 = empty(bytes32)
    if index > 0:
        previous = self.rollingHashes[index - 1]
    assert keccak256(concat(previous, msg_hash)) == self.rollingHashes[index], "Bridge: not this deposit"
    self.refunded[index] = True
    log DepositRefunded(index=index, depositor=depositor, assetId=assetId, amount=amount)
    self._pay(depositor, assetId, amount)


# ---------------------------------------------------------------- Merkle-Patricia verifier


@pure
@external
def verifyMerkleProof(
    root: bytes32, key: Bytes[32], proof: DynArray[Bytes[MAX_NODE], MAX_PROOF_NODES]
) -> Bytes[MAX_NODE]:
    """
    @notice The value stored under `key` (raw, not hashed) in the trie with root `root`, or empty
            bytes if the proof proves the key absent. Reverts on any proof that does not check.
    """
    padded_key: bytes32 = extract32(concat(key, empty(bytes32)), 0)
    return self._mpt_get(root, padded_key, 2 * len(key), proof)


@pure
@internal
def _byte_at(buf: Bytes[MAX_PADDED], offset: uint256) -> uint256:
    return convert(extract32(buf, offset), uint256) >> 248


@pure
@internal
def _rlp_item(buf: Bytes[MAX_PADDED], offset: uint256, limit: uint256) -> (uint256, uint256, bool):
    """
    @dev (payload offset, payload length, is a list) of the RLP item starting at `offset`, which
         must end at or before `limit`. `buf` carries 32 zero bytes after `limit`.
    """
    assert offset < limit, "MPT: truncated RLP"
    b0: uint256 = self._byte_at(buf, offset)
    payload: uint256 = offset + 1
    length: uint256 = 0
    if b0 < 128:
        return offset, 1, False
    elif b0 < 184:
        length = b0 - 128
    elif b0 < 192 or b0 >= 248:
        size_len: uint256 = b0 - 183
        if b0 >= 248:
            size_len = b0 - 247
        assert size_len <= 2, "MPT: RLP item too long"
        assert offset + 1 + size_len <= limit, "MPT: truncated RLP"
        length = convert(extract32(buf, offset + 1), uint256) >> (256 - 8 * size_len)
        payload = offset + 1 + size_len
    else:
        length = b0 - 192
    assert payload + length <= limit, "MPT: truncated RLP"
    return payload, length, b0 >= 192


@pure
@internal
def _key_nibbles(key: uint256, start: uint256, count: uint256) -> uint256:
    # Nibbles [start, start + count) of the left-aligned key, as an integer.
    if count == 0:
        return 0
    return (key << (4 * start)) >> (256 - 4 * count)


@pure
@internal
def _mpt_get(
    root: bytes32, key: bytes32, key_nibbles: uint256, proof: DynArray[Bytes[MAX_NODE], MAX_PROOF_NODES]
) -> Bytes[MAX_NODE]:
    """
    @dev Walk `proof` from `root` along the first `key_nibbles` nibbles of `key`. Each proof node
         must hash to the reference its parent holds; a child embedded in its parent (RLP under
         32 bytes) is followed in place, and may also appear as the next proof element. Returns
         the value, or b"" for a proven absence; every node of the proof must be used.
    """
    key_int: uint256 = convert(key, uint256)
    if len(proof) == 0:
        assert root == EMPTY_TRIE_ROOT, "MPT: empty proof for a non-empty trie"
        return b""
    node: Bytes[MAX_NODE] = b""
    expected: bytes32 = root
    embedded: bool = False
    used: uint256 = 0
    pos: uint256 = 0
    for step: uint256 in range(2 * MAX_PROOF_NODES + 1):
        if not embedded:
            assert used < len(proof), "MPT: proof too short"
            node = proof[used]
            used += 1
            assert keccak256(node) == expected, "MPT: node hash does not match its reference"
        buf: Bytes[MAX_PADDED] = concat(node, empty(bytes32))
        size: uint256 = len(node)
        list_payload: uint256 = 0
        list_length: uint256 = 0
        is_list: bool = False
        list_payload, list_length, is_list = self._rlp_item(buf, 0, size)
        assert is_list and list_payload + list_length == size, "MPT: node is not one RLP list"
        starts: uint256[17] = empty(uint256[17])
        payloads: uint256[17] = empty(uint256[17])
        lengths: uint256[17] = empty(uint256[17])
        lists: bool[17] = empty(bool[17])
        count: uint256 = 0
        cursor: uint256 = list_payload
        for i: uint256 in range(17):
            if cursor == size:
                break
            starts[i] = cursor
            payloads[i], lengths[i], lists[i] = self._rlp_item(buf, cursor, size)
            cursor = payloads[i] + lengths[i]
            count += 1
        assert cursor == size, "MPT: node has too many items"
        child: uint256 = 0
        if count == 17:
            if pos == key_nibbles:
                assert used == len(proof), "MPT: proof has extra nodes"
                assert not lists[16], "MPT: branch value is a list"
                return slice(node, payloads[16], lengths[16])
            child = self._key_nibbles(key_int, pos, 1)
            pos += 1
        elif count == 2:
            assert not lists[0] and lengths[0] > 0, "MPT: bad hex-prefix path"
            first: uint256 = self._byte_at(buf, payloads[0])
            flag: uint256 = first >> 4
            assert flag <= 3, "MPT: bad hex-prefix flag"
            odd: uint256 = flag & 1
            assert odd == 1 or first & 15 == 0, "MPT: bad hex-prefix padding"
            rest: uint256 = lengths[0] - 1
            assert rest <= 32, "MPT: path too long"
            path_len: uint256 = 2 * rest + odd
            path: uint256 = 0
            if rest > 0:
                path = convert(extract32(buf, payloads[0] + 1), uint256) >> (256 - 8 * rest)
            if odd == 1:
                path = path | ((first & 15) << (8 * rest))
            matches: bool = pos + path_len <= key_nibbles and self._key_nibbles(key_int, pos, path_len) == path
            if flag >= 2:
                assert used == len(proof), "MPT: proof has extra nodes"
                if matches and pos + path_len == key_nibbles:
                    assert not lists[1], "MPT: leaf value is a list"
                    return slice(node, payloads[1], lengths[1])
                return b""
            assert path_len > 0, "MPT: empty extension path"
            if not matches:
                assert used == len(proof), "MPT: proof has extra nodes"
                return b""
            pos += path_len
            child = 1
        else:
            raise "MPT: node is neither a branch nor a leaf nor an extension"
        # Follow the child reference: empty (absent), a 32-byte hash, or an embedded node.
        if lists[child]:
            raw_length: uint256 = payloads[child] + lengths[child] - starts[child]
            assert raw_length < 32, "MPT: embedded node of 32 bytes or more"
            node = slice(node, starts[child], raw_length)
            embedded = True
            if used < len(proof):
                if keccak256(proof[used]) == keccak256(node):
                    used += 1
        elif lengths[child] == 32:
            expected = extract32(buf, payloads[child])
            embedded = False
        else:
            assert lengths[child] == 0, "MPT: bad child reference"
            assert used == len(proof), "MPT: proof has extra nodes"
            return b""
    raise "MPT: proof too deep"


@pure
@internal
def _leaf_balance(leaf: Bytes[MAX_LEAF_VALUE]) -> uint256:
    """
    @dev The first field (balance) of a balance leaf value RLP([balance, reserved, ...]).
    """
    buf: Bytes[MAX_PADDED] = concat(leaf, empty(bytes32))
    size: uint256 = len(leaf)
    payload: uint256 = 0
    length: uint256 = 0
    is_list: bool = False
    payload, length, is_list = self._rlp_item(buf, 0, size)
    assert is_list and payload + length == size, "Bridge: balance leaf is not one RLP list"
    assert length > 0, "Bridge: balance leaf has no balance"
    field: uint256 = 0
    field_length: uint256 = 0
    field, field_length, is_list = self._rlp_item(buf, payload, size)
    assert not is_list and field_length <= 32, "Bridge: balance is not an integer"
    if field_length == 0:
        return 0
    return convert(extract32(buf, field), uint256) >> (256 - 8 * field_length)
