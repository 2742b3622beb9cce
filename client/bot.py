"""`meeting-client bot`: a headless meeting member for tests, demos and load.

It logs in (registering first if asked), creates or joins a meeting, publishes the moving
test pattern (or the camera, when there is one) and a tone, receives and decodes everybody
else, and can report what it received as JSON: per member, the video frames decoded, the
capture-to-decoded delay percentiles, and the audio frames decoded and concealed.

    meeting-client bot --server 127.0.0.1:8600 --phone 13800000001 --register --create \\
        --number-file /tmp/room --duration 30 --report -
    meeting-client bot --server 127.0.0.1:8600 --phone 13800000002 --register \\
        --join "$(cat /tmp/room)" --duration 30 --report -
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from common.errors import ApiError, ErrorCode
from common.media import MediaKind

from .events import Event, EventKind, EventRecorder
from .kernel import ClientKernel, ConnectionLost
from .link import ConnectError
from .media.audio_io import NullSink, ToneSource, open_speakers
from .media.pipeline import AudioPublisher, MeetingReceiver, VideoPublisher, delay_percentiles
from .media.sources import TestPatternSource, open_camera
from .servers import Address, parse_servers
from .media.video_codec import H264Encoder, VideoProfile
from .tls import TlsOptions

log = logging.getLogger("client.bot")


@dataclass
class BotMedia:
    width: int = 640
    height: int = 480
    fps: float = 30.0
    bitrate: int = 500_000
    tone: float = 440.0          # Hz; 0 = silence
    video: bool = True
    audio: bool = True
    camera: bool = False         # use a real camera when present (default: always the test pattern)
    speakers: bool = False       # play what is received (default: the null sink)


class Bot:
    """One meeting member driven from code (the tests use it in-process) or from the CLI."""

    def __init__(self, servers: Sequence[Address], phone: str, password: str, nickname: str = "bot",
                 media: BotMedia | None = None, tls: TlsOptions | None = None) -> None:
        self.kernel = ClientKernel.for_servers(servers, tls=tls)
        self.events = EventRecorder()
        self.kernel.add_listener(self.events)
        self.kernel.add_listener(self._on_event)
        self.phone, self.password, self.nickname = phone, password, nickname
        self.media = media or BotMedia()
        self.rooms = self.kernel.rooms
        self.video: VideoPublisher | None = None
        self.audio: AudioPublisher | None = None
        self.receiver: MeetingReceiver | None = None
        self.joined_at: float | None = None     # time.monotonic() of the last create/join call

    # -- session and room -------------------------------------------------------------------------
    def login(self, register: bool = False) -> dict:
        if register:
            try:
                self.kernel.register(self.phone, self.password, self.nickname)
            except ApiError as exc:
                if exc.code != ErrorCode.PHONE_TAKEN:
                    raise
        user = self.kernel.login(self.phone, self.password)
        self._start_media()
        return user

    def create(self, title: str = "", password: str = "") -> str:
        self.joined_at = time.monotonic()
        room = self.rooms.create(title, password)
        self._announce_media()
        return room["number"]

    def join(self, number: str, password: str = "") -> dict:
        self.joined_at = time.monotonic()
        room = self.rooms.join(number, password)
        self._announce_media()
        return room

    def leave(self) -> None:
        self.rooms.leave()

    def _announce_media(self) -> None:
        self.rooms.set_media_state(camera=self.media.video, microphone=self.media.audio, screen=False)

    def _start_media(self) -> None:
        if self.receiver is not None:
            return
        m = self.media
        self.receiver = MeetingReceiver(self.rooms, open_speakers() if m.speakers else NullSink())
        if m.video:
            if m.camera:
                source = open_camera(0, m.width, m.height, m.fps, label=self.nickname)
            else:
                source = TestPatternSource(m.width, m.height, m.fps, label=self.nickname)
            encoder = H264Encoder(VideoProfile(m.width, m.height, m.fps, m.bitrate))
            self.video = VideoPublisher(self.rooms, source, encoder).start()
        if m.audio:
            self.audio = AudioPublisher(self.rooms, ToneSource(m.tone, amplitude=0.2 if m.tone else 0.0)).start()

    def _on_event(self, event: Event) -> None:
        """Network thread: keep the receivers in step with the member list."""
        if self.receiver is None:
            return
        if event.kind == EventKind.ROOM_MEMBERS:
            me = (self.kernel.user or {}).get("id")
            others = {m["user_id"] for m in event["room"].get("members", []) if m["user_id"] != me}
            self.receiver.retain(others)
        elif event.kind in (EventKind.ROOM_LEFT, EventKind.ROOM_CLOSED, EventKind.ROOM_REMOVED):
            self.receiver.retain(set())
        elif event.kind == EventKind.ROOM_MUTE and self.audio is not None:
            self.audio.muted = True          # the host asked: a bot obeys, and says so
            self.kernel.run_task(self.rooms.set_media_state, self.media.video, False, False)

    # -- what was received --------------------------------------------------------------------------
    def first_picture_after_join(self, user_id: int) -> float | None:
        """Seconds from the last create/join call to the first decoded picture of ``user_id``."""
        member = None
        if self.receiver is not None:
            member = self.receiver.members.get(user_id) or self.receiver.departed.get(user_id)
        stream = member.video.get(MediaKind.CAMERA) if member else None
        if stream is None or stream.stats.first_decoded_at is None or self.joined_at is None:
            return None
        return stream.stats.first_decoded_at - self.joined_at

    def report(self) -> dict:
        sent = {}
        if self.video is not None:
            s = self.video.stats
            sent["video"] = {"captured": s.captured, "sent": s.sent, "not_sent": s.not_sent,
                             "keyframes": s.keyframes, "bytes": s.bytes_sent,
                             "encode_cpu_ms_per_frame": round(1000 * s.encode_seconds / max(1, s.sent), 2)}
        if self.audio is not None:
            s = self.audio.stats
            sent["audio"] = {"captured": s.captured, "sent": s.sent, "bytes": s.bytes_sent}
        received = {}
        members = {**self.receiver.departed, **self.receiver.members} if self.receiver else {}
        for uid, member in members.items():
            entry: dict = {}
            for kind, stream in list(member.video.items()):
                st = stream.stats
                first = self.first_picture_after_join(uid) if kind == MediaKind.CAMERA else None
                entry[kind.name.lower()] = {
                    "received": st.received, "decoded": st.decoded, "skipped": st.skipped, "gaps": st.gaps,
                    "decode_errors": st.decode_errors, "keyframe_requests": st.keyframe_requests,
                    "first_picture_s": None if first is None else round(first, 3),
                    "delay_ms": delay_percentiles(st.delays_ms)}
            audio, jitter = member.audio, member.audio.jitter.stats
            entry["audio"] = {"received": jitter.received, "decoded": audio.decoded, "concealed": audio.concealed,
                              "late": jitter.late, "jitter_depth_ms": audio.jitter.depth_ms()}
            received[str(uid)] = entry
        room = self.rooms.room
        return {"user_id": (self.kernel.user or {}).get("id"), "nickname": self.nickname,
                "room": room["number"] if room else None, "sent": sent, "received": received,
                "present": sorted(self.receiver.members) if self.receiver else []}

    def close(self) -> None:
        for publisher in (self.video, self.audio):
            if publisher is not None:
                publisher.stop()
        if self.receiver is not None:
            self.receiver.close()
        self.kernel.close()


# -- command line -------------------------------------------------------------------------------------

def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x480, not {text!r}") from None
    if width % 2 or height % 2 or width < 48 or height < 64:
        raise argparse.ArgumentTypeError("width and height must be even, at least 48x64")
    return width, height


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="meeting-client bot", description="a headless meeting member")
    p.add_argument("--server", default="127.0.0.1:8600",
                   help="HOST:PORT (default 127.0.0.1:8600); several separated by commas are tried in turn")
    p.add_argument("--phone", help="account phone number (default with --register: a random one)")
    p.add_argument("--password", default="bot password 123", help="account password")
    p.add_argument("--nickname", default="bot")
    p.add_argument("--register", action="store_true", help="register the account first (fine if it exists)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--create", action="store_true", help="create a meeting")
    where.add_argument("--join", metavar="NUMBER", help="join the meeting with this 9-digit number")
    p.add_argument("--room-password", default="", help="meeting password (to create with or to join)")
    p.add_argument("--title", default="", help="meeting title (with --create)")
    p.add_argument("--number-file", help="write the meeting number to this file once in the meeting")
    p.add_argument("--duration", type=float, default=0.0, help="seconds to stay (default: until interrupted)")
    p.add_argument("--size", type=_size, default=(640, 480), help="video size (640x480; 1280x720 for HD)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--bitrate", type=int, default=500_000, help="video bits per second")
    p.add_argument("--tone", type=float, default=440.0, help="tone frequency in Hz (0 = silence)")
    p.add_argument("--no-video", action="store_true")
    p.add_argument("--no-audio", action="store_true")
    p.add_argument("--camera", action="store_true", help="use the camera if there is one")
    p.add_argument("--speakers", action="store_true", help="play received audio if there is a sound card")
    p.add_argument("--report", metavar="PATH", help="write a JSON report at the end ('-' for stdout)")
    p.add_argument("--ca-file", help="TLS: trust this CA certificate")
    p.add_argument("--fingerprint", help="TLS: pin the server certificate's SHA-256 fingerprint")
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        servers = parse_servers(args.server)
    except ValueError as exc:
        print(f"meeting-client bot: --server {args.server!r}: {exc}", file=sys.stderr)
        return 2
    if not args.phone and not args.register:
        print("meeting-client bot: --phone is needed (or --register for a new random account)", file=sys.stderr)
        return 2
    phone = args.phone or f"19{random.randrange(10**9):09d}"
    tls = TlsOptions.from_flags(args.ca_file, args.fingerprint)
    media = BotMedia(width=args.size[0], height=args.size[1], fps=args.fps, bitrate=args.bitrate, tone=args.tone,
                     video=not args.no_video, audio=not args.no_audio, camera=args.camera, speakers=args.speakers)
    bot = Bot(servers, phone, args.password, args.nickname, media, tls)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        bot.login(register=args.register)
        number = bot.create(args.title, args.room_password) if args.create else args.join
        if args.join:
            bot.join(args.join, args.room_password)
        if args.number_file:     # written whole (rename) so a script polling for it never reads half
            with open(args.number_file + ".tmp", "w", encoding="ascii") as fh:
                fh.write(f"{number}\n")
            os.replace(args.number_file + ".tmp", args.number_file)
        print(f"meeting-client bot: {args.nickname} ({phone}) in meeting {number}", file=sys.stderr)
        stop.wait(args.duration if args.duration > 0 else None)
        report = bot.report()
        if bot.rooms.room is not None:
            bot.leave()
    except (ApiError, ConnectError, ConnectionLost, TimeoutError) as exc:
        print(f"meeting-client bot: {exc}", file=sys.stderr)
        return 1
    finally:
        bot.close()
    if args.report:
        text = json.dumps(report, indent=2)
        if args.report == "-":
            print(text)
        else:
            with open(args.report, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
    return 0
