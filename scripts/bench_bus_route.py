#!/usr/bin/env python3
"""Redis CPU per batch routed by the node bus's script (server/cluster/bus.py), read from a
redis-server of this script's own with psutil: the node subscribed (PUBLISH reaches it), and
the node not subscribed (the batch goes to its backlog instead).

    python scripts/bench_bus_route.py --batches 20000 --events 8
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server.cluster.bus import _ROUTE, BACKLOG_MAX, BACKLOG_TTL_MS, TO_USER, encode_record  # noqa: E402
from server.cluster.store import Keys  # noqa: E402
from tests.cluster_helpers import RedisProcess  # noqa: E402


def redis_cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=20000)
    parser.add_argument("--events", type=int, default=8, help="events per batch, all to users of one node")
    args = parser.parse_args()
    server = RedisProcess(Path(tempfile.mkdtemp(prefix="bench-bus-")))
    server.start()
    client = redis.Redis.from_url(server.url)
    keys = Keys("bench:")
    proc = psutil.Process(server.process.pid)
    client.hset(keys.directory, mapping={str(u): f"b|{u}|t" for u in range(1, args.events + 1)})
    batch: list = []
    for user in range(1, args.events + 1):
        batch += [str(user), encode_record(TO_USER, user, b"x" * 120)]
    route = client.register_script(_ROUTE)

    def run(label: str) -> None:
        before = redis_cpu(proc)
        for _ in range(args.batches):
            route(keys=[keys.directory], args=[keys.node_prefix, BACKLOG_MAX, BACKLOG_TTL_MS, *batch])
        per_batch = (redis_cpu(proc) - before) / args.batches * 1e6
        print(f"{label}: Redis {per_batch:.1f} µs per batch of {args.events}, {per_batch / args.events:.2f} µs per event")

    listener = client.pubsub()
    listener.subscribe(keys.channel("b"))
    listener.get_message(timeout=1)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            listener.get_message(timeout=0.1)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        run("node subscribed (PUBLISH)")
        stop.set()
        reader.join()
        listener.unsubscribe()
        listener.get_message(timeout=1)
        run("node not subscribed (backlog)")
    finally:
        listener.close()
        client.close()
        server.stop()


if __name__ == "__main__":
    main()
