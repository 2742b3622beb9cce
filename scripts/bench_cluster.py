#!/usr/bin/env python3
"""Server CPU per chat message and per event: one process, and cluster nodes same-node and
cross-node.

Starts server processes on one fresh MySQL database (``python -m server``), logs PAIRS pairs
of friends in, and makes every sender push MESSAGES chat messages (WINDOW unacknowledged at a
time) and then EVENTS typing events (events: routed inline, nothing stored) to its friend.
Reads the CPU time of every server process per thread with psutil before and after each phase
(reactor = the main thread; others = chat writer, worker pool, Redis bus threads) and, in a
cluster, of the Redis server too. Layouts:

* ``single``: one process, no Redis (the default build);
* ``node-local``: one cluster node (Redis), sender and receiver on it;
* ``cross``: two nodes, every sender on node 1 and its friend on node 2;
* ``split``: two nodes, half the pairs on each, both sides of a pair on the same node
  (2 processes at the load ``node-local`` puts on one).

    python scripts/bench_cluster.py --layout cross --pairs 20 --messages 300 --events 300
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import fresh_database  # noqa: E402
from tests.helpers import TestClient, wait_until  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

REDIS_URL = os.environ.get("MEETING_TEST_REDIS_URL", "redis://127.0.0.1:6379")


def cpu(pids: list[int]) -> tuple[float, float]:
    """(reactor CPU s, other threads' CPU s) summed over the processes."""
    reactor = others = 0.0
    for pid in pids:
        for t in psutil.Process(pid).threads():
            if t.id == pid:
                reactor += t.user_time + t.system_time
            else:
                others += t.user_time + t.system_time
    return reactor, others


def redis_cpu() -> float:
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "redis-server" and any(":6379" in part for part in proc.info["cmdline"] or []):
            times = proc.cpu_times()
            return times.user + times.system
    return 0.0


def measure(pids: list[int], clustered: bool, work: int, run) -> dict:
    reactor0, others0 = cpu(pids)
    redis0 = redis_cpu() if clustered else 0.0
    t0 = time.monotonic()
    run()
    seconds = time.monotonic() - t0
    reactor1, others1 = cpu(pids)
    redis1 = redis_cpu() if clustered else 0.0
    servers = reactor1 + others1 - reactor0 - others0
    return {"per_s": round(work / seconds), "server_us": round(1e6 * servers / work, 1),
            "reactor_us": round(1e6 * (reactor1 - reactor0) / work, 1),
            "other_threads_us": round(1e6 * (others1 - others0) / work, 1),
            "redis_us": round(1e6 * (redis1 - redis0) / work, 1)}


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    url, drop = fresh_database("mysql", tmp)
    clustered = args.layout != "single"
    count = 2 if args.layout in ("cross", "split") else 1
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    nodes = []
    clients: list[TestClient] = []
    try:
        for n in range(count):
            env = {"MEETING_MESSAGES_PER_MINUTE": str(args.messages_per_minute), "MEETING_MAX_UNAUTHENTICATED_PER_ADDRESS": "100000",
                   "MEETING_POOL_THREADS": "4"}
            if clustered:
                env.update(MEETING_REDIS=REDIS_URL, MEETING_REDIS_PREFIX=prefix, MEETING_NODE_NAME=f"bench{n}")
            node = ServerProcess(url, tmp / f"node{n}", env=env)
            node.start()
            nodes.append(node)
        pairs = []
        for i in range(args.pairs):
            if args.layout == "cross":
                at_sender, at_receiver = nodes[0], nodes[1]
            else:
                at_sender = at_receiver = nodes[i % count]
            sender, receiver = TestClient(at_sender.port), TestClient(at_receiver.port)
            clients += [sender, receiver]
            sender.register_and_login(f"sender {i}")
            receiver.register_and_login(f"receiver {i}")
            reply = sender.kernel.friends.add(user_id=receiver.kernel.user["id"])
            receiver.kernel.friends.answer(reply["request"]["id"], True)
            pairs.append((sender, receiver))
        for sender, receiver in pairs:
            wait_until(lambda: sender.kernel.friends.is_online(receiver.kernel.user["id"]), 10, "presence")
        pids = [node.process.pid for node in nodes]
        total = args.pairs * args.messages

        def chat() -> None:
            def push(sender: TestClient, to: int) -> None:
                window = threading.Semaphore(args.window)
                for i in range(args.messages):
                    window.acquire()
                    sender.kernel.chat.send(to, f"message {i} " + "x" * 64).acked.add_done_callback(
                        lambda _f: window.release())
            threads = [threading.Thread(target=push, args=(s, r.kernel.user["id"])) for s, r in pairs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wait_until(lambda: sum(r.events.count("chat_message") for _, r in pairs) >= total, 120, "deliveries")

        def typing() -> None:
            for i in range(args.events):
                for sender, receiver in pairs:
                    sender.kernel.chat.typing(receiver.kernel.user["id"], i % 2 == 0)
            wait_until(lambda: sum(r.events.count("typing") for _, r in pairs) >= args.pairs * args.events, 60,
                     "typing events")

        return {"layout": args.layout, "processes": count, "pairs": args.pairs,
                "chat": measure(pids, clustered, total, chat),
                "typing": measure(pids, clustered, args.pairs * args.events, typing)}
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.terminate()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=("single", "node-local", "cross", "split"), default="cross")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--messages", type=int, default=300, help="chat messages per sender")
    parser.add_argument("--events", type=int, default=300, help="typing events per sender")
    parser.add_argument("--window", type=int, default=8, help="unacknowledged messages per sender")
    parser.add_argument("--messages-per-minute", type=int, default=10 ** 9,
                        help="the per-user chat limit (checked on every message, never reached); 0 = unchecked")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
