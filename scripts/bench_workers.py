#!/usr/bin/env python3
"""Server CPU per chat message with 1 or N server processes at the same load.

Starts ``meeting-server`` as its own process tree (``--workers N``: the supervisor and its
workers; N = 1 is the plain single process), runs the load test's ``chat`` scenario against
it at a fixed total rate (raw-frame clients in load processes; pairs of friends, both sides
sending), and samples the CPU time of every server process with psutil. Over the steady phase
it reports the CPU of all server processes per delivered message, the same per process, and
the CPU per message of the redis-server started for the run (``--redis``).

    python scripts/bench_workers.py --workers 1 --rate 2000                        # SQLite
    python scripts/bench_workers.py --workers 1 --rate 2000 --db mysql --redis
    python scripts/bench_workers.py --workers 2 --rate 2000 --db mysql --redis

With several workers the kernel spreads the connections (SO_REUSEPORT), so about half the pairs
of friends are on different workers and their messages cross through Redis.
"""
from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import fresh_database  # noqa: E402
from client.loadtest.runner import run as run_load  # noqa: E402
from client.loadtest.worker import Settings  # noqa: E402
from server.admin import query_status  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

SAMPLE_EVERY = 0.1


class TreeSampler(threading.Thread):
    """(monotonic time, {pid: CPU seconds}) of a process and its children, and of the ``extra``
    processes, every SAMPLE_EVERY s."""

    def __init__(self, pid: int, extra: list[psutil.Process]) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.extra = extra
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY):
            cpu = {}
            for process in [self.root, *self.root.children(recursive=True), *self.extra]:
                try:
                    times = process.cpu_times()
                except psutil.Error:
                    continue
                cpu[process.pid] = times.user + times.system
            self.samples.append((time.monotonic(), cpu))

    def at(self, when: float) -> dict[int, float]:
        index = max(0, bisect.bisect_right([s[0] for s in self.samples], when) - 1)
        return self.samples[index][1]


@contextlib.contextmanager
def private_redis() -> Iterator[tuple[str, psutil.Process]]:
    """A redis-server of the benchmark's own on a free port (no persistence), so its CPU is this
    run's alone; yields its URL and process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}", psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(10)


def wait_all_ready(admin: Path, workers: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = query_status(admin)
        states = [w["state"] for w in status.get("supervisor", {}).get("workers", [])]
        if workers == 1 or states == ["ready"] * workers:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the workers are not all ready: {states}")
        time.sleep(0.1)


def run(args: argparse.Namespace) -> dict:
    if not args.redis:
        return measure(args, "", None)
    with private_redis() as (url, redis):
        return measure(args, url, redis)


def measure(args: argparse.Namespace, redis_url: str, redis: psutil.Process | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    url, drop = fresh_database(args.db, tmp)
    extra = ("--workers", str(args.workers)) + (("--redis", redis_url) if redis_url else ())
    server = ServerProcess(url, tmp / "data", args=extra,
                           env={"MEETING_MESSAGES_PER_MINUTE": "0", "MEETING_MAX_UNAUTHENTICATED_PER_ADDRESS": "100000",
                                "MEETING_NODE_NAME": f"bench-{tmp.name[-6:]}"})
    port = server.start()
    try:
        wait_all_ready(tmp / "data" / "admin.sock", args.workers)
        sampler = TreeSampler(server.process.pid, [redis] if redis else [])
        sampler.start()
        settings = Settings(scenario="chat", servers=[("127.0.0.1", port)], clients=2 * args.pairs,
                            processes=args.procs, ramp=500.0, duration=args.duration, rate=args.rate,
                            message_size=args.size)
        t0 = time.monotonic()
        result = run_load(settings, show_progress=False)
        sampler.stopping.set()
        sampler.join()
        if result.failures or not result.steady:
            raise SystemExit(f"the load test failed: {result.failures or 'no steady phase'}")
        start, end = (t0 + s for s in result.steady)
        before, after = sampler.at(start), sampler.at(end)
        seconds = end - start
        messages = max(1, result.metrics.counters.get("chat_delivered", 0))
        per_process = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
        redis_cpu = per_process.pop(redis.pid, 0.0) if redis else 0.0
        cpu = sum(per_process.values())
        return {"workers": args.workers, "db": args.db, "redis": bool(args.redis), "pairs": args.pairs,
                "rate_asked": args.rate, "steady_s": round(seconds, 2), "messages_per_s": round(messages / seconds),
                "undelivered": result.metrics.counters.get("chat_undelivered", 0),
                "errors": sum(result.metrics.errors.values()),
                "server_cpu_pct": round(100 * cpu / seconds, 1),
                "us_per_message": round(1e6 * cpu / messages, 1),
                "us_per_message_by_process": sorted(round(1e6 * c / messages, 1) for c in per_process.values()),
                "redis_us_per_message": round(1e6 * redis_cpu / messages, 1)}
    finally:
        server.terminate(timeout=40)
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--redis", action="store_true",
                        help="nodes share a redis-server started for the run (needed by --workers > 1)")
    parser.add_argument("--db", choices=("sqlite", "mysql"), default="sqlite")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second in all (0: flat out)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of steady load")
    parser.add_argument("--size", type=int, default=64, help="bytes of text per message")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
