# pragma version 0.4.3
"""
@title Devnet ERC-20 token
@notice A standard ERC-20 (EIP-20) token whose supply is minted by one owner. On the devnet the
        owner is the faucet account; on a real network the listed tokens are existing ERC-20s and
        this contract is not used.
"""

event Transfer:
    sender: indexed(address)
    receiver: indexed(address)
    value: uint256

event Approval:
    owner: indexed(address)
    spender: indexed(address)
    value: uint256

event OwnershipTransferred:
    previousOwner: indexed(address)
    newOwner: indexed(address)

name: public(String[32])
symbol: public(String[16])
decimals: public(uint8)
totalSupply: public(uint256)
balanceOf: public(HashMap[address, uint256])
allowance: public(HashMap[address, HashMap[address, uint256]])
owner: public(address)


@deploy
def __init__(name_: String[32], symbol_: String[16], decimals_: uint8, owner_: address):
    assert owner_ != empty(address), "ERC20: zero owner"
    self.name = name_
    self.symbol = symbol_
    self.decimals = decimals_
    self.owner = owner_
    log OwnershipTransferred(previousOwner=empty(address), newOwner=owner_)


@internal
def _transfer(sender: address, receiver: address, amount: uint256):
    assert receiver != empty(address), "ERC20: transfer to the zero address"
    balance: uint256 = self.balanceOf[sender]
    assert balance >= amount, "ERC20: transfer amount exceeds balance"
    self.balanceOf[sender] = balance - amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=sender, receiver=receiver, value=amount)


@external
def transfer(receiver: address, amount: uint256) -> bool:
    """
    @notice Move `amount` from the caller to `receiver`; reverts if the caller holds less.
    """
    self._transfer(msg.sender, receiver, amount)
    return True


@external
def transferFrom(sender: address, receiver: address, amount: uint256) -> bool:
    """
    @notice Move `amount` from `sender` to `receiver` using the caller's allowance; an allowance of
            max(uint256) is never decreased.
    """
    allowed: uint256 = self.allowance[sender][msg.sender]
    assert allowed >= amount, "ERC20: insufficient allowance"
    if allowed != max_value(uint256):
        self.allowance[sender][msg.sender] = allowed - amount
    self._transfer(sender, receiver, amount)
    return True


@external
def approve(spender: address, amount: uint256) -> bool:
    """
    @notice Set the caller's allowance for `spender` to exactly `amount`.
    """
    assert spender != empty(address), "ERC20: approve to the zero address"
    self.allowance[msg.sender][spender] = amount
    log Approval(owner=msg.sender, spender=spender, value=amount)
    return True


@external
def mint(receiver: address, amount: uint256):
    """
    @notice Create `amount` new tokens for `receiver`. Only the owner may mint.
    """
    assert msg.sender == self.owner, "ERC20: caller is not the owner"
    assert receiver != empty(address), "ERC20: mint to the zero address"
    assert amount > 0, "ERC20: zero amount"
    self.totalSupply += amount
    self.balanceOf[receiver] += amount
    log Transfer(sender=empty(address), receiver=receiver, value=amount)


@external
def transferOwnership(newOwner: address):
    """
    @notice Hand the minting right to `newOwner`. Only the owner may do this.
    """
    assert msg.sender == self.owner, "ERC20: caller is not the owner"
    assert newOwner != empty(address), "ERC20: zero owner"
    log OwnershipTransferred(previousOwner=self.owner, newOwner=newOwner)
    self.owner = newOwner
