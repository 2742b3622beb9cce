#!/usr/bin/env python3
"""CPU per publisher: capture (test pattern) + H.264 encode in real time, as a bot publishes.

For each profile it runs the publisher's loop (paced at the frame rate for ``--seconds``)
and reports the process CPU it used as a share of one core, the CPU per frame split into
picture generation and encoding, and the bitrate it produced. It runs one profile at a time,
in this process only; nothing else runs in it.

    .venv/bin/python scripts/bench_encode.py                 # 640x480@30, 500 kbit/s
    .venv/bin/python scripts/bench_encode.py --profile 1280x720@30:1500000 --seconds 10 --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from client.media.clock import Pacer  # noqa: E402
from client.media.sources import TestPatternSource  # noqa: E402
from client.media.video_codec import H264Encoder, VideoProfile  # noqa: E402


def parse_profile(text: str) -> VideoProfile:
    """WIDTHxHEIGHT@FPS:BITRATE, e.g. 640x480@30:500000."""
    size, _, rest = text.partition("@")
    fps, _, bitrate = rest.partition(":")
    width, height = (int(v) for v in size.split("x"))
    return VideoProfile(width, height, float(fps or 30), int(bitrate or 500_000))


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def run(profile: VideoProfile, seconds: float, threads: int, preset: str) -> dict:
    profile = VideoProfile(profile.width, profile.height, profile.fps, profile.bitrate, preset=preset)
    source = TestPatternSource(profile.width, profile.height, profile.fps)
    encoder = H264Encoder(profile, threads=threads)
    pacer = Pacer(profile.fps)
    frames = payload = 0
    capture_cpu = encode_cpu = 0.0
    wall0, cpu0 = time.monotonic(), cpu_seconds()
    while time.monotonic() - wall0 < seconds:
        pacer.wait()
        t0 = time.process_time()
        picture = source.read()
        t1 = time.process_time()
        for unit in encoder.encode(picture.image):
            payload += len(unit.payload)
        t2 = time.process_time()
        capture_cpu += t1 - t0
        encode_cpu += t2 - t1
        frames += 1
    wall, cpu = time.monotonic() - wall0, cpu_seconds() - cpu0
    return {
        "profile": f"{profile.width}x{profile.height}@{profile.fps:g}",
        "bitrate_target_kbps": profile.bitrate // 1000,
        "preset": preset, "threads": threads, "seconds": round(wall, 1), "frames": frames,
        "achieved_fps": round(frames / wall, 1),
        "cpu_percent_of_one_core": round(100 * cpu / wall, 1),
        "capture_ms_per_frame": round(1000 * capture_cpu / frames, 2),
        "encode_ms_per_frame": round(1000 * encode_cpu / frames, 2),
        "bitrate_kbps": round(payload * 8 / wall / 1000),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", action="append", type=parse_profile,
                   help="WIDTHxHEIGHT@FPS:BITRATE (repeatable; default 640x480@30:500000)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1, help="x264 threads (the publisher's default is 1)")
    p.add_argument("--preset", default="ultrafast")
    p.add_argument("--json", action="store_true", help="one JSON object per profile instead of a table")
    args = p.parse_args()
    profiles = args.profile or [parse_profile("640x480@30:500000")]
    rows = [run(profile, args.seconds, args.threads, args.preset) for profile in profiles]
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return 0
    print(f"{'profile':<16}{'kbit/s':>8}{'fps':>7}{'CPU % core':>12}{'capture ms':>12}{'encode ms':>11}")
    for row in rows:
        print(f"{row['profile']:<16}{row['bitrate_kbps']:>8}{row['achieved_fps']:>7}"
              f"{row['cpu_percent_of_one_core']:>12}{row['capture_ms_per_frame']:>12}{row['encode_ms_per_frame']:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
