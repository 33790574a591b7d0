# pragma version 0.4.3
"""
@title Exos deployer staking
@notice Deployers stake OKB (the chain's native coin). Unstaking moves stake to an unbonding
        balance released `unbondingDelay` L1 blocks after the latest unstake request. Governance
        may slash active and unbonding stake; slashed OKB goes to the treasury (the governance
        contract). Every change of a staker's active stake is queued on the bridge so that
        TradeZone learns of it in order.
"""

interface IBridge:
    def queueStakeChange(staker: address, newStake: uint256) -> uint256: nonpayable

event Staked:
    staker: indexed(address)
    amount: uint256
    newStake: uint256

event UnstakeRequested:
    staker: indexed(address)
    amount: uint256
    newStake: uint256
    releaseBlock: uint256

event Withdrawn:
    staker: indexed(address)
    amount: uint256

event Slashed:
    staker: indexed(address)
    amount: uint256
    newStake: uint256
    newUnbonding: uint256

bridge: public(address)
governance: public(address)
unbondingDelay: public(uint256)
stakeOf: public(HashMap[address, uint256])
unbondingOf: public(HashMap[address, uint256])
releaseBlockOf: public(HashMap[address, uint256])
totalStaked: public(uint256)
totalUnbonding: public(uint256)


@deploy
def __init__(bridge_: address, governance_: address, unbondingDelay_: uint256):
    assert bridge_ != empty(address), "Staking: zero bridge"
    assert governance_ != empty(address), "Staking: zero governance"
    self.bridge = bridge_
    self.governance = governance_
    self.unbondingDelay = unbondingDelay_


@external
@payable
def stake():
    """
    @notice Add msg.value to the caller's active stake and queue the new total on the bridge.
    """
    assert msg.value > 0, "Staking: zero amount"
    new_stake: uint256 = self.stakeOf[msg.sender] + msg.value
    self.stakeOf[msg.sender] = new_stake
    self.totalStaked += msg.value
    extcall IBridge(self.bridge).queueStakeChange(msg.sender, new_stake)
    log Staked(staker=msg.sender, amount=msg.value, newStake=new_stake)


@external
def requestUnstake(amount: uint256):
    """
    @notice Move `amount` of the caller's active stake to unbonding. All of the caller's
            unbonding stake is released `unbondingDelay` blocks after this request.
    """
    assert amount > 0, "Staking: zero amount"
    active: uint256 = self.stakeOf[msg.sender]
    assert amount <= active, "Staking: amount exceeds stake"
    new_stake: uint256 = active - amount
    self.stakeOf[msg.sender] = new_stake
    self.totalStaked -= amount
    self.unbondingOf[msg.sender] += amount
    self.totalUnbonding += amount
    release: uint256 = block.number + self.unbondingDelay
    self.releaseBlockOf[msg.sender] = release
    extcall IBridge(self.bridge).queueStakeChange(msg.sender, new_stake)
    log UnstakeRequested(staker=msg.sender, amount=amount, newStake=new_stake, releaseBlock=release)


@external
@nonreentrant
def withdraw():
    """
    @notice Pay the caller all of their unbonding stake once its release block is reached.
    """
    amount: uint256 = self.unbondingOf[msg.sender]
    assert amount > 0, "Staking: nothing unbonding"
    assert block.number >= self.releaseBlockOf[msg.sender], "Staking: still unbonding"
    self.unbondingOf[msg.sender] = 0
    self.totalUnbonding -= amount
    log Withdrawn(staker=msg.sender, amount=amount)
    raw_call(msg.sender, b"", value=amount)


@external
@nonreentrant
def slash(staker: address, amount: uint256):
    """
    @notice Take `amount` from `staker` (active stake first, then unbonding stake) and send it to
            the treasury. Governance only; reverts if `amount` exceeds what the staker has.
    """
    assert msg.sender == self.governance, "Staking: caller is not governance"
    assert amount > 0, "Staking: zero amount"
    active: uint256 = self.stakeOf[staker]
    unbonding: uint256 = self.unbondingOf[staker]
    assert amount <= active + unbonding, "Staking: slash exceeds stake"
    from_active: uint256 = min(amount, active)
    from_unbonding: uint256 = amount - from_active
    self.stakeOf[staker] = active - from_active
    self.totalStaked -= from_active
    self.unbondingOf[staker] = unbonding - from_unbonding
    self.totalUnbonding -= from_unbonding
    if from_active > 0:
        extcall IBridge(self.bridge).queueStakeChange(staker, active - from_active)
    log Slashed(
        staker=staker, amount=amount, newStake=active - from_active, newUnbonding=unbonding - from_unbonding
    )
    raw_call(self.governance, b"", value=amount)
