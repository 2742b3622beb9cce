#!/usr/bin/env python3
"""Media across two cluster nodes: server CPU per relayed copy, same node vs across nodes, and
the delay a crossing adds.

Starts two server processes of one cluster (a fresh MySQL database, a redis-server of the
run's own) and N rooms of 4 members, publishing as ``scripts/bench_relay.py`` does (30 fps,
~500 kbit/s of synthetic H.264-sized frames, each to the 3 other members), in one of two
layouts:

* ``same``: every member of every room on node 1 (node 2 idle): each frame is 3 local copies;
* ``halves``: every member of a room on the same node, half the rooms on each node: the load of
  ``same`` over two processes, nothing crosses;
* ``split``: 2 members of each room on each node: each frame is 1 local copy, 1 crossing to the
  other node and 2 copies there.

Every way 3 copies per frame reach members, so the server CPU (both processes, psutil, over
the publishing window) per delivered copy compares them; the CPU per crossing is the extra CPU
of ``split`` over ``halves`` (both two processes at the same load) divided by the frames that
crossed. The delay, capture to receipt at the load process, is split by whether publisher and
receiver are on the same node, so the delay a crossing adds is the difference of the two.

    python scripts/bench_cluster_media.py --rooms 24 --duration 8
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import selectors
import struct
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_relay import CAPTURE, FPS, FRAME_PREFIX, MEMBERS, Member, publish_and_read  # noqa: E402
from bench_relay import DELTA_SIZE, KEYFRAME_SIZE  # noqa: E402
from bench_workers import private_redis  # noqa: E402
from benchlib import percentile, prepare_users  # noqa: E402
from common.packets import PacketType  # noqa: E402
from server.admin import query_status  # noqa: E402
from server.passwords import ScryptParams  # noqa: E402
from server.storage import open_storage  # noqa: E402
from tests.helpers import make_mysql_database  # noqa: E402
from tests.server_process import ServerProcess  # noqa: E402

PUBLISHER = struct.Struct("!I")
SETTINGS = ("--set", "rooms_per_minute=0", "--set", "registrations_per_minute_per_address=0",
            "--set", "room_joins_per_minute_per_address=0", "--set", "max_unauthenticated_per_address=100000")


class NodeMember(Member):
    """A bench_relay member that knows each publisher's node and splits its delays by it."""

    def __init__(self, port: int, phone: str, node: int, node_of: dict[int, int]) -> None:
        super().__init__(port, phone)
        self.node = node
        self.node_of = node_of
        self.same_ms: list[float] = []
        self.cross_ms: list[float] = []

    def scan(self, data: bytes, counting: bool) -> None:
        buf = self.inbuf
        buf += data
        now_us = time.time_ns() // 1000
        pos, end = 0, len(buf)
        while end - pos >= FRAME_PREFIX.size:
            _, ptype, length, _ = FRAME_PREFIX.unpack_from(buf, pos)
            body = pos + FRAME_PREFIX.size
            if end - body < length:
                break
            if ptype == PacketType.MEDIA_FRAME and counting:
                self.received += 1
                if self.received % 2 == 0:
                    delay = (now_us - CAPTURE.unpack_from(buf, body + 11)[0]) / 1000
                    same = self.node_of.get(PUBLISHER.unpack_from(buf, body)[0]) == self.node
                    (self.same_ms if same else self.cross_ms).append(delay)
            elif ptype == PacketType.KEYFRAME_REQUEST_EVENT:
                self.want_keyframe = True
                self.keyframe_asks += 1
            pos = body + length
        del buf[:pos]


def load(ports: list[int], rooms: list[list[tuple[str, int]]], node_of: dict[int, int], start_at, duration: float,
         results) -> None:
    """Members of the given rooms ((phone, node) each, the first creates), publishing from the
    shared start time for ``duration`` s, then reading until everything arrived (at most 10 s)."""
    try:
        members: list[NodeMember] = []
        for room in rooms:
            group = [NodeMember(ports[node], phone, node, node_of) for phone, node in room]
            number = group[0].request(PacketType.ROOM_CREATE, {"title": "bench"})["room"]["number"]
            for member in group[1:]:
                member.request(PacketType.ROOM_JOIN, {"number": number})
            members += group
        time.sleep(1.0)                                  # room states reach every node
        keyframe, delta = os.urandom(KEYFRAME_SIZE), os.urandom(DELTA_SIZE)
        selector = selectors.DefaultSelector()
        for member in members:
            member.sock.setblocking(False)
            selector.register(member.sock, selectors.EVENT_READ, member)
        results.put(("ready", len(members)))
        while not start_at.value or time.time() < start_at.value:
            for key, _ in selector.select(0.05):
                key.data.read(counting=False)
        publish_and_read(selector, members, keyframe, delta, duration, 10.0)
        results.put(("done", {"sent": sum(m.sent for m in members), "received": sum(m.received for m in members),
                              "same_ms": [d for m in members for d in m.same_ms],
                              "cross_ms": [d for m in members for d in m.cross_ms]}))
    except Exception as exc:
        results.put(("error", f"{exc.__class__.__name__}: {exc}"))


def run(layout: str, rooms: int, duration: float, procs: int) -> dict:
    db_url, drop = make_mysql_database()
    try:
        with private_redis() as (redis_url, redis_proc), tempfile.TemporaryDirectory() as tmp:
            phones = prepare_users(db_url, rooms * MEMBERS, ScryptParams(n=2 ** 10), prefix="1700")
            storage = open_storage(db_url)
            with storage.db.tx() as cur:
                id_of = {phone: uid for uid, phone in cur.all("SELECT id, phone FROM users")}
            storage.close()
            nodes = [ServerProcess(db_url, Path(tmp) / f"n{i}", args=SETTINGS, env={
                "MEETING_REDIS": redis_url, "MEETING_REDIS_PREFIX": "bench:", "MEETING_NODE_NAME": f"n{i}"})
                for i in (1, 2)]
            try:
                ports = [node.start() for node in nodes]
                node_for = {"same": lambda r, k: 0, "halves": lambda r, k: r % 2,
                            "split": lambda r, k: k % 2}[layout]
                plan = [[(phones[r * MEMBERS + k], node_for(r, k)) for k in range(MEMBERS)] for r in range(rooms)]
                node_of = {id_of[phone]: node for room in plan for phone, node in room}
                ctx = multiprocessing.get_context("fork")
                results = ctx.Queue()
                start_at = ctx.Value("d", 0.0)
                workers = [ctx.Process(target=load,
                                       args=(ports, plan[p::procs], node_of, start_at, duration, results))
                           for p in range(procs)]
                for worker in workers:
                    worker.start()
                for _ in workers:
                    kind, value = results.get(timeout=120)
                    if kind != "ready":
                        raise RuntimeError(value)
                servers = [psutil.Process(node.pid) for node in nodes]
                loaders = [psutil.Process(w.pid) for w in workers]
                admins = [node.data_dir / "admin.sock" for node in nodes]
                start_at.value = time.time() + 0.5
                time.sleep(max(0.0, start_at.value - time.time()))
                status_before = [query_status(a) for a in admins]
                cpu_before = [p.cpu_times() for p in servers + loaders]
                time.sleep(duration)
                cpu_after = [p.cpu_times() for p in servers + loaders]
                status_after = [query_status(a) for a in admins]
                parts = []
                for _ in workers:
                    kind, value = results.get(timeout=duration + 60)
                    if kind != "done":
                        raise RuntimeError(value)
                    parts.append(value)
                for worker in workers:
                    worker.join(10)
            finally:
                for node in nodes:
                    node.stop()
    finally:
        drop()
    cpu = [(a.user + a.system) - (b.user + b.system) for a, b in zip(cpu_after, cpu_before)]
    copies = sum(a["media_frames_out"] - b["media_frames_out"] for a, b in zip(status_after, status_before))
    crossed = sum(a.get("media_frames_to_nodes", 0) - b.get("media_frames_to_nodes", 0)
                  for a, b in zip(status_after, status_before))
    sent = sum(p["sent"] for p in parts)
    received = sum(p["received"] for p in parts)
    same = [d for p in parts for d in p["same_ms"]]
    cross = [d for p in parts for d in p["cross_ms"]]
    server_cpu = sum(cpu[:2])
    return {"layout": layout, "rooms": rooms, "copies_per_s": round(copies / duration),
            "crossings_per_s": round(crossed / duration),
            "loss_pct": round(100 * (1 - received / max(1, (MEMBERS - 1) * sent)), 2),
            "server_cpu_pct": [round(100 * c / duration, 1) for c in cpu[:2]],
            "us_per_copy": round(1e6 * server_cpu / max(1, copies), 1),
            "server_cpu_s": server_cpu, "crossed": crossed,
            "load_cpu_pct": round(100 * sum(cpu[2:]) / duration, 1),
            "same_p50": round(percentile(same, 50), 2), "same_p99": round(percentile(same, 99), 2),
            "cross_p50": round(percentile(cross, 50), 2), "cross_p99": round(percentile(cross, 99), 2),
            "load_avg": round(os.getloadavg()[0], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=24, help="4-member rooms")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of publishing per layout")
    parser.add_argument("--procs", type=int, default=2, help="load processes")
    parser.add_argument("--layouts", default="same,halves,split")
    args = parser.parse_args()
    print(f"{args.rooms} rooms of {MEMBERS}, {FPS} fps, {args.duration:g} s per layout")
    print(f"{'layout':>6} {'copies/s':>8} {'crossed/s':>9} {'loss %':>6} {'server CPU % (n1, n2)':>22} "
          f"{'us/copy':>7} {'same p50/p99 ms':>16} {'cross p50/p99 ms':>17} {'load CPU %':>10} {'loadavg':>7}")
    results = {}
    for layout in args.layouts.split(","):
        r = results[layout] = run(layout, args.rooms, args.duration, args.procs)
        print(f"{layout:>6} {r['copies_per_s']:>8} {r['crossings_per_s']:>9} {r['loss_pct']:>6} "
              f"{str(r['server_cpu_pct']):>22} {r['us_per_copy']:>7} "
              f"{str(r['same_p50']) + ' / ' + str(r['same_p99']):>16} "
              f"{str(r['cross_p50']) + ' / ' + str(r['cross_p99']):>17} {r['load_cpu_pct']:>10} {r['load_avg']:>7}",
              flush=True)
    if "halves" in results and "split" in results and results["split"]["crossed"]:
        extra = results["split"]["server_cpu_s"] - results["halves"]["server_cpu_s"]
        print(f"server CPU per crossing (split - halves, both processes): "
              f"{1e6 * extra / results['split']['crossed']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
