#!/usr/bin/env python3
"""Chat throughput with and without group commit.

Runs the server as its own process (``python -m server``) on a fresh database, makes PAIRS
pairs of friends, and lets every sender push MESSAGES messages to its friend with WINDOW
unacknowledged at a time. Prints messages per second, ack latency (send to RESULT, which
comes after the commit), how many transactions the server's writer needed for the
messages and the delivery receipts (from the admin status socket), and the server process's
CPU per message (psutil: all threads, and its busiest and second-busiest thread, which are
the reactor and the chat writer).

    python scripts/bench_chat.py --db sqlite --pairs 10 --messages 300
    python scripts/bench_chat.py --db mysql --batch-max 1     # one commit per message
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from benchlib import fresh_database  # noqa: E402

from server.admin import query_status  # noqa: E402
from server.storage import open_storage  # noqa: E402
from tests.helpers import TestClient  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    url, drop = fresh_database(args.db, tmp)
    server = ServerProcess(url, tmp / "data", env={"MEETING_CHAT_BATCH_MAX": str(args.batch_max),
                                                    "MEETING_MESSAGES_PER_MINUTE": "0",
                                                    "MEETING_REGISTRATIONS_PER_MINUTE_PER_ADDRESS": "0"})
    port = server.start()
    storage = open_storage(url)
    clients: list[TestClient] = []
    try:
        pairs = []
        for n in range(args.pairs):
            sender, receiver = TestClient(port), TestClient(port)
            clients += [sender, receiver]
            sender.register_and_login(f"sender {n}")
            receiver.register_and_login(f"receiver {n}")
            storage.add_friendship(sender.kernel.user["id"], receiver.kernel.user["id"], 1)
            pairs.append((sender, receiver))
        time.sleep(0.5)      # let the session hooks finish
        latencies: list[float] = []
        lock = threading.Lock()

        def push(sender: TestClient, to: int) -> None:
            window = threading.Semaphore(args.window)
            mine: list[float] = []
            for i in range(args.messages):
                window.acquire()
                sent = time.perf_counter()
                entry = sender.kernel.chat.send(to, f"message {i} " + "x" * args.size)
                entry.acked.add_done_callback(lambda _f, s=sent: (mine.append(time.perf_counter() - s),
                                                                  window.release()))
            for _ in range(args.window):
                window.acquire()
            with lock:
                latencies.extend(mine)

        before = admin_status(tmp / "data")
        process = psutil.Process(server.pid)
        cpu_before = thread_cpu(process)
        started = time.perf_counter()
        threads = [threading.Thread(target=push, args=(s, r.kernel.user["id"])) for s, r in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        total = args.pairs * args.messages
        time.sleep(0.5)      # the last delivery receipts
        after = admin_status(tmp / "data")
        cpu_after = thread_cpu(process)
        used = sorted((cpu_after[t] - cpu_before.get(t, 0.0) for t in cpu_after), reverse=True)
        latencies.sort()
        return {
            "db": args.db, "batch_max": args.batch_max, "messages": total, "seconds": round(elapsed, 2),
            "msg_per_s": round(total / elapsed), "ack_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "ack_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
            "transactions": after["chat_batches"] - before["chat_batches"],
            "jobs": after["chat_jobs_committed"] - before["chat_jobs_committed"],  # messages + receipts
            "server_us_per_msg": round(sum(used) / total * 1e6, 1),
            "top_thread_us_per_msg": round(used[0] / total * 1e6, 1),
            "second_thread_us_per_msg": round(used[1] / total * 1e6, 1),
        }
    finally:
        for client in clients:
            client.close()
        storage.close()
        server.terminate()
        drop()


def thread_cpu(process: psutil.Process) -> dict[int, float]:
    """CPU seconds (user + system) of each thread of the process."""
    return {t.id: t.user_time + t.system_time for t in process.threads()}


def admin_status(data_dir: Path) -> dict:
    """The server's live figures from its admin socket."""
    return query_status(data_dir / "admin.sock")


def main() -> int:
    parser = argparse.ArgumentParser(description="chat throughput with and without group commit")
    parser.add_argument("--db", choices=("sqlite", "mysql"), default="sqlite")
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--messages", type=int, default=200, help="per sender")
    parser.add_argument("--window", type=int, default=20, help="unacknowledged messages per sender")
    parser.add_argument("--size", type=int, default=100, help="extra bytes of text per message")
    parser.add_argument("--batch-max", type=int, default=256, help="chat_batch_max (1 = no group commit)")
    result = run(parser.parse_args())
    print("  ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
