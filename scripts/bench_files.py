#!/usr/bin/env python3
"""File transfer throughput through the server next to a plain loopback socket copy.

In one run: writes a SIZE file of pseudo-random bytes, then ROUNDS paired rounds of: a plain
loopback TCP copy (file → socket → file, fsync at the end), and a transfer between two friends
through the real server (``python -m server`` as its own process, the recipient in another
process). Per round:

* the time from the recipient's accept to its ``file_done`` (bytes streamed, hashed, written,
  SHA-256 checked, fsynced and renamed), next to the plain copy of the same bytes;
* the CPU each process spent in that time (the sender's includes its SHA-256 before the offer);
* the sender's SHA-256 of the file before the offer (reported apart: it is not transfer time);
* the server process's peak RSS during the transfer (psutil, sampled every 20 ms).

Before each timed phase the writing process touches twice SIZE of memory (see warm_memory).
The summary is the median of the rounds.

    python scripts/bench_files.py                 # 1 GiB, 3 rounds
    python scripts/bench_files.py --size-mib 256 --window-mib 4 --rounds 5
"""
from __future__ import annotations

import argparse
import json
import mmap
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from client.files import file_sha256  # noqa: E402
from server.storage import open_storage  # noqa: E402
from tests.helpers import TestClient  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

MiB = 1024 * 1024
BLOCK = 256 * 1024


def make_file(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with open(path, "wb") as fh:
        for index in range(0, size, MiB):
            fh.write(((index // MiB).to_bytes(8, "big") + block[8:])[:min(MiB, size - index)])


def warm_memory(size: int) -> None:
    """Touch and free ``size`` bytes just before a timed phase.

    On a virtual machine the host takes back memory the guest freed a few seconds earlier
    (free page reporting); the first writes into it ran 2-3x slower (a plain copy took
    0.55 s or 1.1-1.8 s depending on it). Warming first puts every phase on the same footing."""
    with mmap.mmap(-1, size) as area:
        for offset in range(0, size, mmap.PAGESIZE):
            area[offset] = 1


def plain_copy(source: Path, target: Path) -> float:
    """file → loopback TCP → file, same chunk size, fsync at the end; returns seconds."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    finished = threading.Event()

    def receive() -> None:
        conn, _ = listener.accept()
        buffer = bytearray(BLOCK)
        view = memoryview(buffer)
        with conn, open(target, "wb") as out:
            while (n := conn.recv_into(buffer)) > 0:
                out.write(view[:n])
            out.flush()
            os.fsync(out.fileno())
        finished.set()

    receiver = threading.Thread(target=receive)
    receiver.start()
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock, open(source, "rb") as src:
        while block := src.read(BLOCK):
            sock.sendall(block)
    finished.wait()
    elapsed = time.perf_counter() - started
    receiver.join()
    listener.close()
    return elapsed


class PeakRss(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.process = psutil.Process(pid)
        self.peak = self.process.memory_info().rss
        self.before = self.peak
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)


def receive_one(port: int, inbox: str, pipe) -> None:
    """The recipient, in its own process (as a friend on another machine would be): log in,
    report the user id, accept the first offer, report the accept-to-done time and path."""
    recipient = TestClient(port)
    try:
        recipient.register_and_login("recipient")
        pipe.send(recipient.kernel.user["id"])
        offer = recipient.events.wait_for("file_offer", timeout=120)
        warm_memory(2 * int(offer["size"]))
        cpu = sum(psutil.Process().cpu_times()[:2])
        started = time.perf_counter()
        recipient.kernel.files.accept(offer["transfer_id"], directory=inbox)
        done = recipient.events.wait_for("file_done", lambda e: e["transfer_id"] == offer["transfer_id"],
                                         timeout=600)
        pipe.send({"transfer_s": time.perf_counter() - started, "path": done["path"],
                   "cpu_s": sum(psutil.Process().cpu_times()[:2]) - cpu})
    finally:
        recipient.close()


def through_server(source: Path, inbox: Path, data_dir: Path, window: int) -> dict:
    url = f"sqlite:///{data_dir}/bench.db"
    env = {"MEETING_FILE_WINDOW": str(window), "MEETING_MAX_FILE_SIZE": str(64 * 1024 ** 3)}
    with ServerProcess(url, data_dir, env=env) as server:
        port = server.start()
        sender = TestClient(port)
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        child = multiprocessing.get_context("spawn").Process(target=receive_one, args=(port, str(inbox), theirs))
        child.start()
        try:
            sender.register_and_login("sender")
            if not ours.poll(60):
                raise RuntimeError("the recipient process did not log in")
            recipient_id = ours.recv()
            storage = open_storage(url)
            storage.add_friendship(sender.kernel.user["id"], recipient_id, 1)
            storage.close()
            rss = PeakRss(server.pid)
            rss.start()
            server_cpu = sum(rss.process.cpu_times()[:2])
            own = psutil.Process()
            own_cpu = sum(own.cpu_times()[:2])
            started = time.perf_counter()
            transfer_id = sender.kernel.files.send_file(recipient_id, source)
            hashed = time.perf_counter() - started
            sender.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=180)
            server_cpu = sum(rss.process.cpu_times()[:2]) - server_cpu
            own_cpu = sum(own.cpu_times()[:2]) - own_cpu
            rss.done.set()
            rss.join()
            if not ours.poll(60):
                raise RuntimeError("the recipient process did not finish")
            received = ours.recv()
            return {"transfer_s": received["transfer_s"], "hash_and_offer_s": hashed,
                    "server_rss_before": rss.before, "server_rss_peak": rss.peak, "path": received["path"],
                    "server_cpu_s": server_cpu, "sender_cpu_s": own_cpu, "recipient_cpu_s": received["cpu_s"]}
        finally:
            sender.close()
            child.join(30)


def one_round(source: Path, work: Path, digest: str, window: int) -> dict:
    warm_memory(2 * source.stat().st_size)
    copy_s = plain_copy(source, work / "plain.bin")
    (work / "plain.bin").unlink()
    inbox = work / "inbox"
    inbox.mkdir()
    try:
        result = through_server(source, inbox, work / "server", window)
        if file_sha256(result["path"]) != digest:
            raise RuntimeError("the received file differs from the source")
    finally:
        for path in sorted([*inbox.rglob("*"), *(work / "server").rglob("*")], reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        inbox.rmdir()
        if (work / "server").exists():
            (work / "server").rmdir()
    return {"plain_copy_s": copy_s, **result, "load_avg_1m": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--window-mib", type=float, default=2.0, help="the server's file_window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                        help="where the files go (default /dev/shm: measures the transfer path, not a "
                             "disk shared with other jobs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.size_mib * MiB
    work = Path(tempfile.mkdtemp(prefix="bench-files-", dir=args.dir))
    rounds = []
    try:
        source = work / "source.bin"
        make_file(source, size)
        digest = file_sha256(source)
        for _ in range(args.rounds):
            rounds.append(one_round(source, work, digest, int(args.window_mib * MiB)))
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        for path in sorted(work.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        work.rmdir()
    per_round = [{
        "plain_copy_s": round(r["plain_copy_s"], 2),
        "server_transfer_s": round(r["transfer_s"], 2),
        "ratio": round(r["plain_copy_s"] / r["transfer_s"], 2),
        "server_cpu_s": round(r["server_cpu_s"], 2),
        "sender_cpu_s": round(r["sender_cpu_s"], 2),
        "recipient_cpu_s": round(r["recipient_cpu_s"], 2),
        "server_rss_peak_mb": round(r["server_rss_peak"] / 1e6, 1),
        "load_avg_1m": round(r["load_avg_1m"], 2),
    } for r in rounds]
    copy_s = statistics.median(r["plain_copy_s"] for r in rounds)
    transfer_s = statistics.median(r["transfer_s"] for r in rounds)
    figures = {
        "size_mib": args.size_mib,
        "window_mib": args.window_mib,
        "rounds": args.rounds,
        "plain_copy_s": round(copy_s, 2),
        "plain_copy_mib_s": round(size / copy_s / MiB),
        "server_transfer_s": round(transfer_s, 2),
        "server_transfer_mib_s": round(size / transfer_s / MiB),
        "ratio": statistics.median(r["ratio"] for r in per_round),
        "sender_hash_and_offer_s": round(statistics.median(r["hash_and_offer_s"] for r in rounds), 2),
        "server_rss_before_mb": round(max(r["server_rss_before"] for r in rounds) / 1e6, 1),
        "server_rss_peak_mb": round(max(r["server_rss_peak"] for r in rounds) / 1e6, 1),
        "cpus": os.cpu_count(),
        "per_round": per_round,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            if key != "per_round":
                print(f"{key:26} {value}")
        for number, values in enumerate(per_round, 1):
            print(f"round {number}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
