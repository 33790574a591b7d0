"""Benchmark of signature recovery: `python -m bench.bench_sigs [--count N] [--workers W]`.

Prints, for the same set of signed TradeZone actions (a mix of single orders, cancels, modifies
and 8-order batches from 64 devnet-style keys):

- the recovery alone, on precomputed digests: ``recover_address`` (the floor of the hot path:
  its range checks, libsecp256k1 through coincurve's cffi binding, and the address's keccak), and
  the same through coincurve's ``PublicKey`` API for comparison;
- the hot path: ``eip712.tx_digest`` (typed-data hashing by hand) + ``recover_address``;
- the hot path from the wire: ``decode_transaction`` + hashing + recovery;
- eth-account's path: ``typed_data`` + ``encode_typed_data`` + ``Account.recover_message``,
  on a smaller sample (it is two orders of magnitude slower);
- the ratio of the hot path to eth-account's;
- with ``--workers W`` > 0, ``decode_and_recover_many`` over a process pool of W workers;
- the codec alone: ``encode_transaction`` (uncached), ``decode_transaction``, and the
  ``transactions_root`` of a 10,000-transaction block (the ``proofs`` engine, one commit).

Every path's recovered signers are checked against the keys that signed. Figures are wall-clock,
single-threaded unless stated, and depend on the machine's load.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from coincurve import PublicKey
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_hash.auto import keccak

from node.tradezone.blocks import transactions_root
from node.tradezone.eip712 import (
    DEVNET_DOMAIN,
    decode_and_recover_many,
    recover_address,
    tx_digest,
    typed_data,
)
from node.tradezone.signing import Signer
from node.tradezone.transactions import (
    Action,
    CancelOrder,
    ModifyOrder,
    PlaceOrder,
    PlaceOrders,
    SignedTx,
    decode_transaction,
    encode_transaction,
)


def make_actions(count: int) -> list[Action]:
    """A deterministic mix: 50% single orders, 20% cancels, 20% modifies, 10% 8-order batches."""
    result: list[Action] = []
    for i in range(count):
        slot = i % 10
        if slot < 5:
            result.append(PlaceOrder(1 + i % 3, i % 2, 6_400_000 + i % 500, 1 + i % 97, i % 3, False, i))
        elif slot < 7:
            result.append(CancelOrder(1 + i % 3, 10_000 + i))
        elif slot < 9:
            result.append(ModifyOrder(1 + i % 3, 10_000 + i, 6_400_000 + i % 400, 1 + i % 50))
        else:
            result.append(PlaceOrders(tuple(PlaceOrder(1, k % 2, 6_400_000 + k, 1 + k, 0, False, k) for k in range(8))))
    return result


def sign_all(count: int) -> tuple[list[SignedTx], list[bytes]]:
    signers = [Signer((i + 1).to_bytes(32, "big")) for i in range(64)]
    txs, expected = [], []
    for i, action in enumerate(make_actions(count)):
        signer = signers[i % len(signers)]
        txs.append(signer.sign(action, i // len(signers)))
        expected.append(signer.address)
    return txs, expected


def fresh(tx: SignedTx) -> SignedTx:
    """A copy without the signer cached at signing time, so recovery really runs."""
    return SignedTx(tx.action, tx.account, tx.nonce, tx.signature)


def rate(label: str, count: int, run: Callable[[], list[bytes]], expected: list[bytes]) -> float:
    start = time.perf_counter()
    got = run()
    elapsed = time.perf_counter() - start
    if got != expected:
        raise SystemExit(f"{label}: recovered signers differ from the signing keys")
    per_second = count / elapsed
    print(f"{label:<58} {per_second:>10,.0f} /s   ({elapsed * 1e6 / count:,.1f} us each, n={count:,})")
    return per_second


def codec(txs: list[SignedTx]) -> None:
    """Print the codec's rates and the transactions root's time over ``txs``."""
    copies = [fresh(tx) for tx in txs]
    start = time.perf_counter()
    raws = [encode_transaction(tx) for tx in copies]
    elapsed = time.perf_counter() - start
    print(f"{'encode_transaction (uncached)':<58} {len(txs) / elapsed:>10,.0f} /s")
    start = time.perf_counter()
    decoded = [decode_transaction(raw) for raw in raws]
    elapsed = time.perf_counter() - start
    if decoded != txs:
        raise SystemExit("decoding did not give the encoded transactions back")
    print(f"{'decode_transaction':<58} {len(txs) / elapsed:>10,.0f} /s")
    start = time.perf_counter()
    transactions_root(decoded)
    elapsed = time.perf_counter() - start
    print(f"{f'transactions_root of {len(txs):,} transactions':<58} {elapsed * 1e3:>10,.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="signed actions for the fast paths")
    parser.add_argument("--slow-count", type=int, default=1_000, help="signed actions for eth-account's path")
    parser.add_argument("--workers", type=int, default=0, help="also run a process pool of this size")
    args = parser.parse_args()

    print(f"signing {args.count:,} actions (untimed); load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cpus")
    txs, expected = sign_all(args.count)
    raws = [encode_transaction(tx) for tx in txs]
    digests = [tx_digest(tx) for tx in txs]
    signatures = [tx.signature[:64] + bytes((tx.signature[64] - 27,)) for tx in txs]

    def recovery_alone() -> list[bytes]:
        return [recover_address(digest, tx.signature) for tx, digest in zip(txs, digests, strict=True)]

    def coincurve_api() -> list[bytes]:
        return [
            keccak(PublicKey.from_signature_and_message(sig, digest, hasher=None).format(compressed=False)[1:])[12:]
            for sig, digest in zip(signatures, digests, strict=True)
        ]

    def hot_path() -> list[bytes]:
        return [recover_address(tx_digest(tx), tx.signature) for tx in map(fresh, txs)]

    def from_wire() -> list[bytes]:
        out = []
        for raw in raws:
            tx = decode_transaction(raw)
            if not isinstance(tx, SignedTx):
                raise SystemExit("decoded an L1 message where a signed transaction was encoded")
            out.append(recover_address(tx_digest(tx), tx.signature))
        return out

    slow = min(args.slow_count, args.count)

    def eth_account_path() -> list[bytes]:
        out = []
        for tx in txs[:slow]:
            message = encode_typed_data(full_message=typed_data(tx.action, tx.account, tx.nonce))
            out.append(bytes.fromhex(Account.recover_message(message, signature=tx.signature)[2:]))
        return out

    rate("recovery alone: recover_address, digest given", args.count, recovery_alone, expected)
    rate("recovery alone: coincurve's PublicKey API, digest given", args.count, coincurve_api, expected)
    ours = rate("hot path: EIP-712 hashing by hand + recovery", args.count, hot_path, expected)
    rate("hot path from the wire: decode + hashing + recovery", args.count, from_wire, expected)
    theirs = rate("eth-account: encode_typed_data + recover_message", slow, eth_account_path, expected[:slow])
    print(f"{'ratio hot path / eth-account':<58} {ours / theirs:>10.1f} x")

    codec(txs[:10_000])

    if args.workers > 0:
        chunk = 500
        chunks = [raws[i : i + chunk] for i in range(0, len(raws), chunk)]
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            list(pool.map(decode_and_recover_many, chunks[:1]))  # start the workers, untimed

            def pooled() -> list[bytes]:
                signers: list[bytes] = []
                for part in pool.map(decode_and_recover_many, chunks):
                    for result in part:
                        if not isinstance(result, SignedTx):
                            raise SystemExit(f"a worker rejected a transaction: {result}")
                        signers.append(result.cached_signer(DEVNET_DOMAIN.separator) or b"")
                return signers

            rate(f"process pool, {args.workers} workers: decode + recover", args.count, pooled, expected)


if __name__ == "__main__":
    main()
