"""Publishers (source -> encoder -> ``rooms.publish``) and the receiving side of a meeting.

Threads: each publisher captures and encodes on its own thread; the network thread only
enqueues what arrives (media listener); each remote video stream is decoded on its own
thread; one playout clock (the audio sink's) pulls every member's jitter buffer, decodes and
conceals, mixes, and feeds lip sync and the active-speaker choice. ``rooms`` is
``kernel.rooms`` (see client/rooms.py) or anything with the same media methods.

A window shows a member by polling ``receiver.members[uid].video[kind].video.pop_due()``
(a PyAV frame, lip-synced; ``frame.to_image()`` gives a PIL image) and highlights
``receiver.active_speaker.current``; ``camera_publisher`` and ``screen_publisher`` build the
publishers with the right profiles and fall back to the test pattern without hardware.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import av
import numpy as np

from common.media import Codec, MediaHeader, MediaKind

from .audio_codec import FRAME_SAMPLES, OpusDecoder, OpusEncoder
from .audio_io import AudioSink, AudioSource, NullSink
from .clock import Pacer, now_us
from .echo import EchoSuppressor
from .jitter import JitterBuffer
from .mixer import mix
from .sources import VideoSource, open_camera, open_screen
from .sync import AvSync, SyncedVideo
from .vad import ActiveSpeaker, VoiceActivity
from .video_codec import CAMERA_VGA, DecodeError, H264Decoder, H264Encoder, VideoProfile, screen_profile

log = logging.getLogger("client.media.pipeline")

KEYFRAME_REQUEST_INTERVAL = 0.3     # at most one keyframe request per stream per 300 ms
VIDEO_QUEUE_LIMIT = 30              # decoder backlog (frames) before skipping to a keyframe
CONCEAL_FADE = 0.5                  # each concealed audio frame repeats the last at half level
CONCEAL_MAX = 3                     # ...up to this many frames, then silence


class MediaRooms(Protocol):
    room: dict | None

    def publish(self, kind: MediaKind, codec: Codec, payload: bytes, keyframe: bool, capture_us: int) -> bool: ...
    def add_media_listener(self, fn: Callable[[MediaHeader, bytes], None]) -> None: ...
    def add_keyframe_listener(self, fn: Callable[[MediaKind], None]) -> None: ...
    def remove_media_listener(self, fn: Callable[[MediaHeader, bytes], None]) -> None: ...
    def remove_keyframe_listener(self, fn: Callable[[MediaKind], None]) -> None: ...
    def request_keyframe(self, user_id: int, kind: MediaKind) -> None: ...
    def subscribe(self, user_id: int, kind: MediaKind, paused: bool) -> None: ...


# -- publishing --------------------------------------------------------------------------------

@dataclass
class PublisherStats:
    captured: int = 0
    sent: int = 0
    not_sent: int = 0            # publish() refused: not in a room, link down or congested
    keyframes: int = 0
    bytes_sent: int = 0
    encode_seconds: float = 0.0
    sent_captures: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))


class _Publisher:
    """The shared thread loop; subclasses capture and encode one frame in ``_step``."""

    kind: MediaKind

    def __init__(self, rooms: MediaRooms, name: str) -> None:
        self.rooms = rooms
        self.muted = False
        self.stats = PublisherStats()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> "_Publisher":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread; the source is closed by that thread as it ends (closing it from
        here while the thread is inside ``read`` crashed the X capture library), or here if
        the thread never ran."""
        self._stop.set()
        if self._thread.ident is None:
            self._close_source()
        elif self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._step():
                    break
        except Exception:
            log.exception("%s failed", self._thread.name)
        finally:
            self._close_source()

    def _send(self, codec: Codec, payload: bytes, keyframe: bool, capture_us: int) -> bool:
        if self.rooms.publish(self.kind, codec, payload, keyframe, capture_us):
            self.stats.sent += 1
            self.stats.bytes_sent += len(payload)
            self.stats.keyframes += keyframe
            self.stats.sent_captures.append(capture_us)
            return True
        self.stats.not_sent += 1
        return False

    def _step(self) -> bool:
        raise NotImplementedError

    def _close_source(self) -> None:
        raise NotImplementedError


class VideoPublisher(_Publisher):
    """Camera, screen or test pattern -> H.264 -> the room. Keyframes when asked (by the
    server, or by ``publish`` after a local drop) and whenever we (re)enter a room or unmute."""

    def __init__(self, rooms: MediaRooms, source: VideoSource, encoder: H264Encoder,
                 kind: MediaKind = MediaKind.CAMERA) -> None:
        super().__init__(rooms, f"publish-{kind.name.lower()}")
        self.kind = kind
        self.source = source
        self.encoder = encoder
        self._pacer = None if source.paced else Pacer(source.fps)
        self._was_sending = False
        rooms.add_keyframe_listener(self._on_keyframe_request)

    def _on_keyframe_request(self, kind: MediaKind) -> None:
        if kind == self.kind:
            self.encoder.request_keyframe()

    def stop(self) -> None:
        self.rooms.remove_keyframe_listener(self._on_keyframe_request)
        super().stop()

    def _step(self) -> bool:
        if self._pacer is not None and not self._pacer.wait(self._stop):
            return False
        picture = self.source.read()
        if picture is None:
            log.info("%s ended", self.source.name)
            return False
        self.stats.captured += 1
        sending = self.rooms.room is not None and not self.muted
        if sending and not self._was_sending:
            self.encoder.request_keyframe()     # entering a room or unmuting: start clean
        self._was_sending = sending
        if not sending:
            return True
        started = time.thread_time()
        encoded = self.encoder.encode(picture.image)
        self.stats.encode_seconds += time.thread_time() - started
        for unit in encoded:
            self._send(Codec.H264, unit.payload, unit.keyframe, picture.capture_us)
        return True

    def _close_source(self) -> None:
        self.source.close()


def camera_publisher(rooms: MediaRooms, profile: VideoProfile = CAMERA_VGA, index: int = 0,
                     label: str = "") -> VideoPublisher:
    """The camera (or the test pattern when there is none) at ``profile`` (CAMERA_VGA, CAMERA_HD)."""
    source = open_camera(index, profile.width, profile.height, profile.fps, label)
    return VideoPublisher(rooms, source, H264Encoder(profile), MediaKind.CAMERA)


def screen_publisher(rooms: MediaRooms, display: str | None = None, fps: float = 5.0,
                     bitrate: int = 1_000_000) -> VideoPublisher:
    """The X11 screen at its own resolution and a low frame rate, as the SCREEN stream."""
    source = open_screen(display, fps)
    profile = screen_profile(source.width, source.height, fps, bitrate)
    return VideoPublisher(rooms, source, H264Encoder(profile), MediaKind.SCREEN)


class AudioPublisher(_Publisher):
    """Microphone or tone -> echo suppression -> voice activity -> Opus -> the room.

    ``far_end`` returns what the speakers played last (the echo reference); muting stops
    sending altogether (no comfort packets) so the relay carries nothing for a muted member.
    """

    kind = MediaKind.MICROPHONE

    def __init__(self, rooms: MediaRooms, source: AudioSource, encoder: OpusEncoder | None = None,
                 echo: EchoSuppressor | None = None, far_end: Callable[[], np.ndarray] | None = None) -> None:
        super().__init__(rooms, "publish-microphone")
        self.source = source
        self.encoder = encoder or OpusEncoder()
        self.echo = echo
        self.far_end = far_end
        self.vad = VoiceActivity()
        self.speaking = False

    def _step(self) -> bool:
        pcm = self.source.read()
        if pcm is None:
            return False
        capture = now_us() - self.source.capture_lag_us
        self.stats.captured += 1
        if self.echo is not None and self.far_end is not None:
            pcm = self.echo.process(pcm, self.far_end())
        self.speaking = self.vad.update(pcm) and not self.muted
        if self.muted or self.rooms.room is None:
            return True
        started = time.thread_time()
        payload = self.encoder.encode(pcm)
        self.stats.encode_seconds += time.thread_time() - started
        if payload:
            self._send(Codec.OPUS, payload, False, capture)
        return True

    def _close_source(self) -> None:
        self.source.close()


# -- receiving ---------------------------------------------------------------------------------

@dataclass
class StreamStats:
    received: int = 0
    decoded: int = 0
    skipped: int = 0              # not decodable: waiting for a keyframe after a gap or a late start
    gaps: int = 0
    decode_errors: int = 0
    keyframe_requests: int = 0
    first_decoded_at: float | None = None          # time.monotonic()
    delays_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))
    decoded_captures: collections.deque = field(default_factory=lambda: collections.deque(maxlen=100_000))


class VideoStreamReceiver:
    """One remote video stream: a queue filled by the network thread, a decoder thread.

    A sequence gap or a decode error means the next P-frames reference a picture we do not
    have, so they are skipped until a keyframe, which is requested (rate-limited). A keyframe
    is always accepted, also one older than what came before: that is the relay's cached
    keyframe for a newcomer, or the first one after the publisher rejoined.
    """

    def __init__(self, rooms: MediaRooms, user_id: int, kind: MediaKind, sync: AvSync,
                 on_picture: Callable[[int, MediaKind, av.VideoFrame, int], None] | None = None) -> None:
        self.rooms = rooms
        self.user_id = user_id
        self.kind = kind
        self.stats = StreamStats()
        self.video = SyncedVideo(sync)
        self.latest: tuple[av.VideoFrame, int] | None = None
        self.on_picture = on_picture
        self.paused = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._decoder = H264Decoder()
        self._expected: int | None = None
        self._need_keyframe = True
        self._last_request = 0.0
        self._thread = threading.Thread(target=self._run, name=f"decode-{user_id}-{kind.name.lower()}", daemon=True)
        self._thread.start()

    def enqueue(self, header: MediaHeader, payload: bytes) -> None:
        """Network thread: only count and enqueue."""
        self.stats.received += 1
        self._queue.put((header, payload))

    def close(self) -> None:
        self._queue.put(None)

    def _request_keyframe(self) -> None:
        now = time.monotonic()
        if now - self._last_request >= KEYFRAME_REQUEST_INTERVAL:
            self._last_request = now
            self.stats.keyframe_requests += 1
            self.rooms.request_keyframe(self.user_id, self.kind)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            header, payload = item
            try:
                self._handle(header, payload)
            except Exception:
                log.exception("decoding %s of user %d failed", self.kind.name, self.user_id)

    def _handle(self, header: MediaHeader, payload: bytes) -> None:
        if self.paused:
            self._need_keyframe = True
            return
        if header.keyframe:
            self._need_keyframe = False
        elif self._expected is not None and header.seq != self._expected and not self._need_keyframe:
            self.stats.gaps += 1
            self._need_keyframe = True
        elif self._queue.qsize() > VIDEO_QUEUE_LIMIT:
            self._need_keyframe = True      # we are far behind: jump to the next keyframe
        self._expected = (header.seq + 1) & 0xFFFFFFFF
        if self._need_keyframe:
            self.stats.skipped += 1
            self._request_keyframe()
            return
        try:
            pictures = self._decoder.decode(payload)
        except DecodeError as exc:
            log.debug("user %d %s: %s", self.user_id, self.kind.name, exc)
            self.stats.decode_errors += 1
            self._need_keyframe = True
            self._request_keyframe()
            return
        decoded_at = now_us()
        for picture in pictures:
            self.stats.decoded += 1
            if self.stats.first_decoded_at is None:
                self.stats.first_decoded_at = time.monotonic()
            self.stats.delays_ms.append((decoded_at - header.capture_us) / 1000)
            self.stats.decoded_captures.append(header.capture_us)
            self.latest = (picture, header.capture_us)
            self.video.push(picture, header.capture_us, decoded_at)
            if self.on_picture is not None:
                self.on_picture(self.user_id, self.kind, picture, header.capture_us)


class AudioStreamReceiver:
    """One remote microphone: jitter buffer in, decoded (or concealed) 20 ms frames out."""

    def __init__(self, user_id: int, sync: AvSync) -> None:
        self.user_id = user_id
        self.sync = sync
        self.jitter = JitterBuffer()
        self.vad = VoiceActivity()
        self.muted = False            # muted locally: not mixed, still decoded
        self.decoded = 0
        self.concealed = 0
        self.decoded_captures: collections.deque = collections.deque(maxlen=100_000)
        self._decoder = OpusDecoder()
        self._last = np.zeros(FRAME_SAMPLES, np.int16)
        self._concealing = 0

    def next_frame(self, played_us: int) -> np.ndarray | None:
        """Playout thread: the frame to play now, or None when nothing is due."""
        item = self.jitter.pop()
        if item.status == "wait":
            return None
        if item.status == "lost":
            self.concealed += 1
            self._concealing += 1
            if self._concealing > CONCEAL_MAX:
                return np.zeros(FRAME_SAMPLES, np.int16)
            self._last = (self._last * CONCEAL_FADE).astype(np.int16)
            return self._last
        self._concealing = 0
        try:
            pcm = self._decoder.decode(item.payload)
        except av.error.FFmpegError as exc:
            log.debug("user %d audio: %s", self.user_id, exc)
            self.concealed += 1
            return (self._last * CONCEAL_FADE).astype(np.int16)
        if len(pcm) != FRAME_SAMPLES:
            pcm = np.resize(pcm, FRAME_SAMPLES) if len(pcm) else np.zeros(FRAME_SAMPLES, np.int16)
        self.decoded += 1
        self.decoded_captures.append(item.capture_us)
        self.sync.audio_played(item.capture_us, played_us)
        self._last = pcm
        return pcm


class MemberReceiver:
    """Everything received from one remote member."""

    def __init__(self, rooms: MediaRooms, user_id: int,
                 on_picture: Callable[[int, MediaKind, av.VideoFrame, int], None] | None = None) -> None:
        self.rooms = rooms
        self.user_id = user_id
        self.sync = AvSync()
        self.audio = AudioStreamReceiver(user_id, self.sync)
        self.video: dict[MediaKind, VideoStreamReceiver] = {}
        self._on_picture = on_picture
        self._lock = threading.Lock()

    def video_stream(self, kind: MediaKind) -> VideoStreamReceiver:
        with self._lock:
            stream = self.video.get(kind)
            if stream is None:
                stream = self.video[kind] = VideoStreamReceiver(self.rooms, self.user_id, kind, self.sync,
                                                                self._on_picture)
            return stream

    def close(self) -> None:
        with self._lock:
            for stream in self.video.values():
                stream.close()


class MeetingReceiver:
    """All remote members of the meeting, the mix and the playout clock.

    ``retain(user_ids)`` (called on every member list) drops members who left, so a member
    who rejoins starts with fresh decoders and jitter buffer (their sequence numbers restart);
    the last receiver of each departed member stays in ``departed`` for reports.
    """

    def __init__(self, rooms: MediaRooms, sink: AudioSink | None = None, output_latency_ms: float = 0.0,
                 on_picture: Callable[[int, MediaKind, av.VideoFrame, int], None] | None = None) -> None:
        self.rooms = rooms
        self.sink = sink or NullSink()
        self.output_latency_us = int(output_latency_ms * 1000)
        self.on_picture = on_picture
        self.members: dict[int, MemberReceiver] = {}
        self.departed: dict[int, MemberReceiver] = {}
        self.active_speaker = ActiveSpeaker()
        self.speaking: dict[int, bool] = {}
        self.last_played = np.zeros(FRAME_SAMPLES, np.int16)
        self.frames_played = 0
        self._lock = threading.Lock()
        self._closed = False
        rooms.add_media_listener(self._on_media)
        self.sink.start(self._pull)

    def member(self, user_id: int) -> MemberReceiver:
        with self._lock:
            receiver = self.members.get(user_id)
            if receiver is None:
                receiver = self.members[user_id] = MemberReceiver(self.rooms, user_id, self.on_picture)
            return receiver

    def retain(self, user_ids: set[int]) -> None:
        with self._lock:
            gone = [uid for uid in self.members if uid not in user_ids]
            removed = [self.members.pop(uid) for uid in gone]
            for receiver in removed:
                self.departed[receiver.user_id] = receiver
        for receiver in removed:
            receiver.close()

    def set_paused(self, user_id: int, kind: MediaKind, paused: bool) -> None:
        """Stop (or resume) receiving one video stream: the relay stops sending it."""
        self.member(user_id).video_stream(kind).paused = paused
        self.rooms.subscribe(user_id, kind, paused)

    def set_sink(self, sink: AudioSink) -> None:
        """Play on another device from now on (the old one is closed)."""
        old, self.sink = self.sink, sink
        old.close()
        sink.start(self._pull)

    def close(self) -> None:
        self._closed = True
        self.rooms.remove_media_listener(self._on_media)
        self.sink.close()
        self.retain(set())

    # -- network thread ---------------------------------------------------------------------------
    def _on_media(self, header: MediaHeader, payload: bytes) -> None:
        if self._closed:
            return
        member = self.member(header.user_id)
        if header.kind == MediaKind.MICROPHONE:
            member.audio.jitter.put(header.seq, header.capture_us, payload)
        else:
            member.video_stream(MediaKind(header.kind)).enqueue(header, payload)

    # -- playout clock ----------------------------------------------------------------------------
    def _pull(self) -> np.ndarray:
        played = now_us() + self.output_latency_us
        with self._lock:
            members = list(self.members.values())
        frames, levels = [], {}
        for member in members:
            pcm = member.audio.next_frame(played)
            if pcm is None:
                levels[member.user_id] = (False, -100.0)
                continue
            active = member.audio.vad.update(pcm)
            levels[member.user_id] = (active, member.audio.vad.level_db)
            if not member.audio.muted:
                frames.append(pcm)
        self.speaking = {uid: active for uid, (active, _db) in levels.items()}
        self.active_speaker.update(levels)
        self.last_played = mix(frames)
        self.frames_played += 1
        return self.last_played


def delay_percentiles(delays_ms: Any) -> dict[str, float]:
    values = np.asarray(list(delays_ms), dtype=np.float64)
    if values.size == 0:
        return {}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1),
            "max": round(float(values.max()), 1)}

