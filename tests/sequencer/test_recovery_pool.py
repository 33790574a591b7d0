"""The signature-recovery pool: real worker processes, fed from the event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from node.sequencer.recovery import DECODE_AND_RECOVER, RECOVER, RecoveryPool, RecoveryPoolError
from node.tradezone.eip712 import DEVNET_DOMAIN, decode_and_recover_many
from node.tradezone.errors import BadSignature, DecodeError
from node.tradezone.signing import Signer
from node.tradezone.transactions import PlaceOrder, decode_transaction, encode_transaction

from .conftest import TRADERS

ALICE, BOB = Signer(TRADERS[0].private_key), Signer(TRADERS[1].private_key)


def _raws(signer: Signer, count: int, start: int = 0) -> list[bytes]:
    return [encode_transaction(signer.sign(PlaceOrder(100, 0, 10 + n % 30, 1, 2, False, 0), n))
            for n in range(start, start + count)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_jobs_give_what_recovering_in_the_node_gives_bad_input_included() -> None:
    good = _raws(ALICE, 40) + _raws(BOB, 40)
    tampered = bytearray(good[3])
    tampered[-5] ^= 0x01  # inside the signature
    raws = [*good, bytes(tampered), b"\x01\x02", b""]

    async def main() -> tuple[list[object], list[object]]:
        pool = RecoveryPool(2, DEVNET_DOMAIN)
        pool.start()
        try:
            decoded = await pool.run(DECODE_AND_RECOVER, raws)
            signers = await pool.run(RECOVER, [decode_transaction(raw) for raw in good])
        finally:
            pool.close()
        return decoded, signers

    decoded, signers = asyncio.run(main())
    expected = decode_and_recover_many(raws, DEVNET_DOMAIN)
    assert len(decoded) == len(expected) == len(raws)
    for got, want in zip(decoded, expected, strict=True):
        assert type(got) is type(want)
        if isinstance(want, Exception):
            assert str(got) == str(want)
        else:
            assert got.cached_signer(DEVNET_DOMAIN.separator) == want.cached_signer(DEVNET_DOMAIN.separator)
    assert isinstance(decoded[-3], BadSignature) or decoded[-3].cached_signer(DEVNET_DOMAIN.separator) != ALICE.address
    assert isinstance(decoded[-2], DecodeError) and isinstance(decoded[-1], DecodeError)
    assert signers == [ALICE.address] * 40 + [BOB.address] * 40


def test_more_jobs_than_the_workers_hold_are_all_answered_in_their_own_order() -> None:
    jobs = [_raws(ALICE if n % 2 else BOB, 7, start=7 * n) for n in range(40)]

    async def main() -> list[list[object]]:
        pool = RecoveryPool(2, DEVNET_DOMAIN)
        pool.start()
        try:
            return await asyncio.gather(*(pool.run(DECODE_AND_RECOVER, job) for job in jobs))
        finally:
            pool.close()

    answers = asyncio.run(main())
    for n, (job, answer) in enumerate(zip(jobs, answers, strict=True)):
        signer = ALICE if n % 2 else BOB
        assert [tx.nonce for tx in answer] == [decode_transaction(raw).nonce for raw in job]
        assert {tx.cached_signer(DEVNET_DOMAIN.separator) for tx in answer} == {signer.address}


def test_a_dead_worker_fails_its_jobs_and_is_replaced() -> None:
    async def main() -> None:
        pool = RecoveryPool(1, DEVNET_DOMAIN)
        pool.start()
        try:
            (victim,) = pool.pids()
            assert len(await pool.run(DECODE_AND_RECOVER, _raws(ALICE, 3))) == 3
            big = _raws(ALICE, 400)
            jobs = [asyncio.ensure_future(pool.run(DECODE_AND_RECOVER, big)) for _ in range(8)]
            await asyncio.sleep(0.005)  # jobs sent; each takes far longer than this to answer
            os.kill(victim, signal.SIGKILL)
            outcomes = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 30)
            failed = [o for o in outcomes if isinstance(o, RecoveryPoolError)]
            assert failed, outcomes  # what the dead worker held fails, with the pool's error
            assert all(isinstance(o, RecoveryPoolError) or len(o) == 400 for o in outcomes)
            (replacement,) = pool.pids()
            assert replacement != victim
            answer = await pool.run(DECODE_AND_RECOVER, _raws(BOB, 5))
            assert {tx.cached_signer(DEVNET_DOMAIN.separator) for tx in answer} == {BOB.address}
        finally:
            pool.close()

    asyncio.run(main())


def test_closing_fails_waiting_jobs_and_leaves_no_worker_behind() -> None:
    async def main() -> list[int]:
        pool = RecoveryPool(2, DEVNET_DOMAIN)
        pool.start()
        pids = pool.pids()
        jobs = [asyncio.ensure_future(pool.run(DECODE_AND_RECOVER, _raws(ALICE, 300))) for _ in range(8)]
        await asyncio.sleep(0)  # dispatched: two per worker, the rest waiting in the node
        pool.close()
        outcomes = await asyncio.wait_for(asyncio.gather(*jobs, return_exceptions=True), 30)
        assert all(isinstance(o, RecoveryPoolError) for o in outcomes)
        with pytest.raises(RecoveryPoolError):
            await pool.run(DECODE_AND_RECOVER, _raws(ALICE, 1))
        return pids

    pids = asyncio.run(main())
    assert len(pids) == 2
    assert not any(_alive(pid) for pid in pids)


def test_map_splits_a_request_across_the_workers_and_keeps_its_order() -> None:
    raws = [raw for n in range(3) for raw in _raws(Signer((0xA11CE + n).to_bytes(32, "big")), 100)]

    async def main() -> list[object]:
        pool = RecoveryPool(2, DEVNET_DOMAIN)
        pool.start()
        try:
            return await pool.map(DECODE_AND_RECOVER, raws)
        finally:
            pool.close()

    answers = asyncio.run(main())
    expected = decode_and_recover_many(raws, DEVNET_DOMAIN)
    assert [(tx.account, tx.nonce, tx.cached_signer(DEVNET_DOMAIN.separator)) for tx in answers] == [
        (tx.account, tx.nonce, tx.cached_signer(DEVNET_DOMAIN.separator)) for tx in expected
    ]


def test_answers_that_waited_while_the_loop_was_busy_are_all_taken_in_one_turn() -> None:
    """A block keeps the loop busy while the workers go on answering; when the loop is free again,
    one turn takes every answer written so far, instead of one answer per turn behind every other
    ready callback."""
    raws = _raws(ALICE, 8)

    async def main() -> tuple[int, list[object]]:
        pool = RecoveryPool(1, DEVNET_DOMAIN)
        pool.start()
        try:
            jobs = [asyncio.ensure_future(pool.run(DECODE_AND_RECOVER, [raw])) for raw in raws]
            await asyncio.sleep(0)  # every job is sent
            time.sleep(1.0)  # the loop is busy; the worker answers all eight meanwhile
            await asyncio.sleep(0)
            await asyncio.sleep(0)  # one turn of the loop has run the worker's reader once
            left = sum(len(worker.outstanding) for worker in pool._workers)
            return left, await asyncio.gather(*jobs)
        finally:
            pool.close()

    left, answers = asyncio.run(main())
    assert left == 0
    assert [answer[0].nonce for answer in answers] == list(range(8))  # type: ignore[index]


def test_a_request_split_over_workers_resumes_its_caller_one_turn_after_its_last_answer() -> None:
    """The answer that completes a ``map`` sets the request's one future, so the caller goes on at
    the next turn of the loop; a turn can wait behind a whole block, so every turn counts."""
    raws = _raws(ALICE, 80) + _raws(BOB, 80)

    async def main() -> tuple[bool, list[object]]:
        pool = RecoveryPool(2, DEVNET_DOMAIN)
        pool.start()
        try:
            request = asyncio.ensure_future(pool.map(DECODE_AND_RECOVER, raws))
            await asyncio.sleep(0)  # the request's jobs (several) are sent
            assert sum(len(worker.outstanding) for worker in pool._workers) > 1
            time.sleep(1.0)  # the loop is busy; both workers answer meanwhile
            await asyncio.sleep(0)  # turn 1: the readers take the answers
            await asyncio.sleep(0)  # turn 2: the request's caller resumes and returns
            await asyncio.sleep(0)
            return request.done(), await request
        finally:
            pool.close()

    done, answers = asyncio.run(main())
    assert done
    assert answers == decode_and_recover_many(raws, DEVNET_DOMAIN)
