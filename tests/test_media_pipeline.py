"""Publisher -> (a fake relay on loopback) -> MeetingReceiver: decoding, loss recovery, mute, lip sync, rejoin.

The fake relay stands in for ``kernel.rooms`` plus the server: it numbers frames per stream,
fills in the publisher's user id and delivers to the other members after a per-kind delay,
from one delivery thread (like the client's network thread).
"""
from __future__ import annotations

import heapq
import threading
import time

import numpy as np
import pytest

from common.media import FLAG_KEYFRAME, MediaHeader, MediaKind
from client.media.audio_io import ToneSource
from client.media.echo import DuckingSuppressor
from client.media.pipeline import (AudioPublisher, MeetingReceiver, VideoPublisher, camera_publisher,
                                   delay_percentiles, screen_publisher)
from client.media.sources import TestPatternSource, read_barcode
from client.media.vad import level_dbfs
from client.media.video_codec import H264Encoder, VideoProfile
from tests.helpers import wait_until

PROFILE = VideoProfile(320, 240, 15.0, 250_000)


class Hub:
    def __init__(self) -> None:
        self.members: dict[int, "FakeRooms"] = {}
        self.delay = {MediaKind.CAMERA: 0.01, MediaKind.MICROPHONE: 0.01, MediaKind.SCREEN: 0.01}
        self.drop_video_seqs: set[int] = set()
        self._heap: list = []
        self._cond = threading.Condition()
        self._count = 0
        self.delivered = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def deliver(self, sender: int, header: MediaHeader, payload: bytes) -> None:
        due = time.monotonic() + self.delay[MediaKind(header.kind)]
        with self._cond:
            for uid, member in self.members.items():
                if uid != sender and member.room is not None:
                    self._count += 1
                    heapq.heappush(self._heap, (due, self._count, member, header, payload))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cond.wait(0.002 if self._heap else 0.1)
                if self._stop:
                    return
                _due, _n, member, header, payload = heapq.heappop(self._heap)
            for listener in member.media_listeners:
                listener(header, payload)
            with self._cond:
                self.delivered += 1

    def idle(self) -> bool:
        """Nothing on its way: every frame handed to the hub has been delivered."""
        with self._cond:
            return self.delivered == self._count

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(2)


class FakeRooms:
    def __init__(self, hub: Hub, user_id: int) -> None:
        self.hub, self.user_id = hub, user_id
        self.room: dict | None = {"number": "123456789"}
        self.media_listeners: list = []
        self.keyframe_listeners: list = []
        self.keyframe_requests: list = []
        self.subscriptions: list = []
        self._seq: dict[int, int] = {}
        hub.members[user_id] = self

    def publish(self, kind, codec, payload, keyframe, capture_us) -> bool:
        if self.room is None:
            return False
        seq = self._seq.get(kind, 0)
        self._seq[kind] = seq + 1
        if kind == MediaKind.CAMERA and seq in self.hub.drop_video_seqs:
            return True                               # lost on the way
        header = MediaHeader(self.user_id, int(kind), int(codec), FLAG_KEYFRAME if keyframe else 0, seq, capture_us)
        self.hub.deliver(self.user_id, header, payload)
        return True

    def rejoin(self) -> None:
        self._seq.clear()

    def add_media_listener(self, fn) -> None:
        self.media_listeners.append(fn)

    def add_keyframe_listener(self, fn) -> None:
        self.keyframe_listeners.append(fn)

    def remove_media_listener(self, fn) -> None:
        self.media_listeners.remove(fn)

    def remove_keyframe_listener(self, fn) -> None:
        self.keyframe_listeners.remove(fn)

    def request_keyframe(self, user_id, kind) -> None:
        self.keyframe_requests.append((user_id, kind))
        for listener in self.hub.members[user_id].keyframe_listeners:
            listener(kind)

    def subscribe(self, user_id, kind, paused) -> None:
        self.subscriptions.append((user_id, kind, paused))


@pytest.fixture
def hub():
    h = Hub()
    yield h
    h.close()


def after_steps(publisher, steps: int) -> None:
    """Wait until the publisher's thread has captured ``steps`` more frames: the step that was
    under way when the caller changed something has ended, and later ones saw the change."""
    captured = publisher.stats.captured
    wait_until(lambda: publisher.stats.captured >= captured + steps, 10, f"{steps} more captured frames")


def handled_more(stream, frames: int) -> None:
    """Wait until ``frames`` more frames of a video stream have arrived and its decoder thread
    has taken every one of them."""
    received = stream.stats.received
    wait_until(lambda: stream.stats.received >= received + frames and stream._queue.empty(), 10,
               f"{frames} more frames handled")


def after_mixes(receiver: MeetingReceiver, mixes: int) -> None:
    """Wait until the playout clock has mixed ``mixes`` more frames."""
    played = receiver.frames_played
    wait_until(lambda: receiver.frames_played >= played + mixes, 10, f"{mixes} more mixed frames")


def start_publishers(rooms: FakeRooms, tone: float = 440.0):
    video = VideoPublisher(rooms, TestPatternSource(PROFILE.width, PROFILE.height, PROFILE.fps), H264Encoder(PROFILE))
    audio = AudioPublisher(rooms, ToneSource(tone))
    return video.start(), audio.start()


def test_a_member_sees_and_hears_another(hub):
    alice, bob = FakeRooms(hub, 1), FakeRooms(hub, 2)
    pictures = []
    receiver = MeetingReceiver(bob, on_picture=lambda uid, kind, frame, cap: pictures.append(
        frame.to_ndarray(format="bgr24")))
    video, audio = start_publishers(alice)
    try:
        wait_until(lambda: 1 in receiver.members and receiver.members[1].audio.decoded >= 25
                   and receiver.members[1].video.get(MediaKind.CAMERA) is not None
                   and receiver.members[1].video[MediaKind.CAMERA].stats.decoded >= 15)
    finally:
        video.stop()
        audio.stop()
    stream = receiver.members[1].video[MediaKind.CAMERA]
    wait_until(lambda: stream.stats.decoded == video.stats.sent)
    receiver.close()
    assert stream.stats.skipped == 0 and stream.stats.gaps == 0
    counters = [read_barcode(p) for p in pictures]
    assert counters == list(range(len(counters))), "every picture decoded, in order, undamaged"
    assert delay_percentiles(stream.stats.delays_ms)["p95"] < 150
    assert receiver.speaking.get(1) is not None
    assert receiver.frames_played > 0


def test_loss_triggers_a_keyframe_request_and_recovery(hub):
    alice, bob = FakeRooms(hub, 1), FakeRooms(hub, 2)
    hub.drop_video_seqs = {10, 11}
    pictures = []
    receiver = MeetingReceiver(bob, on_picture=lambda uid, kind, frame, cap: pictures.append(read_barcode(
        frame.to_ndarray(format="bgr24"))))
    video = VideoPublisher(alice, TestPatternSource(320, 240, 15), H264Encoder(PROFILE)).start()
    try:
        wait_until(lambda: len(pictures) >= 25)
    finally:
        video.stop()
    stream = receiver.members[1].video[MediaKind.CAMERA]
    receiver.close()
    assert bob.keyframe_requests and bob.keyframe_requests[0] == (1, MediaKind.CAMERA)
    assert stream.stats.gaps == 1
    assert pictures[:10] == list(range(10))
    assert all(b > a for a, b in zip(pictures, pictures[1:])), "no damaged picture after the loss"
    assert video.stats.keyframes >= 2, "the publisher answered the request with a keyframe"
    # recovery within a few frames: request, keyframe, decode
    assert pictures[10] <= 16


def test_mute_stops_sending_and_local_mute_stops_mixing(hub):
    alice, bob = FakeRooms(hub, 1), FakeRooms(hub, 2)
    receiver = MeetingReceiver(bob)
    audio = AudioPublisher(alice, ToneSource(440.0)).start()
    try:
        wait_until(lambda: 1 in receiver.members and receiver.members[1].audio.decoded >= 10)
        assert receiver.last_played.any() or receiver.members[1].audio.decoded
        receiver.members[1].audio.muted = True
        after_mixes(receiver, 2)
        assert not receiver.last_played.any(), "a member muted locally is not mixed"
        audio.muted = True
        after_steps(audio, 1)
        sent = audio.stats.sent
        after_steps(audio, 15)
        assert audio.stats.sent == sent, "a muted microphone sends nothing"
    finally:
        audio.stop()
        receiver.close()


def test_video_is_shown_in_sync_with_delayed_audio(hub):
    """Audio takes 150 ms longer than video (as if its jitter buffer were deep): the pictures
    wait for it, so the shown picture and the heard audio stay within 80 ms of each other."""
    alice, bob = FakeRooms(hub, 1), FakeRooms(hub, 2)
    hub.delay[MediaKind.MICROPHONE] = 0.16
    receiver = MeetingReceiver(bob)
    video, audio = start_publishers(alice)
    audio_offsets, video_offsets = [], []
    try:
        wait_until(lambda: 1 in receiver.members and receiver.members[1].audio.decoded >= 10
                   and MediaKind.CAMERA in receiver.members[1].video)
        member = receiver.members[1]
        stream = member.video[MediaKind.CAMERA]
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            shown = stream.video.pop_due()
            now = time.time_ns() // 1000
            if shown is not None:
                video_offsets.append(now - shown[1])
                audio_offsets.append(member.sync.audio_offset_us)
            time.sleep(0.005)
    finally:
        video.stop()
        audio.stop()
        receiver.close()
    assert len(video_offsets) >= 15
    skew_ms = [abs(v - a) / 1000 for v, a in zip(video_offsets, audio_offsets)]
    assert np.percentile(skew_ms, 95) < 80, f"A/V skew p95 {np.percentile(skew_ms, 95):.1f} ms"
    assert min(audio_offsets) > 150_000, "audio really was late; without sync video would lead by 150 ms"


def test_pausing_a_stream_and_a_member_who_rejoins(hub):
    alice, bob = FakeRooms(hub, 1), FakeRooms(hub, 2)
    receiver = MeetingReceiver(bob)
    video = VideoPublisher(alice, TestPatternSource(320, 240, 15), H264Encoder(PROFILE)).start()
    try:
        wait_until(lambda: 1 in receiver.members and MediaKind.CAMERA in receiver.members[1].video
                   and receiver.members[1].video[MediaKind.CAMERA].stats.decoded >= 5)
        receiver.set_paused(1, MediaKind.CAMERA, True)
        assert bob.subscriptions == [(1, MediaKind.CAMERA, True)]
        stream = receiver.members[1].video[MediaKind.CAMERA]
        handled_more(stream, 1)                       # what was being decoded as it paused is done
        decoded = stream.stats.decoded
        handled_more(stream, 5)
        assert stream.stats.decoded == decoded
        receiver.set_paused(1, MediaKind.CAMERA, False)
        wait_until(lambda: stream.stats.decoded >= decoded + 5)
        # alice leaves and comes back: her numbering restarts, bob gets fresh decoders
        alice.room = None
        after_steps(video, 1)
        wait_until(hub.idle, 5, "the frames on their way")
        receiver.retain(set())
        assert 1 not in receiver.members
        alice.rejoin()
        alice.room = {"number": "123456789"}
        wait_until(lambda: 1 in receiver.members and MediaKind.CAMERA in receiver.members[1].video
                   and receiver.members[1].video[MediaKind.CAMERA].stats.decoded >= 5)
        assert receiver.members[1].video[MediaKind.CAMERA].stats.skipped == 0, "the rejoin starts with a keyframe"
    finally:
        video.stop()
        receiver.close()


def test_screen_share_without_a_display_sends_the_pattern_as_the_screen_stream(hub, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    alice, bob = FakeRooms(hub, 1), FakeRooms(hub, 2)
    shown = []
    receiver = MeetingReceiver(bob, on_picture=lambda uid, kind, frame, cap: shown.append(
        (kind, frame.width, frame.height)))
    screen = screen_publisher(alice, fps=5.0).start()
    try:
        wait_until(lambda: len(shown) >= 3)
    finally:
        screen.stop()
        receiver.close()
    assert shown[0] == (MediaKind.SCREEN, 1280, 720)
    assert screen.encoder.profile.fps == 5.0


def test_camera_publisher_falls_back_to_the_pattern(hub):
    publisher = camera_publisher(FakeRooms(hub, 1), VideoProfile(320, 240, 15.0, 200_000), index=9, label="me")
    assert isinstance(publisher.source, TestPatternSource) and publisher.kind == MediaKind.CAMERA
    publisher.stop()


def test_echo_suppression_is_applied_against_what_the_speakers_play(hub):
    alice, bob = FakeRooms(hub, 1), FakeRooms(hub, 2)
    receiver = MeetingReceiver(bob)
    loud_far_end = ToneSource(300.0, 0.5, paced=False).read()
    audio = AudioPublisher(alice, ToneSource(300.0, 0.1), echo=DuckingSuppressor(),
                           far_end=lambda: loud_far_end).start()
    try:
        wait_until(lambda: 1 in receiver.members and receiver.members[1].audio.decoded >= 20)
        after_mixes(receiver, 5)
        assert level_dbfs(receiver.last_played) < -40, "the microphone (all echo here) was ducked"
    finally:
        audio.stop()
        receiver.close()


def test_a_decoder_that_falls_behind_skips_to_a_keyframe(hub):
    """A burst larger than the decoder's backlog limit is not decoded frame by frame (that
    would only add delay): it skips to a fresh keyframe, which it asks for."""
    from client.media.pipeline import VIDEO_QUEUE_LIMIT, VideoStreamReceiver
    from client.media.sync import AvSync

    alice, bob = FakeRooms(hub, 1), FakeRooms(hub, 2)
    keyframes_asked = []
    alice.add_keyframe_listener(keyframes_asked.append)
    stream = VideoStreamReceiver(bob, 1, MediaKind.CAMERA, AvSync())
    slow = stream._decoder.decode
    stream._decoder.decode = lambda payload: (time.sleep(0.02), slow(payload))[1]
    source, encoder = TestPatternSource(320, 240, 15), H264Encoder(PROFILE)
    burst = 3 * VIDEO_QUEUE_LIMIT
    units = [encoder.encode(source.read().image)[0] for _ in range(burst)]
    for seq, unit in enumerate(units):
        stream.enqueue(MediaHeader(1, MediaKind.CAMERA, 1, FLAG_KEYFRAME if unit.keyframe else 0, seq, 0), unit.payload)
    wait_until(lambda: stream.stats.decoded + stream.stats.skipped == burst)
    stream.close()
    assert stream.stats.skipped > 0 and stream.stats.decoded < burst
    assert keyframes_asked[0] == MediaKind.CAMERA and 1 <= stream.stats.keyframe_requests <= 2


def test_camera_off_sends_nothing_and_camera_on_starts_with_a_keyframe(hub):
    alice = FakeRooms(hub, 1)
    sent = []
    publish = alice.publish
    alice.publish = lambda kind, codec, payload, keyframe, capture: sent.append(keyframe) or publish(
        kind, codec, payload, keyframe, capture)
    video = VideoPublisher(alice, TestPatternSource(320, 240, 15), H264Encoder(PROFILE)).start()
    try:
        wait_until(lambda: len(sent) >= 5)
        video.muted = True
        after_steps(video, 1)
        count = len(sent)
        after_steps(video, 5)
        assert len(sent) == count, "a muted camera sends nothing"
        video.muted = False
        wait_until(lambda: len(sent) >= count + 3)
    finally:
        video.stop()
    assert sent[0] and not any(sent[1:5])
    assert sent[count], "the first frame after unmuting is a keyframe"
