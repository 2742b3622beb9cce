"""The group-commit writer's hand-overs: a loop iteration's jobs reach the writer thread in one
go, and its results come back to the reactor in one call."""
from __future__ import annotations

import threading
import time

from server.chat_writer import GroupCommitWriter, Job
from server.reactor import Reactor

JOBS = 40


def test_jobs_of_one_loop_iteration_are_one_batch_and_one_delivery(storage):
    for _ in range(5):      # a race would show only sometimes: try it a few times
        batches: list[int] = []
        delivered_in_loop: list[int] = []
        all_done = threading.Event()
        reactor = Reactor()

        def store(cur, items):
            batches.append(len(items))
            cur.execute("UPDATE meta SET value = value WHERE name = ?", ("schema_version",))
            return list(items)

        writer = GroupCommitWriter(storage.db, reactor, {"echo": store}, max_batch=256)

        def done(result, error):
            assert error is None
            delivered_in_loop.append(reactor.loop_count)
            if len(delivered_in_loop) == JOBS:
                all_done.set()

        def submit_all():
            for n in range(JOBS):
                writer.submit(Job("echo", n, done))
                time.sleep(0.001)     # the writer thread has every chance to start early

        thread = threading.Thread(target=reactor.run, daemon=True)
        thread.start()
        try:
            reactor.call_soon_threadsafe(submit_all)
            assert all_done.wait(10), f"{len(delivered_in_loop)} of {JOBS} jobs delivered"
        finally:
            reactor.call_soon_threadsafe(writer.stop)
            reactor.stop()
            thread.join(10)
            reactor.close()
        assert batches == [JOBS]
        assert len(set(delivered_in_loop)) == 1, "the results came back in more than one reactor call"


def test_batches_start_at_most_every_min_interval_unless_a_batch_is_full(storage):
    """A job after a quiet spell is written at once; the next jobs gather for the rest of the
    interval, unless a full batch is already waiting."""
    interval = 0.5
    starts: list[float] = []
    batches: list[list[str]] = []
    submitted: dict[str, float] = {}
    finished = {"a": threading.Event(), "d": threading.Event()}
    reactor = Reactor()

    def store(cur, items):
        starts.append(time.monotonic())
        batches.append(list(items))
        cur.execute("UPDATE meta SET value = value WHERE name = ?", ("schema_version",))
        return list(items)

    writer = GroupCommitWriter(storage.db, reactor, {"echo": store}, max_batch=2, min_interval=interval)

    def done(result, error):
        assert error is None
        if result in finished:
            finished[result].set()

    def submit(*items):
        for item in items:
            submitted[item] = time.monotonic()
            writer.submit(Job("echo", item, done))

    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    try:
        reactor.call_soon_threadsafe(submit, "a")
        assert finished["a"].wait(10)
        reactor.call_soon_threadsafe(submit, "b", "c", "d")    # one hand-over: a full batch and one more
        assert finished["d"].wait(10)
    finally:
        reactor.call_soon_threadsafe(writer.stop)
        reactor.stop()
        thread.join(10)
        reactor.close()
    assert batches == [["a"], ["b", "c"], ["d"]]
    assert starts[0] - submitted["a"] < interval / 2, "the first job waited"
    assert starts[1] - submitted["d"] < interval / 2, "the full batch waited"
    assert starts[2] - starts[1] >= interval, "the last job did not wait for the interval"
