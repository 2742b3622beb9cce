"""Stopping a publisher never closes its source under the thread that reads it.

Closing the X11 grabber while its publisher thread was inside ``read`` crashed the whole
client (a memory fault in the capture library) when sharing stopped. ``GuardedSource`` plays
that library: it records any close during a read and any read after a close. Starting and
stopping in a loop, with the stop landing at every point of a read, makes the race visible.
"""
from __future__ import annotations

import threading
import time

from client.media.audio_io import ToneSource
from client.media.pipeline import AudioPublisher, VideoPublisher
from client.media.sources import TestPatternSource, VideoSource
from client.media.video_codec import H264Encoder, VideoProfile
from common.media import MediaKind

PROFILE = VideoProfile(96, 64, 30.0, 100_000)


class QuietRooms:
    """Just enough of ``kernel.rooms`` for a publisher: in a room, every frame accepted."""

    room = {"number": "123456789"}

    def publish(self, kind, codec, payload, keyframe, capture_us) -> bool:
        return True

    def add_keyframe_listener(self, fn) -> None:
        pass

    def remove_keyframe_listener(self, fn) -> None:
        pass


class GuardedSource(VideoSource):
    """A paced source (like x11grab) whose ``read`` takes a few milliseconds and which notes
    every use after close and every close during a read."""

    paced = True
    name = "guarded"

    def __init__(self, misuse: list[str]) -> None:
        self.width, self.height, self.fps = PROFILE.width, PROFILE.height, PROFILE.fps
        self._pattern = TestPatternSource(self.width, self.height, self.fps)
        self._lock = threading.Lock()
        self._reading = False
        self.closed = False
        self.misuse = misuse

    def read(self):
        with self._lock:
            if self.closed:
                self.misuse.append("read after close")
                return None
            self._reading = True
        time.sleep(0.004)
        picture = self._pattern.read()
        with self._lock:
            self._reading = False
            if self.closed:
                self.misuse.append("closed during a read")
        return picture

    def close(self) -> None:
        with self._lock:
            if self._reading:
                self.misuse.append("closed during a read")
            self.closed = True


class GuardedTone(ToneSource):
    def __init__(self, misuse: list[str]) -> None:
        super().__init__(440.0)
        self.misuse = misuse
        self.reading = False
        self.closed = False

    def read(self):
        if self.closed:
            self.misuse.append("read after close")
            return None
        self.reading = True
        try:
            return super().read()
        finally:
            self.reading = False

    def close(self) -> None:
        if self.reading:
            self.misuse.append("closed during a read")
        self.closed = True
        super().close()


def test_sharing_and_camera_on_and_off_in_a_loop_never_close_a_source_being_read():
    misuse: list[str] = []
    rooms = QuietRooms()
    sources = []
    for round_ in range(40):
        source = GuardedSource(misuse)
        sources.append(source)
        kind = MediaKind.SCREEN if round_ % 2 else MediaKind.CAMERA
        publisher = VideoPublisher(rooms, source, H264Encoder(PROFILE), kind=kind).start()
        time.sleep(0.001 * (round_ % 9))        # stop at a different point of a read each time
        publisher.stop()
    assert misuse == []
    assert all(s.closed for s in sources), "every source is closed once its publisher stopped"


def test_the_microphone_on_and_off_in_a_loop_never_closes_the_source_being_read():
    misuse: list[str] = []
    sources = []
    for round_ in range(20):
        source = GuardedTone(misuse)
        sources.append(source)
        publisher = AudioPublisher(QuietRooms(), source).start()
        time.sleep(0.003 * (round_ % 7))
        publisher.stop()
    assert misuse == []
    assert all(s.closed for s in sources)


def test_a_publisher_stopped_before_it_started_still_closes_its_source():
    misuse: list[str] = []
    source = GuardedSource(misuse)
    VideoPublisher(QuietRooms(), source, H264Encoder(PROFILE)).stop()
    assert source.closed and misuse == []
