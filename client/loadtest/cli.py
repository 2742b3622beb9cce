"""`meeting-loadtest SCENARIO [options]`: simulated clients against a running server.

scenarios:
  connect  N clients register and log in at --ramp per second, then heartbeat for --duration s
  chat     --pairs of friends message each other flat out (--window in flight) or at --rate in all
  room     --rooms meetings of --members, all publishing pre-encoded H.264 (+ Opus) at --fps
  files    --pairs send --file-size files back to back over the live path for --duration s

The server should hash passwords cheaply for a load test (``MEETING_SCRYPT_N=1024``), or the
run measures scrypt. See docs/PERFORMANCE.md for the measured tables and their command lines.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from typing import Sequence

from client.servers import parse_servers

from .worker import Settings


def parse_size(text: str) -> int:
    """``4M``, ``512k``, ``1G`` or plain bytes."""
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    text = text.strip().lower().removesuffix("b").removesuffix("i")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def parse_rate(text: str) -> int:
    """``500k``, ``2M`` (bits per second) or plain numbers."""
    units = {"k": 1000, "m": 1000 ** 2}
    text = text.strip().lower().removesuffix("bps").removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from .scenarios import SCENARIOS
    p = argparse.ArgumentParser(prog="meeting-loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=sorted(SCENARIOS), help="what the simulated clients do")
    p.add_argument("--server", default="127.0.0.1:8600",
                   help="HOST:PORT (default 127.0.0.1:8600); several separated by commas get the clients round "
                        "robin, with figures per server")
    p.add_argument("--clients", "-n", type=int, default=100, help="simulated clients in all (connect)")
    p.add_argument("--processes", "-p", type=int, default=min(2, os.cpu_count() or 1),
                   help="load-generating processes (default: 2 or the CPU count if smaller)")
    p.add_argument("--ramp", type=float, default=100.0, help="new clients per second (default 100)")
    p.add_argument("--concurrency", type=int, default=48,
                   help="clients logging in at the same time (default 48; the server refuses more than "
                        "max_unauthenticated_per_address=64 from one address)")
    p.add_argument("--duration", "-t", type=float, default=10.0,
                   help="seconds of steady load once everyone is in (default 10)")
    p.add_argument("--heartbeat", type=float, default=0.0,
                   help="seconds between heartbeats (default: the server's heartbeat_interval)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as lost")
    p.add_argument("--tls-ca", metavar="FILE", default="", help="speak TLS, verifying the server against this CA file")
    p.add_argument("--tls-pin", metavar="SHA256", default="",
                   help="speak TLS, trusting the server certificate with this fingerprint (scripts/make-cert.sh prints it)")
    p.add_argument("--run-id", type=int, default=None,
                   help="phone numbers are 7<run-id:6><process:2><index:6>; the same id reuses the accounts")
    chat = p.add_argument_group("chat")
    chat.add_argument("--pairs", type=int, default=None, help="pairs of friends (chat, files; default clients/2)")
    chat.add_argument("--rate", type=float, default=0.0, help="messages per second in all (default: flat out)")
    chat.add_argument("--window", type=int, default=8, help="unacknowledged messages per sender when flat out")
    chat.add_argument("--message-size", type=int, default=64, help="bytes of text per message")
    room = p.add_argument_group("room")
    room.add_argument("--rooms", type=int, default=2, help="meetings (default 2)")
    room.add_argument("--members", type=int, default=4, help="members per meeting, all publishing (default 4)")
    room.add_argument("--bitrate", type=parse_rate, default=500_000, help="video bits/s per publisher (500k)")
    room.add_argument("--fps", type=int, default=15, help="video frames per second (15)")
    room.add_argument("--video-size", default="320x240", help="encoded picture size (320x240)")
    room.add_argument("--no-audio", dest="audio", action="store_false", help="publish video only")
    files = p.add_argument_group("files")
    files.add_argument("--file-size", type=parse_size, default=4 * 1024 * 1024,
                       help="bytes per file (4M); each pair sends files back to back for the duration")
    out = p.add_argument_group("output")
    out.add_argument("--admin-socket", help="the server's admin socket, to add its own figures to the report")
    out.add_argument("--json", action="store_true", help="print the result as JSON instead of the table")
    out.add_argument("--plot", metavar="FILE.png", help="draw latency over time (needs matplotlib)")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return p


def settings_from(args: argparse.Namespace) -> Settings:
    """The run's settings; ValueError (a readable reason) for a bad --server."""
    servers = parse_servers(args.server)
    clients = args.clients
    if args.scenario in ("chat", "files"):
        clients = 2 * (args.pairs if args.pairs is not None else max(1, args.clients // 2))
    elif args.scenario == "room":
        clients = args.rooms * args.members
    processes = max(1, min(args.processes, clients))
    return Settings(
        scenario=args.scenario, servers=servers, clients=clients, processes=processes,
        ramp=args.ramp, concurrency=args.concurrency, duration=args.duration, heartbeat=args.heartbeat,
        timeout=args.timeout, run_id=args.run_id if args.run_id is not None else random.randrange(10 ** 6),
        rate=args.rate, window=args.window, message_size=args.message_size, rooms=args.rooms,
        members=args.members, bitrate=args.bitrate, fps=args.fps, video_size=args.video_size, audio=args.audio,
        file_size=args.file_size, tls_ca=args.tls_ca, tls_pin=args.tls_pin)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .report import format_table, plot, to_json
    from .runner import run
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"meeting-loadtest: --server {args.server!r}: {exc}", file=sys.stderr)
        return 2
    if settings.scenario == "room":
        from .clip import encode_clip
        width, _, height = settings.video_size.partition("x")
        settings.clip = encode_clip(int(width), int(height), settings.fps, settings.bitrate, settings.audio)
    result = run(settings, admin_socket=args.admin_socket, show_progress=not args.quiet)
    if args.json:
        json.dump(to_json(result), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_table(result))
    if args.plot:
        plot(result, args.plot)
        print(f"latency plot written to {args.plot}", file=sys.stderr)
    return 1 if result.failures or not result.metrics.ms else 0
