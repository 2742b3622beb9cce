#!/usr/bin/env python3
"""Server CPU per durable chat message, read from the server process itself.

Starts the server as its own process (SQLite or MySQL), runs the load test's ``chat`` scenario
against it (raw-frame clients in worker processes: PAIRS pairs of friends, both sides sending,
receipts every 200 ms), and samples the server's CPU time per thread with psutil. Over the load
test's steady phase it reports the server's CPU per delivered message, split into the reactor
(the main thread) and the other threads (chat writer, worker pool), the reactor's system time
(the kernel's share: socket calls, waits, wake-ups) and its loop iterations per message, the
writer's jobs (messages and receipt batches) per commit, and the senders' wait for the
acknowledgement.

    python scripts/bench_chat_load.py --pairs 100 --duration 10              # flat out
    python scripts/bench_chat_load.py --pairs 100 --duration 10 --rate 3000  # paced
    python scripts/bench_chat_load.py --db mysql --rate 3000
"""
from __future__ import annotations

import argparse
import bisect
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import fresh_database, percentile, print_profile, py_spy  # noqa: E402
from client.loadtest.runner import run as run_load  # noqa: E402
from server.admin import query_status  # noqa: E402
from client.loadtest.worker import Settings  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

SAMPLE_EVERY = 0.1


class CpuSampler(threading.Thread):
    """(monotonic time, reactor CPU s, other threads' CPU s, reactor system CPU s) of one
    process, every SAMPLE_EVERY s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.samples: list[tuple[float, float, float, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        pid = self.process.pid
        while not self.stopping.wait(SAMPLE_EVERY):
            try:
                threads = self.process.threads()
            except psutil.Error:
                return
            reactor = sum(t.user_time + t.system_time for t in threads if t.id == pid)
            others = sum(t.user_time + t.system_time for t in threads if t.id != pid)
            reactor_system = sum(t.system_time for t in threads if t.id == pid)
            self.samples.append((time.monotonic(), reactor, others, reactor_system))

    def at(self, when: float) -> tuple[float, float, float]:
        """CPU seconds (reactor, others, reactor system) at ``when``, from the nearest sample at
        or before it."""
        index = max(0, bisect.bisect_right([s[0] for s in self.samples], when) - 1)
        return self.samples[index][1:]


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-chat-load-"))
    url, drop = fresh_database(args.db, tmp)
    server = ServerProcess(url, tmp / "data", env={"MEETING_MESSAGES_PER_MINUTE": "0",
                                                    "MEETING_MAX_UNAUTHENTICATED_PER_ADDRESS": "100000",
                                                    "MEETING_REGISTRATIONS_PER_MINUTE_PER_ADDRESS": "0"})
    port = server.start()
    sampler = CpuSampler(server.process.pid)
    sampler.start()
    try:
        settings = Settings(scenario="chat", servers=[("127.0.0.1", port)], clients=2 * args.pairs,
                            processes=args.procs,
                            ramp=500.0, duration=args.duration, rate=args.rate, window=args.window,
                            message_size=args.size)
        before = query_status(tmp / "data" / "admin.sock")
        t0 = time.monotonic()
        with py_spy(server.process.pid, args.profile, skip=3.0):   # past logins and befriending
            result = run_load(settings, show_progress=False)
        sampler.stopping.set()
        sampler.join()
        after = query_status(tmp / "data" / "admin.sock")
        if result.failures or not result.steady:
            raise SystemExit(f"the load test failed: {result.failures or 'no steady phase'}")
        start, end = (t0 + s for s in result.steady)
        reactor0, others0, system0 = sampler.at(start)
        reactor1, others1, system1 = sampler.at(end)
        seconds = end - start
        # the load test counts deliveries over its whole run and reports them per second of
        # the steady phase, where nearly all of them happen; the same figure is used here
        messages = max(1, result.metrics.counters.get("chat_delivered", 0))
        cpu = reactor1 + others1 - reactor0 - others0
        # the senders' wait for the acknowledgement, over the steady phase
        acks = [ms for when, ms in zip(result.metrics.when.get("chat_ack", ()), result.metrics.ms.get("chat_ack", ()))
                if result.steady[0] <= when <= result.steady[1]]
        return {"db": args.db, "pairs": args.pairs, "rate_asked": args.rate, "steady_s": round(seconds, 2),
                "messages_per_s": round(messages / seconds), "delivered": messages,
                "undelivered": result.metrics.counters.get("chat_undelivered", 0),
                "server_cpu_pct": round(100 * cpu / seconds, 1),
                "us_per_message": round(1e6 * cpu / messages, 1),
                "reactor_us": round(1e6 * (reactor1 - reactor0) / messages, 1),
                "reactor_system_us": round(1e6 * (system1 - system0) / messages, 1),
                "reactor_loops_per_message": round((after["reactor_loops"] - before["reactor_loops"]) / messages, 2),
                "other_threads_us": round(1e6 * (others1 - others0) / messages, 1),
                "jobs_per_commit": round((after["chat_jobs_committed"] - before["chat_jobs_committed"])
                                         / max(1, after["chat_batches"] - before["chat_batches"]), 1),
                "ack_p50_ms": round(percentile(acks, 50), 2), "ack_p99_ms": round(percentile(acks, 99), 2),
                "rss_mib": round(psutil.Process(server.process.pid).memory_info().rss / 2 ** 20, 1)}
    finally:
        sampler.stopping.set()
        server.terminate()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "mysql"), default="sqlite")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of steady load")
    parser.add_argument("--rate", type=float, default=0.0, help="messages per second in all (0: flat out)")
    parser.add_argument("--window", type=int, default=8, help="unacknowledged messages per sender when flat out")
    parser.add_argument("--size", type=int, default=64, help="bytes of text per message")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--profile", metavar="FILE", help="record the server with py-spy into FILE (collapsed stacks)")
    args = parser.parse_args()
    print(json.dumps(run(args)))
    print_profile(args.profile)


if __name__ == "__main__":
    main()
