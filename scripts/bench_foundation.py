#!/usr/bin/env python3
"""Foundation benchmarks (issue 2), each against a real server process on loopback:

  idle    N logged-in idle connections: the server's RSS, and heartbeat RTT percentiles
  logins  heartbeat RTT percentiles on one connection while M logins hash passwords at once
          with the production scrypt cost

Usage: python scripts/bench_foundation.py idle --clients 2000
       python scripts/bench_foundation.py logins --logins 200
"""
from __future__ import annotations

import argparse
import contextlib
import resource
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import frame as wire  # noqa: E402
from common.packets import PacketType  # noqa: E402
from benchlib import PASSWORD, percentile, prepare_users  # noqa: E402
from server.passwords import ScryptParams  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

@contextlib.contextmanager
def serving(data_dir: str, db_url: str) -> Iterator[ServerProcess]:
    """The server as its own process; its log tail is printed if the benchmark fails."""
    process = ServerProcess(db_url, data_dir, env={"MEETING_MAX_UNAUTHENTICATED_PER_ADDRESS": "100000",
                                                         "MEETING_REGISTRATIONS_PER_MINUTE_PER_ADDRESS": "0",
                                                         # every login is sent at once and the
                                                         # first clients are silent until the last
                                                         # is in: with 10,000 that can pass 30 s
                                                         "MEETING_LOGIN_DEADLINE": "600",
                                                         "MEETING_HEARTBEAT_TIMEOUT": "600"})
    process.start()
    try:
        yield process
    except BaseException:
        print("server log tail:\n" + process.log_tail(15), file=sys.stderr)
        raise
    finally:
        process.terminate()


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.decoder = wire.FrameDecoder()
        self.sent: dict[int, float] = {}
        self.rtts: list[float] = []
        self.next_id = 1
        self.logged_in = False

    def request(self, ptype: int, body: dict) -> int:
        rid = self.next_id
        self.next_id += 1
        self.sent[rid] = time.perf_counter()
        self.sock.sendall(wire.encode_json(ptype, body, rid))
        return rid

    def read(self) -> list[wire.Frame]:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return []
        if not data:
            raise ConnectionError("server closed a connection")
        frames = self.decoder.feed(data)
        for frame in frames:
            started = self.sent.pop(frame.request_id, None)
            if started is not None and frame.type == PacketType.RESULT:
                self.rtts.append(time.perf_counter() - started)
        return frames



def raise_open_files(needed: int) -> None:
    """This process holds one socket per client: raise its open-files limit (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def bench_idle(clients: int, idle_seconds: float) -> None:
    raise_open_files(clients + 256)
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        phones = prepare_users(db_url, clients, ScryptParams(n=2 ** 10), prefix="1500")
        with serving(tmp, db_url) as process:
            port = process.port
            server = psutil.Process(process.pid)
            rss_empty = server.memory_info().rss
            selector = selectors.DefaultSelector()
            conns = []
            started = time.monotonic()
            for phone in phones:
                client = RawClient(port)
                client.request(PacketType.HELLO, {"version": 1, "client": "bench"})
                client.request(PacketType.LOGIN, {"phone": phone, "password": PASSWORD})
                conns.append(client)
                selector.register(client.sock, selectors.EVENT_READ, client)
            logged = 0
            deadline = time.monotonic() + 120
            while logged < clients:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {logged} of {clients} logged in")
                for key, _ in selector.select(0.1):
                    for frame in key.data.read():
                        if frame.type == PacketType.RESULT and "token" in frame.body.decode():
                            logged += 1
                        elif frame.type == PacketType.ERROR:
                            raise RuntimeError(frame.json())
            login_time = time.monotonic() - started
            for client in conns:
                client.rtts.clear()
            # idle: each client heartbeats every 10 s, spread evenly over the interval
            end = time.monotonic() + idle_seconds
            interval = 10.0
            next_beat = {id(c): time.monotonic() + interval * i / clients for i, c in enumerate(conns)}
            while time.monotonic() < end:
                now = time.monotonic()
                for client in conns:
                    if now >= next_beat[id(client)]:
                        client.request(PacketType.HEARTBEAT, {})
                        next_beat[id(client)] = now + interval
                for key, _ in selector.select(0.005):
                    key.data.read()
            rss = server.memory_info().rss
            rtts = [r for c in conns for r in c.rtts]
            print(f"idle: {clients} logged-in connections (login of all took {login_time:.1f} s)")
            print(f"  server RSS empty {rss_empty / 2**20:.1f} MiB, with connections {rss / 2**20:.1f} MiB "
                  f"({(rss - rss_empty) / clients / 1024:.1f} KiB per connection)")
            print(f"  heartbeats answered {len(rtts)}: p50 {percentile(rtts, 50) * 1000:.2f} ms, "
                  f"p99 {percentile(rtts, 99) * 1000:.2f} ms, max {max(rtts) * 1000:.2f} ms")
            for client in conns:
                client.sock.close()


def bench_logins(logins: int) -> None:
    params = ScryptParams()  # the production default
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        phones = prepare_users(db_url, logins + 1, params, prefix="1500")
        with serving(tmp, db_url) as process:
            port = process.port
            probe = RawClient(port)
            probe.request(PacketType.HELLO, {"version": 1, "client": "bench"})
            probe.request(PacketType.LOGIN, {"phone": phones[0], "password": PASSWORD})
            selector = selectors.DefaultSelector()
            selector.register(probe.sock, selectors.EVENT_READ, probe)
            others = [RawClient(port) for _ in range(logins)]
            for client in others:
                client.request(PacketType.HELLO, {"version": 1, "client": "bench"})
                selector.register(client.sock, selectors.EVENT_READ, client)
            while len(probe.rtts) < 2 or sum(len(c.rtts) for c in others) < logins:   # HELLOs and the probe's login
                for key, _ in selector.select(1.0):
                    key.data.read()
            probe.rtts.clear()
            started = time.monotonic()
            for client, phone in zip(others, phones[1:]):
                client.request(PacketType.LOGIN, {"phone": phone, "password": PASSWORD})
            done = 0
            next_beat = 0.0
            next_keepalive = started + 10.0
            while done < logins:
                if time.monotonic() - started > 600:
                    raise TimeoutError(f"only {done} logins finished")
                now = time.monotonic()
                if now >= next_beat:
                    probe.request(PacketType.HEARTBEAT, {})
                    next_beat = now + 0.02
                if now >= next_keepalive:   # the waiting clients heartbeat like real ones
                    for client in others:
                        client.request(PacketType.HEARTBEAT, {})
                    next_keepalive = now + 10.0
                for key, _ in selector.select(0.005):
                    for frame in key.data.read():
                        if key.data is not probe and frame.type in (PacketType.RESULT, PacketType.ERROR) \
                                and frame.request_id == 2:   # the LOGIN
                            done += 1
            elapsed = time.monotonic() - started
            rtts = probe.rtts
            print(f"logins: {logins} logins at once, scrypt n={params.n} r={params.r} p={params.p}, "
                  f"all answered in {elapsed:.1f} s ({logins / elapsed:.1f} logins/s)")
            print(f"  heartbeats during them {len(rtts)}: p50 {percentile(rtts, 50) * 1000:.2f} ms, "
                  f"p99 {percentile(rtts, 99) * 1000:.2f} ms, max {max(rtts) * 1000:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bench", choices=("idle", "logins"))
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--logins", type=int, default=200)
    args = parser.parse_args()
    if args.bench == "idle":
        bench_idle(args.clients, args.idle_seconds)
    else:
        bench_logins(args.logins)


if __name__ == "__main__":
    main()
