"""Group commit: one thread writes queued jobs in batches, one transaction per batch.

Chat messages and receipts must be durable before they are acknowledged, but one commit (one
fsync) per message caps throughput. Jobs queue up while a batch commits; the writer then takes
everything waiting (up to ``max_batch``) into the next transaction, commits once, and hands
all the results to the reactor with one wake-up. The reactor hands jobs over once per loop
iteration, not once per job, and under load batches start at most every ``MIN_INTERVAL``, so
that each gathers more than one loop iteration's jobs.

Each job has a kind; a batch's jobs of one kind go to that kind's batch function together, so
it can use a few multi-row statements instead of several statements per job (every database
round trip also costs a GIL hand-over in this process). A batch function returns one result per
item, in order; an ``ApiError`` as a result refuses that job only. Any exception rolls the batch
back; its jobs are then retried one per transaction so one bad job cannot sink its neighbours.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from common.errors import ApiError, ErrorCode

if TYPE_CHECKING:
    from .reactor import Reactor
    from .storage.sql import Cursor, Database

log = logging.getLogger("server.chat_writer")

BatchFunction = Callable[["Cursor", list[Any]], list[Any]]

# Seconds between the starts of two batches, at least, unless the queue fills a batch. Under
# load jobs gather for up to this long instead of each loop iteration's few jobs costing a
# commit and two thread wake-ups of their own; a job after a quiet spell is written at once.
MIN_INTERVAL = 0.004


@dataclass
class Job:
    kind: str
    item: Any
    done: Callable[[Any, ApiError | None], None]   # called on the reactor thread after the commit


class GroupCommitWriter:
    def __init__(self, db: "Database", reactor: "Reactor", kinds: dict[str, BatchFunction],
                 max_batch: int = 256, min_interval: float = MIN_INTERVAL) -> None:
        self.db = db
        self.reactor = reactor
        self.kinds = kinds
        self.max_batch = max(1, max_batch)
        self.min_interval = min_interval
        self._last_start = float("-inf")  # monotonic time the last batch was taken
        self._queue: collections.deque[Job] = collections.deque()
        self._incoming: list[Job] = []    # submitted on the reactor during this loop iteration
        self._finished: list[tuple[Job, Any, ApiError | None]] = []
        self._deliver_pending = False     # a _deliver call is queued on the reactor
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.jobs_committed = 0
        self.batches = 0
        self.largest_batch = 0

    def submit(self, job: Job) -> None:
        """Queue a job (any thread). Raises ApiError(SHUTTING_DOWN) once stopping.

        On the reactor thread the job waits for the end of the loop iteration, when ``flush``
        hands all of the iteration's jobs to the writer thread with one wake-up."""
        if job.kind not in self.kinds:
            raise ValueError(f"no batch function for {job.kind!r}")
        if self._stopping:
            raise ApiError(ErrorCode.SHUTTING_DOWN)
        if self.reactor.in_reactor_thread():
            if not self._incoming:
                self.reactor.flush_soon(self)
            self._incoming.append(job)
            return
        self._enqueue([job])

    def flush(self) -> None:
        """Reactor thread, end of a loop iteration: hand this iteration's jobs to the writer."""
        jobs, self._incoming = self._incoming, []
        if jobs:
            self._enqueue(jobs)

    def _enqueue(self, jobs: list[Job]) -> None:
        with self._cond:
            if self._stopping:
                raise ApiError(ErrorCode.SHUTTING_DOWN)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="chat-writer", daemon=True)
                self._thread.start()
            self._queue.extend(jobs)
            self._cond.notify()

    def stop(self, timeout: float = 10.0) -> None:
        """Reactor thread, at shutdown: commit what is queued, then deliver the results at once
        (so acknowledgements leave before the connections close)."""
        self.flush()
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                log.error("the chat writer did not finish within %.0f s", timeout)
        self._deliver()

    def status(self) -> dict[str, int]:
        with self._cond:
            queued = len(self._queue)
        return {"chat_jobs_committed": self.jobs_committed, "chat_batches": self.batches,
                "chat_largest_batch": self.largest_batch, "chat_queue": queued}

    # -- the writer thread ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                early = self._last_start + self.min_interval - time.monotonic()
            if early > 0 and len(self._queue) < self.max_batch:
                time.sleep(early)   # the reactor's hand-overs meanwhile wake nobody
            with self._cond:
                self._last_start = time.monotonic()
                count = min(len(self._queue), self.max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
            results = self._commit(batch)
            self.batches += 1
            self.jobs_committed += len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            with self._cond:
                self._finished.extend(results)
                wake = not self._deliver_pending
                self._deliver_pending = True
            if wake:
                self.reactor.call_soon_threadsafe(self._deliver)

    def _commit(self, batch: list[Job]) -> list[tuple[Job, Any, ApiError | None]]:
        try:
            return self.db.run(lambda cur: self._apply(batch, cur))
        except Exception:
            if len(batch) == 1:
                log.exception("a chat write failed")
                return [(batch[0], None, ApiError(ErrorCode.INTERNAL))]
            log.exception("a batch of %d chat writes failed; retrying them one by one", len(batch))
            results = []
            for job in batch:
                results.extend(self._commit([job]))
            return results

    def _apply(self, batch: list[Job], cur: "Cursor") -> list[tuple[Job, Any, ApiError | None]]:
        """Inside the transaction: each kind's jobs in one call, in order of first appearance."""
        positions: dict[str, list[int]] = {}
        for index, job in enumerate(batch):
            positions.setdefault(job.kind, []).append(index)
        outcomes: list[Any] = [None] * len(batch)
        for kind, indexes in positions.items():
            results = self.kinds[kind](cur, [batch[i].item for i in indexes])
            if len(results) != len(indexes):
                raise RuntimeError(f"the {kind!r} batch function returned {len(results)} results "
                                   f"for {len(indexes)} items")
            for index, result in zip(indexes, results):
                outcomes[index] = result
        return [(job, None, out) if isinstance(out, ApiError) else (job, out, None)
                for job, out in zip(batch, outcomes)]

    # -- back on the reactor -------------------------------------------------------------------------
    def _deliver(self) -> None:
        """Every result committed so far, taken in one hand-over (the writer may have committed
        several batches since it asked for this call)."""
        with self._cond:
            finished, self._finished = self._finished, []
            self._deliver_pending = False
        for job, result, error in finished:
            try:
                job.done(result, error)
            except Exception:
                log.exception("delivering a chat write result failed")
