#!/usr/bin/env python3
"""Media relay capacity: how many 4-member rooms one server process relays with < 1 % loss.

For each level (a number of rooms) a fresh server process is started on loopback. Load
processes log in 4 members per room (one creates the room, three join), then every member
publishes pre-made synthetic video frames (no codec) at 30 fps and ~500 kbit/s: a 15 kB
keyframe every 2 s (and whenever the server asks for one) and ~1.9 kB delta frames, like
640x480 H.264 at that bitrate. Every member reads as fast as it can.

A publisher whose own unsent bytes pass 128 kB drops video locally, as the client core does,
so a server that cannot keep up shows as loss, not as an ever-growing queue. Loss is
``1 - received / (3 x scheduled)``: every frame a member was due to send should reach the
three others; after publishing stops, members read on until everything sent has arrived (at
most 10 s), so a late frame shows in the delay percentiles, a lost one in the loss. A member
outside the rooms measures heartbeat round trips every 100 ms (is the reactor responsive?), and
the server's CPU time per relayed frame copy is the figure least disturbed by other load. Reported per level: loss, the relay's own drop counter, capture-to-receive
delay percentiles, the server's CPU (one process: 100 % = one core) and RSS.

With ``--room-chat`` the members send room chat instead (30 messages per second each, as
requests: the sender gets its RESULT, and every member, the sender included, the
ROOM_CHAT_EVENT), and the figure is the server's CPU per delivered chat event.

Usage: python scripts/bench_relay.py --rooms 5,10,20 --duration 10 --procs 2 [--room-chat]
"""
from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import frame as wire  # noqa: E402
from common.media import FLAG_KEYFRAME, MEDIA_HEADER, Codec, MediaKind  # noqa: E402
from common import messages  # noqa: E402
from common.packets import PacketType  # noqa: E402
from server.admin import query_status  # noqa: E402
from benchlib import PASSWORD, percentile, prepare_users, print_profile, py_spy  # noqa: E402
from server.passwords import ScryptParams  # noqa: E402

MEMBERS = 4
FPS = 30
BITRATE = 500_000
GOP = 2 * FPS
KEYFRAME_SIZE = 15_000
DELTA_SIZE = (BITRATE // 8 * GOP // FPS - KEYFRAME_SIZE) // (GOP - 1)
SEND_BUDGET = 128 * 1024
FRAME_PREFIX = struct.Struct("!2sHII")
CAPTURE = struct.Struct("!Q")      # at offset 11 of the media sub-header
CHAT_PAD = "x" * 40                 # room chat text: the send time in µs, then this


def start_server(data_dir: str, db_url: str) -> tuple[subprocess.Popen, int]:
    log = open(Path(data_dir) / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "server", "--port", "0", "--db", db_url, "--data-dir", data_dir,
                             "--log-level", "WARNING", "--set", "rooms_per_minute=0", "--set", "messages_per_minute=0",
                             "--set", "registrations_per_minute_per_address=0",
                             "--set", "room_joins_per_minute_per_address=0"],
                            stderr=log, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listening = [c.laddr.port for c in psutil.Process(proc.pid).net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN]
        if listening and (Path(data_dir) / "admin.sock").exists():
            return proc, listening[0]
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(Path(data_dir) / 'server.log').read_text()}")
        time.sleep(0.05)
    raise RuntimeError("server did not start listening")


class Member:
    """One room member on a raw socket: logs in blocking, then runs non-blocking."""

    def __init__(self, port: int, phone: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.inbuf = bytearray()
        self.next_id = 1
        self.request(PacketType.HELLO, {"version": 1, "client": "bench-relay"})
        self.request(PacketType.LOGIN, {"phone": phone, "password": PASSWORD})
        self.out = bytearray()
        self.seq = 0
        self.want_keyframe = True
        self.scheduled = self.sent = self.dropped_locally = self.received = self.keyframe_asks = 0
        self.delays_ms: list[float] = []

    def request(self, ptype: int, body: dict) -> dict:
        """Setup only (blocking): send a request, skip events until its reply."""
        rid = self.next_id
        self.next_id += 1
        self.sock.sendall(wire.encode_json(ptype, body, rid))
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed a connection during setup")
            self.inbuf += data
            while len(self.inbuf) >= FRAME_PREFIX.size:
                _, rtype, length, request_id = FRAME_PREFIX.unpack_from(self.inbuf)
                if len(self.inbuf) < FRAME_PREFIX.size + length:
                    break
                body_bytes = bytes(self.inbuf[FRAME_PREFIX.size:FRAME_PREFIX.size + length])
                del self.inbuf[:FRAME_PREFIX.size + length]
                if request_id == rid:
                    reply = wire.decode_json(body_bytes)
                    if rtype != PacketType.RESULT:
                        raise RuntimeError(f"{PacketType(ptype).name} failed: {reply}")
                    return reply

    # -- running --------------------------------------------------------------------------------
    def publish(self, keyframe_payload: bytes, delta_payload: bytes) -> None:
        self.scheduled += 1
        keyframe = self.want_keyframe or self.seq % GOP == 0
        if len(self.out) > SEND_BUDGET:
            self.dropped_locally += 1
            self.want_keyframe = True          # the next frame sent must be decodable alone
            return
        payload = keyframe_payload if keyframe else delta_payload
        header = MEDIA_HEADER.pack(0, MediaKind.CAMERA, Codec.H264, FLAG_KEYFRAME if keyframe else 0,
                                   self.seq, time.time_ns() // 1000)
        data = b"".join((FRAME_PREFIX.pack(wire.MAGIC, PacketType.MEDIA_FRAME, len(header) + len(payload), 0),
                         header, payload))
        self.seq += 1
        self.sent += 1
        self.want_keyframe = False
        self.write(data)

    def say(self) -> None:
        """Send one room chat message (a request), its text the send time in µs."""
        self.scheduled += 1
        if len(self.out) > SEND_BUDGET:
            self.dropped_locally += 1
            return
        data = wire.encode_json(PacketType.ROOM_CHAT, {"text": f"{time.time_ns() // 1000} {CHAT_PAD}"},
                                self.next_id)
        self.next_id += 1
        self.sent += 1
        self.write(data)

    def write(self, data: bytes) -> None:
        """Send now what the socket takes, behind anything already waiting; keep the rest."""
        if self.out:
            self.out += data
            return
        try:
            written = self.sock.send(data)
        except BlockingIOError:
            written = 0
        if written < len(data):
            self.out += data[written:]

    def flush(self) -> None:
        try:
            written = self.sock.send(self.out)
        except BlockingIOError:
            return
        del self.out[:written]

    def read(self, counting: bool) -> None:
        while True:
            try:
                data = self.sock.recv(262144)
            except BlockingIOError:
                return
            if not data:
                raise ConnectionError("the server closed a connection")
            self.scan(data, counting)
            if len(data) < 262144:
                return

    def scan(self, data: bytes, counting: bool) -> None:
        """Count whole frames in the stream without copying their bodies (the load side must
        stay cheaper than the server it measures)."""
        buf = self.inbuf
        buf += data
        now_us = time.time_ns() // 1000
        pos, end = 0, len(buf)
        while end - pos >= FRAME_PREFIX.size:
            _, ptype, length, _ = FRAME_PREFIX.unpack_from(buf, pos)
            body = pos + FRAME_PREFIX.size
            if end - body < length:
                break
            if ptype == PacketType.MEDIA_FRAME:
                if counting:
                    self.received += 1
                    if self.received % 4 == 0:        # a sample of the delays is enough
                        self.delays_ms.append((now_us - CAPTURE.unpack_from(buf, body + 11)[0]) / 1000)
            elif ptype == PacketType.ROOM_CHAT_EVENT:
                if counting:
                    self.received += 1
                    if self.received % 4 == 0:
                        event = messages.decode_event(ptype, bytes(buf[body:body + length]))
                        self.delays_ms.append((now_us - int(event.text.split()[0])) / 1000)
            elif ptype == PacketType.KEYFRAME_REQUEST_EVENT:
                self.want_keyframe = True
                self.keyframe_asks += 1
            pos = body + length
        del buf[:pos]


def load_process(port: int, phones: list[str], start_at, duration: float, drain: float,
                 results: multiprocessing.Queue, room_chat: bool = False) -> None:
    try:
        run_members(port, phones, start_at, duration, drain, results, room_chat)
    except Exception as exc:
        results.put(("error", f"{exc.__class__.__name__}: {exc}"))


def run_members(port: int, phones: list[str], start_at, duration: float, drain: float,
                results: multiprocessing.Queue, room_chat: bool = False) -> None:
    """Log in the given members (groups of 4 per room), then publish from the shared start
    time (set by the parent once every process is ready) for ``duration`` seconds."""
    members: list[Member] = []
    for first in range(0, len(phones), MEMBERS):
        group = [Member(port, phone) for phone in phones[first:first + MEMBERS]]
        number = group[0].request(PacketType.ROOM_CREATE, {"title": "bench"})["room"]["number"]
        for member in group[1:]:
            member.request(PacketType.ROOM_JOIN, {"number": number})
        members += group
    keyframe_payload = os.urandom(KEYFRAME_SIZE)
    delta_payload = os.urandom(DELTA_SIZE)
    selector = selectors.DefaultSelector()
    for member in members:
        member.sock.setblocking(False)
        selector.register(member.sock, selectors.EVENT_READ, member)
    results.put(("ready", len(members)))
    heartbeat = wire.encode_json(PacketType.HEARTBEAT, {})
    last_heartbeat = time.monotonic()
    while not start_at.value or time.time() < start_at.value:
        for key, _ in selector.select(0.05):
            key.data.read(counting=False)
        if time.monotonic() - last_heartbeat > 5:        # idle members must not time out
            last_heartbeat = time.monotonic()
            for member in members:
                member.sock.send(heartbeat)
    publish_and_read(selector, members, keyframe_payload, delta_payload, duration, drain, room_chat)
    delays = [d for m in members for d in m.delays_ms]
    results.put(("done", {
        "scheduled": sum(m.scheduled for m in members), "sent": sum(m.sent for m in members),
        "dropped_locally": sum(m.dropped_locally for m in members),
        "received": sum(m.received for m in members), "keyframe_asks": sum(m.keyframe_asks for m in members),
        "delays_ms": random.sample(delays, min(len(delays), 20000)),
    }))
    for member in members:
        member.sock.close()


def publish_and_read(selector: selectors.BaseSelector, members: list["Member"], keyframe: bytes, delta: bytes,
                     duration: float, drain: float, room_chat: bool = False) -> None:
    """Every member publishes (or, with ``room_chat``, says something) at FPS (random phases)
    for ``duration`` s, all of them reading and writing without blocking; then they read on
    until everything sent has arrived (at most ``drain`` s more)."""
    interval = 1.0 / FPS
    now = time.monotonic()
    stop_sending = now + duration
    stop_reading = stop_sending + drain
    due = [(now + random.random() * interval, i) for i in range(len(members))]
    heapq.heapify(due)
    writing: set[Member] = set()
    while True:
        now = time.monotonic()
        if now >= stop_reading:
            break
        copies = MEMBERS if room_chat else MEMBERS - 1
        if not due and sum(m.received for m in members) >= copies * sum(m.sent for m in members):
            break                                    # everything sent has arrived
        while due and due[0][0] <= now:
            when, i = heapq.heappop(due)
            member = members[i]
            if room_chat:
                member.say()
            else:
                member.publish(keyframe, delta)
            if member.out and member not in writing:
                writing.add(member)
                selector.modify(member.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, member)
            if when + interval < stop_sending:
                heapq.heappush(due, (when + interval, i))
        timeout = max(0.0, min(due[0][0] if due else now + 0.1, stop_reading) - time.monotonic())
        for key, mask in selector.select(timeout):
            member = key.data
            if mask & selectors.EVENT_READ:
                member.read(counting=True)
            if mask & selectors.EVENT_WRITE:
                member.flush()
                if not member.out:
                    writing.discard(member)
                    selector.modify(member.sock, selectors.EVENT_READ, member)


def probe_heartbeats(probe: Member, duration: float) -> list[float]:
    """Heartbeat round trips on a member outside the rooms, every 100 ms: how responsive the
    reactor stays under the media load (milliseconds)."""
    rtts = []
    end = time.monotonic() + duration
    while time.monotonic() < end:
        started = time.monotonic()
        probe.request(PacketType.HEARTBEAT, {})
        rtts.append((time.monotonic() - started) * 1000)
        time.sleep(max(0.0, 0.1 - (time.monotonic() - started)))
    return rtts


def take(results: multiprocessing.Queue, expected: str, timeout: float, data_dir: str):
    """The next message of a load process; its error (with the server's log) otherwise."""
    kind, value = results.get(timeout=timeout)
    if kind != expected:
        log = (Path(data_dir) / "server.log").read_text().splitlines()[-10:]
        raise RuntimeError(f"a load process failed: {value}\nserver log:\n" + "\n".join(log))
    return value


def run_level(rooms: int, duration: float, procs: int, drain: float = 10.0, profile: str | None = None,
              room_chat: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        db_url = f"sqlite:///{tmp}/bench.db"
        phones = prepare_users(db_url, rooms * MEMBERS + 1, ScryptParams(n=2 ** 10), prefix="1600")
        proc, port = start_server(tmp, db_url)
        try:
            server = psutil.Process(proc.pid)
            probe = Member(port, phones.pop())
            ctx = multiprocessing.get_context("fork")
            results: multiprocessing.Queue = ctx.Queue()
            per_proc = [list(range(r, rooms, procs)) for r in range(procs)]
            workers = []
            setup_started = time.monotonic()
            start_at = ctx.Value("d", 0.0)
            for room_ids in per_proc:
                if not room_ids:
                    continue
                mine = [phones[r * MEMBERS + k] for r in room_ids for k in range(MEMBERS)]
                worker = ctx.Process(target=load_process,
                                     args=(port, mine, start_at, duration, drain, results, room_chat))
                worker.start()
                workers.append(worker)
            ready = 0
            for _ in workers:
                ready += take(results, "ready", 120, tmp)
            print(f"# {ready} members logged in and in their rooms after {time.monotonic() - setup_started:.1f} s",
                  file=sys.stderr, flush=True)
            start_at.value = time.time() + 0.5
            time.sleep(max(0.0, start_at.value - time.time()))
            admin = Path(tmp) / "admin.sock"
            before = query_status(admin)
            loaders = [psutil.Process(w.pid) for w in workers]
            cpu_before, load_before = server.cpu_times(), [p.cpu_times() for p in loaders]
            with py_spy(proc.pid, profile):
                rtts = probe_heartbeats(probe, duration)
            cpu_after, load_after = server.cpu_times(), [p.cpu_times() for p in loaders]
            load_cpu = sum(a.user + a.system - b.user - b.system for a, b in zip(load_after, load_before))
            rss = server.memory_info().rss
            totals = {"scheduled": 0, "sent": 0, "dropped_locally": 0, "received": 0, "keyframe_asks": 0}
            delays: list[float] = []
            for _ in workers:
                part = take(results, "done", duration + 60, tmp)
                for key in totals:
                    totals[key] += part[key]
                delays += part["delays_ms"]
            for worker in workers:
                worker.join(timeout=10)
            after = query_status(admin, timeout=30)
            cpu_end = server.cpu_times()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    expected = totals["scheduled"] * (MEMBERS if room_chat else MEMBERS - 1)   # room chat echoes to its sender
    relayed_out = totals["received"] if room_chat else after["media_frames_out"] - before["media_frames_out"]
    relay_dropped = after["media_frames_dropped"] - before["media_frames_dropped"]
    cpu_window = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    cpu_total = (cpu_end.user + cpu_end.system) - (cpu_before.user + cpu_before.system)
    cpu_system = cpu_end.system - cpu_before.system
    return {
        "rooms": rooms, "members": rooms * MEMBERS,
        "frames_scheduled": totals["scheduled"], "frames_sent": totals["sent"],
        "dropped_by_publishers": totals["dropped_locally"],
        "frames_expected": expected, "frames_received": totals["received"],
        "loss_pct": round(100 * (1 - totals["received"] / expected), 3) if expected else 0.0,
        "relay_dropped_pct": round(100 * relay_dropped / max(1, relayed_out + relay_dropped), 3),
        "relay_frames_per_s": round(relayed_out / duration),
        "delay_p50_ms": round(percentile(delays, 50), 1), "delay_p95_ms": round(percentile(delays, 95), 1),
        "delay_p99_ms": round(percentile(delays, 99), 1),
        "server_cpu_pct": round(100 * cpu_window / duration, 1), "server_rss_mb": round(rss / 2 ** 20, 1),
        "load_cpu_pct": round(100 * load_cpu / duration, 1), "machine_load_avg": round(os.getloadavg()[0], 1),
        "server_cpu_us_per_relayed_frame": round(1e6 * cpu_total / max(1, relayed_out), 1),
        "server_system_cpu_us_per_relayed_frame": round(1e6 * cpu_system / max(1, relayed_out), 1),
        "heartbeat_rtt_p50_ms": round(percentile(rtts, 50), 1), "heartbeat_rtt_max_ms": round(max(rtts), 1),
        "keyframe_requests": totals["keyframe_asks"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", default="5,10,20", help="comma-separated numbers of 4-member rooms to try")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of publishing per level")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--json", action="store_true", help="print one JSON object per level")
    parser.add_argument("--room-chat", action="store_true", help="members send room chat (30 messages/s each) "
                        "instead of media; the figure is CPU per delivered chat copy")
    parser.add_argument("--profile", metavar="FILE", help="record the server with py-spy while it relays (the "
                        "last level's run is what stays in FILE, as collapsed stacks)")
    args = parser.parse_args()
    header = (f"{'rooms':>5} {'members':>7} {'loss %':>7} {'relay drop %':>12} {'relayed/s':>9} "
              f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'server CPU %':>12} {'us/frame':>8} {'of it sys':>9} {'RSS MB':>7} "
              f"{'hb max ms':>9} {'load CPU %':>10} {'loadavg':>7}")
    if not args.json:
        print(f"frames: keyframe {KEYFRAME_SIZE} B every {GOP} frames, delta {DELTA_SIZE} B, {FPS} fps "
              f"(~{BITRATE // 1000} kbit/s per publisher); {args.duration:g} s per level, {args.procs} load processes")
        print(header)
    for rooms in [int(r) for r in args.rooms.split(",")]:
        result = run_level(rooms, args.duration, args.procs, profile=args.profile, room_chat=args.room_chat)
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            print(f"{result['rooms']:>5} {result['members']:>7} {result['loss_pct']:>7.2f} "
                  f"{result['relay_dropped_pct']:>12.2f} {result['relay_frames_per_s']:>9} "
                  f"{result['delay_p50_ms']:>7} {result['delay_p95_ms']:>7} {result['delay_p99_ms']:>7} "
                  f"{result['server_cpu_pct']:>12} {result['server_cpu_us_per_relayed_frame']:>8} "
                  f"{result['server_system_cpu_us_per_relayed_frame']:>9} "
                  f"{result['server_rss_mb']:>7} {result['heartbeat_rtt_max_ms']:>9} {result['load_cpu_pct']:>10} "
                  f"{result['machine_load_avg']:>7}", flush=True)
    print_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
