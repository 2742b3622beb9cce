#!/usr/bin/env python3
"""What TLS costs: chat and media throughput through a real server, plain TCP next to TLS.

    .venv/bin/python scripts/bench_tls.py [--seconds 4] [--json]

For each transport the server runs as its own process (so its CPU is measured apart from the
clients'), two clients log in, and:
  * chat: the first sends messages flat out (64 in flight), the second counts them arriving:
    one-to-one chat (stored, acknowledged after the group commit) and room chat (relayed);
  * media: the first publishes MEDIA_FRAMEs of 1 KiB (audio-sized) and 32 KiB (video-sized)
    into a meeting for ``--seconds``, keeping at most 1 MiB queued; the second counts what the
    relay delivers.
  * connections: 300 connect + (TLS handshake +) HELLO + close, from 4 threads.
Reported: connections, messages or MiB per second received, and the server's CPU seconds per unit of work.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from client.kernel import ClientKernel  # noqa: E402
from client.tls import TlsOptions, certificate_fingerprint  # noqa: E402
from common import frame as wire  # noqa: E402
from common.media import Codec, MediaKind  # noqa: E402
from common.packets import PacketType  # noqa: E402

PASSWORD = "bench password 1"


class ServerUnderTest:
    def __init__(self, workdir: Path, tls: tuple[str, str] | None) -> None:
        args = [sys.executable, "-m", "server", "--init-db", "--port", "0",
                "--db", f"sqlite:///{workdir}/bench.db", "--data-dir", str(workdir),
                "--log-level", "WARNING", "--admin-socket", "off",
                "--set", "scrypt_n=1024", "--set", "messages_per_minute=0", "--set", "rooms_per_minute=0"]
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        self.process = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
        self.port = 0
        deadline = time.monotonic() + 30
        lines = []
        # The "listening" line is logged at INFO; WARNING hides it, so poll the socket instead.
        while time.monotonic() < deadline and not self.port:
            self.port = _listening_port(self.process.pid)
            if self.process.poll() is not None:
                lines.append(self.process.stderr.read())
                raise RuntimeError(f"server exited: {''.join(lines)[-2000:]}")
            time.sleep(0.05)
        if not self.port:
            raise RuntimeError("the server did not start listening within 30 s")
        self.ps = psutil.Process(self.process.pid)

    def cpu(self) -> float:
        times = self.ps.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _listening_port(pid: int) -> int:
    try:
        for conn in psutil.Process(pid).net_connections(kind="tcp4"):
            if conn.status == psutil.CONN_LISTEN:
                return conn.laddr.port
    except psutil.Error:
        pass
    return 0


def make_cert(workdir: Path) -> tuple[str, str, str]:
    subprocess.run(["bash", str(REPO / "scripts" / "make-cert.sh"), str(workdir / "tls")],
                   check=True, capture_output=True, timeout=60)
    cert, key = str(workdir / "tls" / "server.crt"), str(workdir / "tls" / "server.key")
    return cert, key, certificate_fingerprint(cert)


def login(port: int, tls: TlsOptions | None, name: str, phone: str) -> ClientKernel:
    kernel = ClientKernel("127.0.0.1", port, tls=tls, request_timeout=30.0, reconnect=False)
    kernel.register(phone, PASSWORD, name)
    kernel.login(phone, PASSWORD)
    return kernel


def flat_out(send, count: int, window: int = 64) -> None:
    """Send ``count`` requests with at most ``window`` unanswered."""
    slots = threading.Semaphore(window)
    for i in range(count):
        slots.acquire()
        send(i).add_done_callback(lambda _f: slots.release())
    for _ in range(window):
        slots.acquire()


def befriend(a: ClientKernel, b: ClientKernel) -> None:
    reply = a.friends.add(user_id=int(b.user["id"]))
    if reply["status"] == "pending":
        b.friends.answer(reply["request"]["id"], True)


def bench_direct_chat(a: ClientKernel, b: ClientKernel, count: int) -> dict:
    got = threading.Semaphore(0)
    b.add_listener(lambda e: got.release() if e.kind == "chat_message" else None)
    peer = int(b.user["id"])
    tag = f"{time.time_ns()}"
    started = time.perf_counter()
    thread = threading.Thread(target=flat_out, args=(
        lambda i: a.request_async(PacketType.CHAT_SEND, {"to": peer, "text": "x" * 100,
                                                         "client_msg_id": f"bench-{tag}-{i}"}), count))
    thread.start()
    for _ in range(count):
        if not got.acquire(timeout=60):
            raise RuntimeError("chat messages went missing")
    elapsed = time.perf_counter() - started
    thread.join()
    return {"messages": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed)}


def bench_room_chat(a: ClientKernel, b: ClientKernel, count: int) -> dict:
    got = threading.Semaphore(0)
    b.add_listener(lambda e: got.release() if e.kind == "room_chat" else None)
    text = "x" * 100
    started = time.perf_counter()
    thread = threading.Thread(target=flat_out, args=(
        lambda i: a.request_async(PacketType.ROOM_CHAT, {"text": text}), count))
    thread.start()
    for _ in range(count):
        if not got.acquire(timeout=30):
            raise RuntimeError("room chat messages went missing")
    elapsed = time.perf_counter() - started
    thread.join()
    return {"messages": count, "seconds": round(elapsed, 3), "per_second": round(count / elapsed)}


def bench_connects(port: int, tls: bool, count: int = 300, threads: int = 4) -> dict:
    """Connect, (shake hands,) HELLO and close, ``count`` times from ``threads`` threads."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE   # the bench measures cost, the tests check trust
    hello = wire.encode_json(PacketType.HELLO, {"version": 1, "client": "bench"}, 1)

    def worker(n: int) -> None:
        for _ in range(n):
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            if tls:
                sock = context.wrap_socket(sock)
            sock.sendall(hello)
            decoder = wire.FrameDecoder()
            while not decoder.feed(sock.recv(65536)):
                pass
            sock.close()

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(count // threads,)) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    done = count // threads * threads
    return {"connections": done, "seconds": round(elapsed, 3), "per_second": round(done / elapsed)}


class MediaCounter:
    """Counts MEDIA_FRAMEs arriving at a client (called on its network thread)."""

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def __call__(self, header, payload) -> None:
        self.frames += 1
        self.bytes += len(payload)


def bench_media(a: ClientKernel, counter: MediaCounter, payload_size: int, seconds: float) -> dict:
    counter.frames = counter.bytes = 0
    payload = os.urandom(payload_size)
    sent = 0
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        if a.queued_bytes > 1024 * 1024:
            time.sleep(0.0005)
            continue
        a.rooms.publish(MediaKind.MICROPHONE, Codec.OPUS, payload, False, int(time.time() * 1e6))
        sent += 1
    deadline = time.perf_counter() + 10
    while counter.frames < sent and time.perf_counter() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    return {"payload": payload_size, "frames_sent": sent, "frames_received": counter.frames,
            "seconds": round(elapsed, 3), "frames_per_second": round(counter.frames / elapsed),
            "mib_per_second": round(counter.bytes / elapsed / 2**20, 1)}


def run_transport(name: str, workdir: Path, cert: tuple[str, str, str] | None, seconds: float) -> dict:
    server = ServerUnderTest(workdir / name, (cert[0], cert[1]) if cert else None)
    tls = TlsOptions(fingerprint=cert[2]) if cert else None
    results: dict = {}
    try:
        base = int(time.time()) % 10**6 * 100
        a = login(server.port, tls, "bench-a", f"1{base + 1:010d}")
        b = login(server.port, tls, "bench-b", f"1{base + 2:010d}")
        cpu = server.cpu()
        results["connect_hello"] = bench_connects(server.port, cert is not None)
        results["connect_hello"]["server_cpu_ms_per_1000"] = round(
            (server.cpu() - cpu) / results["connect_hello"]["connections"] * 1e6, 1)
        befriend(a, b)
        cpu = server.cpu()
        results["direct_chat"] = bench_direct_chat(a, b, 3000)
        results["direct_chat"]["server_cpu_ms_per_1000"] = round((server.cpu() - cpu) / 3 * 1000, 1)
        room = a.rooms.create("bench")
        b.rooms.join(room["number"])
        counter = MediaCounter()
        b.rooms.add_media_listener(counter)
        cpu = server.cpu()
        results["room_chat"] = bench_room_chat(a, b, 5000)
        results["room_chat"]["server_cpu_ms_per_1000"] = round((server.cpu() - cpu) / 5 * 1000, 1)
        for size in (1024, 32 * 1024):
            cpu = server.cpu()
            outcome = bench_media(a, counter, size, seconds)
            mib = outcome["mib_per_second"] * outcome["seconds"]
            outcome["server_cpu_s_per_gib"] = round((server.cpu() - cpu) / max(mib, 1e-9) * 1024, 1)
            results[f"media_{size // 1024}k"] = outcome
        a.close()
        b.close()
    finally:
        server.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each media run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        workdir = Path(tmp)
        cert = make_cert(workdir)
        results = {"plain": run_transport("plain", workdir, None, args.seconds),
                   "tls": run_transport("tls", workdir, cert, args.seconds)}
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{'measure':<28}{'plain':>14}{'TLS':>14}{'TLS/plain':>11}")
    for key in results["plain"]:
        plain, tls = results["plain"][key], results["tls"][key]
        unit = "per_second" if "per_second" in plain else "mib_per_second"
        label = ("conn/s" if key == "connect_hello" else "msg/s") if unit == "per_second" else "MiB/s"
        print(f"{key + ' ' + label:<28}{plain[unit]:>14}{tls[unit]:>14}{tls[unit] / plain[unit]:>11.2f}")
        cost = "server_cpu_ms_per_1000" if "server_cpu_ms_per_1000" in plain else "server_cpu_s_per_gib"
        cost_label = "server CPU s/GiB" if not cost.endswith("1000") else (
            "server CPU ms/1000 conn" if key == "connect_hello" else "server CPU ms/1000 msg")
        print(f"{'  ' + cost_label:<28}{plain[cost]:>14}{tls[cost]:>14}{tls[cost] / max(plain[cost], 1e-9):>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
