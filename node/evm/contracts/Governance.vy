# pragma version 0.4.3
"""
@title Exos council governance and treasury
@notice A council of members (fixed at genesis) proposes, approves and executes calls. A proposal
        runs once it has `threshold` approvals; the proposer's approval is counted at proposal
        time. The contract holds the protocol treasury: it receives OKB (slashed stakes,
        forced-withdrawal fees) and can spend it only through executed proposals.
"""

MAX_MEMBERS: constant(uint256) = 16
MAX_CALLDATA: constant(uint256) = 2048

struct Proposal:
    target: address
    value: uint256
    data: Bytes[MAX_CALLDATA]
    proposer: address
    approvals: uint256
    executed: bool

event Proposed:
    id: indexed(uint256)
    proposer: indexed(address)
    target: address
    value: uint256
    data: Bytes[MAX_CALLDATA]

event Approved:
    id: indexed(uint256)
    member: indexed(address)
    approvals: uint256

event Executed:
    id: indexed(uint256)
    executor: indexed(address)

event Received:
    sender: indexed(address)
    value: uint256

members: public(DynArray[address, MAX_MEMBERS])
isMember: public(HashMap[address, bool])
threshold: public(uint256)
proposalCount: public(uint256)
proposals: public(HashMap[uint256, Proposal])
hasApproved: public(HashMap[uint256, HashMap[address, bool]])


@deploy
def __init__(members_: DynArray[address, MAX_MEMBERS], threshold_: uint256):
    assert threshold_ > 0, "Governance: zero threshold"
    assert threshold_ <= len(members_), "Governance: threshold above member count"
    for member: address in members_:
        assert member != empty(address), "Governance: zero member"
        assert not self.isMember[member], "Governance: duplicate member"
        self.isMember[member] = True
    self.members = members_
    self.threshold = threshold_


@view
@external
def memberCount() -> uint256:
    return len(self.members)


@external
def propose(target: address, amount: uint256, data: Bytes[MAX_CALLDATA]) -> uint256:
    """
    @notice Record a call of `target` with `data` and `amount` wei from the treasury, approved by
            the proposer. Returns the proposal id (sequential from 0). Members only.
    """
    assert self.isMember[msg.sender], "Governance: caller is not a member"
    assert target != empty(address), "Governance: zero target"
    pid: uint256 = self.proposalCount
    self.proposalCount = pid + 1
    self.proposals[pid] = Proposal(
        target=target, value=amount, data=data, proposer=msg.sender, approvals=1, executed=False
    )
    self.hasApproved[pid][msg.sender] = True
    log Proposed(id=pid, proposer=msg.sender, target=target, value=amount, data=data)
    log Approved(id=pid, member=msg.sender, approvals=1)
    return pid


@external
def approve(pid: uint256):
    """
    @notice Add the caller's approval to proposal `pid`, once per member, before execution.
    """
    assert self.isMember[msg.sender], "Governance: caller is not a member"
    assert pid < self.proposalCount, "Governance: unknown proposal"
    assert not self.proposals[pid].executed, "Governance: already executed"
    assert not self.hasApproved[pid][msg.sender], "Governance: already approved"
    self.hasApproved[pid][msg.sender] = True
    approvals: uint256 = self.proposals[pid].approvals + 1
    self.proposals[pid].approvals = approvals
    log Approved(id=pid, member=msg.sender, approvals=approvals)


@external
@nonreentrant
def execute(pid: uint256) -> Bytes[1024]:
    """
    @notice Run proposal `pid` exactly once, after it reached the threshold. The call's revert is
            propagated, leaving the proposal unexecuted. Members only. Returns the call's output.
    """
    assert self.isMember[msg.sender], "Governance: caller is not a member"
    assert pid < self.proposalCount, "Governance: unknown proposal"
    assert not self.proposals[pid].executed, "Governance: already executed"
    assert self.proposals[pid].approvals >= self.threshold, "Governance: not enough approvals"
    self.proposals[pid].executed = True
    log Executed(id=pid, executor=msg.sender)
    return raw_call(
        self.proposals[pid].target,
        self.proposals[pid].data,
        max_outsize=1024,
        value=self.proposals[pid].value,
    )


@external
@payable
def __default__():
    """
    @notice The treasury accepts OKB from anyone.
    """
    log Received(sender=msg.sender, value=msg.value)
