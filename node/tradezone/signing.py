"""Client-side signing of TradeZone actions with a private key.

``sign_action`` is what an SDK, a bot or a test calls: it signs the action's EIP-712 digest
(``node.tradezone.eip712``) with libsecp256k1 (RFC 6979 deterministic, low-s) and returns the
``SignedTx`` ready to encode and send. An agent signs for an account by passing the account's
address as ``account`` and its own key; the nonce is then the agent key's nonce.
"""

from __future__ import annotations

from coincurve import PrivateKey
from eth_hash.auto import keccak

from node.tradezone.eip712 import DEVNET_DOMAIN, Domain, signing_digest
from node.tradezone.errors import ValueOutOfRange
from node.tradezone.transactions import Action, SignedTx, encode_transaction


class Signer:
    """A private key that signs TradeZone actions; ``address`` is its 20-byte address."""

    __slots__ = ("_key", "address")

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32:
            raise ValueError("a private key is 32 bytes")
        self._key = PrivateKey(private_key)
        self.address = address_of_public_key(self._key.public_key.format(compressed=False))

    def __repr__(self) -> str:
        return f"Signer(address=0x{self.address.hex()})"

    def sign_digest(self, digest: bytes) -> bytes:
        """A 65-byte ``r ‖ s ‖ v`` signature (low s, v in {27, 28}) of a 32-byte digest."""
        raw = self._key.sign_recoverable(digest, hasher=None)
        return raw[:64] + bytes((raw[64] + 27,))

    def sign(
        self, action: Action, nonce: int, account: bytes | None = None, domain: Domain = DEVNET_DOMAIN
    ) -> SignedTx:
        """Sign ``action`` for ``account`` (default: this key's own address) with the signing
        key's ``nonce``. Guarantees the result encodes (raises ``ValueOutOfRange`` first if any
        field is out of range) and recovers to ``self.address`` under ``domain``."""
        principal = self.address if account is None else account
        unsigned = SignedTx(action, principal, nonce, bytes(65))
        encode_transaction(unsigned)  # range-checks every field before anything is signed
        signature = self.sign_digest(signing_digest(action, principal, nonce, domain))
        tx = SignedTx(action, principal, nonce, signature)
        tx.cache_signer(domain.separator, self.address)
        return tx


def address_of_public_key(uncompressed: bytes) -> bytes:
    """The Ethereum address of a 65-byte uncompressed public key."""
    if len(uncompressed) != 65 or uncompressed[0] != 4:
        raise ValueOutOfRange("public_key", "expected 65 bytes starting with 0x04")
    return keccak(uncompressed[1:])[12:]


def sign_action(
    private_key: bytes,
    action: Action,
    nonce: int,
    account: bytes | None = None,
    domain: Domain = DEVNET_DOMAIN,
) -> SignedTx:
    """Sign one action with a raw 32-byte private key (see ``Signer.sign``)."""
    return Signer(private_key).sign(action, nonce, account, domain)
