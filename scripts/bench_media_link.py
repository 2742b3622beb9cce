#!/usr/bin/env python3
"""The two candidate links for media between cluster nodes, measured on the same traffic.

Two processes stand for two nodes, each running the server's own ``Reactor``. The sending
node emits, every 2 ms (a reactor iteration), the media frames due from ``--publishers``
publishers of one meeting: each sends 15 fps video (500 kbit/s: a 15,000-byte keyframe every
2 s, ~3.8 kB deltas) and 50 fps Opus audio (~100 bytes), so 77 % of the frames are audio. Every
frame is the whole forwarded MEDIA_FRAME, as the relay would send it, with its send time in the
capture field; the receiving node takes each frame on its reactor thread and records the delay.

* ``tcp``: the server's media link (``server.cluster.peerlink.PeerLinks``): one TCP
  connection, records queued and written with one ``sendmsg`` per reactor iteration, read and
  parsed on the receiver's reactor.
* ``redis``: the server's node bus (``server.cluster.bus.NodeBus``): each iteration's records go
  to the publisher thread, which routes the batch with one Lua script and one PUBLISH to the
  receiving node's channel; the receiver's subscriber thread hands each batch to its reactor
  (``call_soon_threadsafe``).

Both use a redis-server started for the run (the link only to find the address). Reported: CPU
of the sender, the receiver and redis-server per frame (psutil, over the steady window), and
the delay from send to the receiver's reactor, p50/p99.

    python scripts/bench_media_link.py --publishers 20,80 --seconds 10
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_workers import private_redis  # noqa: E402
from benchlib import percentile  # noqa: E402
from common.frame import HEADER  # noqa: E402
from common.media import FLAG_KEYFRAME, Codec, MediaHeader, MediaKind, media_frame  # noqa: E402
from server.cluster.bus import CALL, NodeBus  # noqa: E402
from server.cluster.peerlink import PeerLinks  # noqa: E402
from server.cluster.store import Keys, connect  # noqa: E402
from server.reactor import Reactor  # noqa: E402

ITERATION = 0.002
VIDEO_FPS, AUDIO_FPS = 15, 50
KEYFRAME_SIZE, GOP = 15_000, 2 * VIDEO_FPS
DELTA_SIZE = (500_000 // 8 * GOP // VIDEO_FPS - KEYFRAME_SIZE) // (GOP - 1)
AUDIO_SIZE = 100
CAPTURE_AT = HEADER.size + 11                  # offset of the capture field in a forwarded frame
CAPTURE = struct.Struct("!Q")
ROOM = 123456789
WARMUP = 1.0


def frames_due(publishers: int, tick: int) -> list[bytes]:
    """The frames every publisher sends in iteration ``tick`` (video and audio spread over ticks)."""
    out = []
    per_second = round(1 / ITERATION)
    for p in range(publishers):
        for fps, kind in ((VIDEO_FPS, MediaKind.CAMERA), (AUDIO_FPS, MediaKind.MICROPHONE)):
            step = per_second // fps
            if (tick + p) % step:
                continue
            seq = (tick + p) // step
            if kind == MediaKind.CAMERA:
                keyframe = seq % GOP == 0
                size, codec, flags = (KEYFRAME_SIZE if keyframe else DELTA_SIZE), Codec.H264, FLAG_KEYFRAME * keyframe
            else:
                size, codec, flags = AUDIO_SIZE, Codec.OPUS, 0
            header = MediaHeader(p + 1, kind, codec, flags, seq, 0)
            out.append(media_frame(header, bytes(size)))
    return out


def stamped(frame: bytes) -> bytes:
    data = bytearray(frame)
    CAPTURE.pack_into(data, CAPTURE_AT, time.time_ns() // 1000)
    return bytes(data)


class Delays:
    """The receiving node's reactor: every frame's delay since it was sent (microseconds)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.frames = 0

    def frame(self, data: bytes) -> None:
        self.frames += 1
        self.delays.append(time.time_ns() // 1000 - CAPTURE.unpack_from(data, CAPTURE_AT)[0])

    def link_media(self, room: int, data: bytes) -> None:
        self.frame(data)

    def link_keyframe(self, room: int, publisher: int, kind: int) -> None:
        pass

    def link_subscribe(self, node: str, room: int, publisher: int, kind: int, paused: bool) -> None:
        pass

    def bus_records(self, records) -> None:
        for _, _, payload in records:
            self.frame(payload)


def receiver(transport: str, redis_url: str, prefix: str, seconds: float, ready, results) -> None:
    reactor = Reactor()
    client = connect(redis_url)
    keys = Keys(prefix)
    delays = Delays()
    pool = ThreadPoolExecutor(2)
    if transport == "tcp":
        links = PeerLinks(reactor, pool, client, keys, "receiver", "127.0.0.1", "127.0.0.1")
        links.start(delays)
    else:
        bus = NodeBus(client, keys, "receiver", call_soon=reactor.call_soon,
                      call_soon_threadsafe=reactor.call_soon_threadsafe, deliver=delays.bus_records,
                      on_reconnect=lambda: None)
        bus.start()
    ready.set()
    reactor.call_later(seconds + WARMUP + 3, reactor.stop)
    reactor.run()
    results.put(delays.delays)


def sender(transport: str, redis_url: str, prefix: str, publishers: int, seconds: float, results) -> None:
    reactor = Reactor()
    client = connect(redis_url)
    keys = Keys(prefix)
    pool = ThreadPoolExecutor(2)
    ticks = round(GOP / VIDEO_FPS / ITERATION)       # one GOP of the whole meeting, made once
    schedule = [frames_due(publishers, t) for t in range(ticks)]
    if transport == "tcp":
        links = PeerLinks(reactor, pool, client, keys, "sender", "127.0.0.1", "127.0.0.1")
        links.start(Delays())

        def send(frame: bytes) -> None:
            links.queued("receiver")
            links.send_media("receiver", ROOM, frame)
    else:
        bus = NodeBus(client, keys, "sender", call_soon=reactor.call_soon,
                      call_soon_threadsafe=reactor.call_soon_threadsafe, deliver=lambda records: None,
                      on_reconnect=lambda: None)
        bus.start()

        def send(frame: bytes) -> None:
            bus.send_to_node("receiver", CALL, 0, frame)
    sent = [0]
    started = time.monotonic()
    end = started + seconds + WARMUP

    def tick(n: int) -> None:
        for frame in schedule[n % ticks]:
            send(stamped(frame))
            sent[0] += 1
        next_at = started + (n + 1) * ITERATION
        if next_at < end:
            reactor.call_later(max(0.0, next_at - time.monotonic()), tick, n + 1)
        else:
            reactor.call_later(1.0, reactor.stop)
    reactor.call_soon(tick, 0)
    reactor.run()
    results.put(sent[0])


def measure(transport: str, publishers: int, seconds: float) -> dict:
    with private_redis() as (redis_url, redis_proc):
        prefix = f"bench-{os.getpid()}:"
        ctx = multiprocessing.get_context("fork")
        ready, results_rx, results_tx = ctx.Event(), ctx.Queue(), ctx.Queue()
        rx = ctx.Process(target=receiver, args=(transport, redis_url, prefix, seconds, ready, results_rx))
        rx.start()
        ready.wait(10)
        tx = ctx.Process(target=sender, args=(transport, redis_url, prefix, publishers, seconds, results_tx))
        tx.start()
        procs = [psutil.Process(p.pid) for p in (tx, rx)] + [redis_proc]
        time.sleep(WARMUP)
        before = [p.cpu_times() for p in procs]
        t0 = time.monotonic()
        time.sleep(seconds)
        after = [p.cpu_times() for p in procs]
        window = time.monotonic() - t0
        sent = results_tx.get(timeout=60)
        delays = results_rx.get(timeout=60)
        tx.join(10)
        rx.join(10)
    cpu = [(a.user + a.system) - (b.user + b.system) for a, b in zip(after, before)]
    frames_per_s = sent / (seconds + WARMUP)
    frames = frames_per_s * window
    steady = delays[int(len(delays) * WARMUP / (seconds + WARMUP)):]
    return {"transport": transport, "publishers": publishers, "frames_per_s": round(frames_per_s),
            "received_pct": round(100 * len(delays) / max(1, sent), 2),
            "sender_us": round(1e6 * cpu[0] / frames, 2), "receiver_us": round(1e6 * cpu[1] / frames, 2),
            "redis_us": round(1e6 * cpu[2] / frames, 2), "total_us": round(1e6 * sum(cpu) / frames, 2),
            "delay_p50_ms": round(percentile(steady, 50) / 1000, 2),
            "delay_p99_ms": round(percentile(steady, 99) / 1000, 2),
            "load_avg": round(os.getloadavg()[0], 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--publishers", default="20,80", help="publishers crossing the link (comma-separated levels)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--transports", default="tcp,redis")
    args = parser.parse_args()
    print(f"{'link':>6} {'publishers':>10} {'frames/s':>8} {'recv %':>7} {'send us':>8} {'recv us':>8} "
          f"{'redis us':>8} {'total us':>8} {'p50 ms':>7} {'p99 ms':>7} {'loadavg':>7}")
    for publishers in [int(p) for p in args.publishers.split(",")]:
        for transport in args.transports.split(","):
            r = measure(transport, publishers, args.seconds)
            print(f"{r['transport']:>6} {r['publishers']:>10} {r['frames_per_s']:>8} {r['received_pct']:>7} "
                  f"{r['sender_us']:>8} {r['receiver_us']:>8} {r['redis_us']:>8} {r['total_us']:>8} "
                  f"{r['delay_p50_ms']:>7} {r['delay_p99_ms']:>7} {r['load_avg']:>7}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
