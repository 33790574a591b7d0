"""The signature-recovery pool: worker processes that decode raw transactions and recover their
signers, fed directly from the event loop.

Each worker has one socket pair to the node. The event loop writes a job (pickled) to it and
reads the answer when the socket turns readable, so a job reaches a worker and its answer reaches
the loop without passing through helper threads. (``concurrent.futures.ProcessPoolExecutor``
hands every job and answer to two threads of the node's process, and each of them must win the
GIL from a busy event loop; under load those handoffs were a large part of a request's wait.)

Jobs queue in each worker's socket, so a worker keeps working while the event loop is busy (with
a block, say), but never more than ``QUEUED_BYTES`` of them: a socket pair takes about 180 KiB
before a write blocks, so no write ever blocks the event loop (and a worker blocked on writing an
answer can never leave the loop blocked writing it a job). Further jobs wait in the node. A worker
that dies is replaced, and its outstanding jobs fail with ``RecoveryPoolError``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from node.tradezone.eip712 import Domain, decode_and_recover_many, recover_many

log = logging.getLogger(__name__)

MIN_JOB = 32  # `map` splits a request across the workers, but not below this many items per job
MAX_JOB = 512
PER_WORKER = 16  # jobs outstanding at one worker, at most
QUEUED_BYTES = 128 * 1024  # bytes of jobs outstanding at one worker, at most (one job always may be)
DECODE_AND_RECOVER = 0  # raw bytes in, decoded transactions (or their errors) out
RECOVER = 1  # decoded transactions in, signers (or None) out


class RecoveryPoolError(RuntimeError):
    """A job the pool could not finish (its worker died, or the pool was closed)."""


def exit_with_parent(parent: int, interval: float = 0.5) -> None:
    """In a recovery worker: exit as soon as the node process that started it is gone.

    A node killed with SIGKILL cannot shut its pool down, and an idle worker waiting on its
    socket would otherwise live on, orphaned, holding its share of the node's memory."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _serve(conn: Connection, parent: int, domain: Domain) -> None:
    """A worker's life: answer jobs until the node closes the socket or goes away."""
    exit_with_parent(parent)
    while True:
        try:
            job = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not job:
            return
        ticket, kind, items = pickle.loads(job)
        try:
            result: Any = decode_and_recover_many(items, domain) if kind == DECODE_AND_RECOVER else recover_many(
                items, domain)
        except Exception as err:  # an answer the node can raise, never a silent worker
            result = RecoveryPoolError(f"recovery worker failed: {err!r}")
        conn.send((ticket, result))


class _Part:
    """Where the answer to one job of a ``map`` goes: its place in the request's answers. The
    answer that completes the request sets the request's one future, so its caller resumes at the
    next turn of the loop (a task and a future per job, joined by ``gather``, took three turns, and
    each turn may wait behind a block)."""

    __slots__ = ("request", "answers", "index", "left")

    def __init__(self, request: asyncio.Future[list[Any]], answers: list[Any], index: int, left: list[int]) -> None:
        self.request = request
        self.answers = answers
        self.index = index
        self.left = left  # jobs of the request not answered yet (one counter, shared by its parts)

    def done(self) -> bool:
        return self.request.done()

    def set_result(self, answer: list[Any]) -> None:
        self.answers[self.index] = answer
        self.left[0] -= 1
        if not self.left[0]:
            self.request.set_result([item for part in self.answers for item in part])

    def set_exception(self, error: BaseException) -> None:
        self.request.set_exception(error)


_Answer = asyncio.Future[Any] | _Part  # where a job's answer goes


class _Worker:
    __slots__ = ("process", "conn", "outstanding", "queued")

    def __init__(self, process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
        self.process = process
        self.conn = conn
        self.outstanding: dict[int, tuple[_Answer, int]] = {}  # ticket: (where the answer goes, job bytes)
        self.queued = 0  # bytes of the outstanding jobs


class RecoveryPool:
    """``size`` worker processes for one event loop (the one that calls ``start``)."""

    def __init__(self, size: int, domain: Domain) -> None:
        if size < 1:
            raise ValueError("a recovery pool needs at least one worker")
        self.size = size
        self.domain = domain
        self._context = multiprocessing.get_context("fork")
        self._workers: list[_Worker] = []
        self._waiting: deque[tuple[int, bytes, _Answer]] = deque()
        self._tickets = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for _ in range(self.size):
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        assert self._loop is not None
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(target=_serve, args=(theirs, os.getpid(), self.domain),
                                        name="exos-recovery", daemon=True)
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        self._loop.add_reader(ours.fileno(), self._answer, worker)
        return worker

    async def map(self, kind: int, items: Sequence[Any]) -> list[Any]:
        """The answers for ``items`` in order, split into jobs as even as the bounds allow (at
        least ``MIN_JOB`` and at most ``MAX_JOB`` items each), so the workers share a request."""
        size = min(MAX_JOB, max(MIN_JOB, -(-len(items) // self.size)))
        if len(items) <= size:
            return list(await self.run(kind, items))
        if self._closed or self._loop is None:
            raise RecoveryPoolError("the recovery pool is not running")
        request: asyncio.Future[list[Any]] = self._loop.create_future()
        starts = range(0, len(items), size)
        answers: list[Any] = [None] * len(starts)
        left = [len(starts)]
        for index, start in enumerate(starts):
            self._queue(kind, items[start : start + size], _Part(request, answers, index, left))
        self._dispatch()
        return await request

    async def run(self, kind: int, items: Sequence[Any]) -> Any:
        """The answer to one job: ``decode_and_recover_many`` or ``recover_many`` over ``items``."""
        if self._closed or self._loop is None:
            raise RecoveryPoolError("the recovery pool is not running")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue(kind, items, future)
        self._dispatch()
        return await future

    def _queue(self, kind: int, items: Sequence[Any], answer: _Answer) -> None:
        ticket = next(self._tickets)
        self._waiting.append((ticket, pickle.dumps((ticket, kind, items), pickle.HIGHEST_PROTOCOL), answer))

    def _dispatch(self) -> None:
        while self._waiting:
            worker = min(self._workers, key=lambda w: w.queued)
            ticket, job, future = self._waiting[0]
            if worker.outstanding and (len(worker.outstanding) >= PER_WORKER
                                       or worker.queued + len(job) > QUEUED_BYTES):
                return
            self._waiting.popleft()
            if future.done():  # its caller gave up (cancelled)
                continue
            try:
                worker.conn.send_bytes(job)
            except (OSError, ValueError):
                self._waiting.appendleft((ticket, job, future))
                self._lost(worker)
                continue
            worker.outstanding[ticket] = (future, len(job))
            worker.queued += len(job)

    def _answer(self, worker: _Worker) -> None:
        """Take every answer the worker has written so far (one callback, however many: after the
        loop was busy with a block, answers that waited are admitted at once, not one per turn of
        the loop behind every other ready callback), then send it more jobs."""
        try:
            while True:
                ticket, result = worker.conn.recv()
                future, size = worker.outstanding.pop(ticket, (None, 0))
                worker.queued -= size
                if future is not None and not future.done():
                    if isinstance(result, RecoveryPoolError):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                if not worker.outstanding or not worker.conn.poll(0):
                    break
        except (EOFError, OSError):
            self._lost(worker)
        self._dispatch()

    def _lost(self, worker: _Worker) -> None:
        """A worker died: fail what it held and put a new one in its place."""
        assert self._loop is not None
        self._loop.remove_reader(worker.conn.fileno())
        worker.conn.close()
        worker.process.join(timeout=0)
        for future, _size in worker.outstanding.values():
            if not future.done():
                future.set_exception(RecoveryPoolError("a signature-recovery worker died"))
        worker.outstanding.clear()
        worker.queued = 0
        self._workers.remove(worker)
        if not self._closed:
            log.error("a signature-recovery worker died (exit code %s); starting another",
                      worker.process.exitcode)
            self._workers.append(self._spawn())

    def close(self, timeout: float = 2.0) -> None:
        """Stop the workers; jobs still waiting or outstanding fail with ``RecoveryPoolError``."""
        self._closed = True
        for _ticket, _job, future in self._waiting:
            if not future.done():
                future.set_exception(RecoveryPoolError("the recovery pool was closed"))
        self._waiting.clear()
        for worker in self._workers:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(worker.conn.fileno())
            for future, _size in worker.outstanding.values():
                if not future.done():
                    future.set_exception(RecoveryPoolError("the recovery pool was closed"))
            try:
                worker.conn.send_bytes(b"")
            except (OSError, ValueError):
                pass
            worker.conn.close()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1.0)
        self._workers = []

    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self._workers if worker.process.pid is not None]
