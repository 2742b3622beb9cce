#!/usr/bin/env python3
"""Live file transfers in a cluster: throughput and server CPU per MiB, same-node and cross-node.

Starts two cluster nodes (``python -m server``, one fresh MySQL database, the Redis at
$MEETING_TEST_REDIS_URL) and, per round, sends a SIZE file of pseudo-random bytes live from a
sender to a recipient (both client cores in this process, the recipient writing to a temporary
directory and checking the SHA-256), alternating the layouts:

* ``same-node``: sender and recipient on node 1 (the relay stays in one process);
* ``cross-node``: sender on node 1, recipient on node 2 (chunks cross in the node bus's
  batches through Redis, acks come back the same way).

Per round: seconds from the recipient's accept to both sides' ``file_done``, and the CPU time
(psutil, user + system) each server process and the Redis server spent in that time, per MiB.
The summary is the median of the rounds.

    python scripts/bench_cluster_files.py                     # 128 MiB, 3 rounds per layout
    python scripts/bench_cluster_files.py --size-mib 256 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_cluster import REDIS_URL, cpu, redis_cpu  # noqa: E402
from benchlib import fresh_database, write_file  # noqa: E402
from tests.helpers import TestClient  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402
from tests.social import befriend  # noqa: E402

MiB = 1024 * 1024


def logged_in(node: ServerProcess, nickname: str) -> TestClient:
    client = TestClient(node.port)
    client.register_and_login(nickname)
    return client


def one_transfer(sender: TestClient, recipient: TestClient, source: Path, inbox: Path, nodes: list[ServerProcess],
                 size: int) -> dict:
    mark_s, mark_r = sender.events.mark(), recipient.events.mark()
    transfer_id = sender.kernel.files.send_file(recipient.kernel.user["id"], source)
    recipient.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id, start=mark_r)
    before = [cpu([n.process.pid]) for n in nodes]
    redis_before = redis_cpu()
    started = time.monotonic()
    recipient.kernel.files.accept(transfer_id, directory=inbox)
    done = recipient.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=600,
                                     start=mark_r)
    sender.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=60, start=mark_s)
    seconds = time.monotonic() - started
    after = [cpu([n.process.pid]) for n in nodes]
    redis_spent = redis_cpu() - redis_before
    Path(done["path"]).unlink()
    mib = size / MiB
    figures = {"seconds": seconds, "mib_per_s": mib / seconds}
    reactor = [a[0] - b[0] for a, b in zip(after, before)]
    others = [a[1] - b[1] for a, b in zip(after, before)]
    figures["servers_ms_per_mib"] = 1000 * (sum(reactor) + sum(others)) / mib
    for n in (0, 1):
        figures[f"node{n + 1}_reactor_ms_per_mib"] = 1000 * reactor[n] / mib
        figures[f"node{n + 1}_other_threads_ms_per_mib"] = 1000 * others[n] / mib
    figures["redis_ms_per_mib"] = 1000 * redis_spent / mib
    return figures


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-files-"))
    url, drop = fresh_database("mysql", tmp)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    nodes: list[ServerProcess] = []
    clients: list[TestClient] = []
    size = args.size_mib * MiB
    try:
        for n in (1, 2):
            node = ServerProcess(url, tmp / f"node{n}", env={
                "MEETING_REDIS": REDIS_URL, "MEETING_REDIS_PREFIX": prefix, "MEETING_NODE_NAME": f"files{n}",
                "MEETING_SPOOL_DIR": str(tmp / "spool"), "MEETING_FILE_WINDOW": str(args.window_mib * MiB)})
            node.start()
            nodes.append(node)
        sender = logged_in(nodes[0], "sender")
        near, far = logged_in(nodes[0], "near"), logged_in(nodes[1], "far")
        clients += [sender, near, far]
        befriend(sender, near)
        befriend(sender, far)
        source = tmp / "source.bin"
        write_file(source, args.size_mib)
        inbox = tmp / "inbox"
        inbox.mkdir()
        results: dict[str, list[dict]] = {"same-node": [], "cross-node": []}
        for _ in range(args.rounds):
            for layout, recipient in (("same-node", near), ("cross-node", far)):
                results[layout].append(one_transfer(sender, recipient, source, inbox, nodes, size))
        summary = {layout: {key: round(statistics.median(r[key] for r in rounds), 2) for key in rounds[0]}
                   for layout, rounds in results.items()}
        return {"size_mib": args.size_mib, "window_mib": args.window_mib, "rounds": args.rounds,
                "cpus": os.cpu_count(), **summary}
    finally:
        for client in clients:
            client.close()
        for node in nodes:
            node.terminate()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-mib", type=int, default=2, help="the servers' file_window")
    print(json.dumps(run(parser.parse_args())))


if __name__ == "__main__":
    main()
