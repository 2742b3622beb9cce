"""What the meeting window sees and hears: my publishers, the receiver, and the presenter.

Threads, none of them Tk's: each publisher captures and encodes on its own thread; the
receiver decodes each remote video stream on its own thread and plays audio on the sink's
clock; one *presenter* thread, at the display rate, takes from each stream the newest picture
whose time has come (``SyncedVideo.pop_due``: lip sync with that member's audio), scales it
to its tile and drops it in the tile's one-picture mailbox. The Tk thread only pastes.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import av
import cv2
import numpy as np
from PIL import Image

from client.kernel import ClientKernel
from client.media.clock import Pacer
from client.media.echo import make_echo_suppressor
from client.media.pipeline import AudioPublisher, MeetingReceiver, VideoPublisher
from client.media.sources import Picture, Region, ShareTarget, VideoSource, open_screen
from client.media.video_codec import CAMERA_VGA, H264Encoder, screen_profile
from client.rooms import RoomsClient
from common.media import MediaKind

from .devices import open_camera_choice, open_microphone_choice, open_speakers_choice
from .video import FrameSlot, VideoGrid, fit

log = logging.getLogger("client.ui.media")

PRESENT_RATE = 60.0


class PreviewTap(VideoSource):
    """A source wrapper that keeps the newest captured picture for the self view."""

    def __init__(self, source: VideoSource) -> None:
        self.source = source
        self.width, self.height, self.fps = source.width, source.height, source.fps
        self.paced, self.name = source.paced, source.name
        self._latest: Picture | None = None
        self._lock = threading.Lock()

    def read(self) -> Picture | None:
        picture = self.source.read()
        with self._lock:
            self._latest = picture
        return picture

    def take(self) -> Picture | None:
        with self._lock:
            picture, self._latest = self._latest, None
            return picture

    def close(self) -> None:
        self.source.close()


def scale_frame(frame: av.VideoFrame, box: tuple[int, int]) -> Image.Image:
    """A decoded picture scaled (swscale, in C) straight into RGB to fit the tile. Fast
    bilinear costs about half of the default filter and looks the same at tile sizes."""
    width, height = fit(frame.width, frame.height, box)
    return frame.reformat(width=width, height=height, format="rgb24", interpolation="FAST_BILINEAR").to_image()


def scale_bgr(image: np.ndarray, box: tuple[int, int]) -> Image.Image:
    small = cv2.resize(image, fit(image.shape[1], image.shape[0], box), interpolation=cv2.INTER_AREA)
    return Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB))


class MediaWindow(Protocol):
    """What the media uses of the window that shows it (``meeting_window.MeetingWindow``)."""

    kernel: ClientKernel
    rooms: RoomsClient
    me: int
    grid_view: VideoGrid            # its tiles' slots are where the pictures go


class MeetingMedia:
    def __init__(self, window: MediaWindow, camera: str = "", microphone: str = "", speakers: str = "",
                 screen_display: str | None = None) -> None:
        self.window = window
        self.rooms = window.rooms
        self.me = window.me
        self.label = window.kernel.user.get("nickname", "")
        self.camera_choice, self.microphone_choice, self.speakers_choice = camera, microphone, speakers
        self.screen_display = screen_display
        # The meeting's own windows, never sent when sharing the screen (no hall of mirrors).
        # Replaced whole by the Tk thread (MeetingWindow.own_regions), read by the capture thread.
        self.hidden_regions: list[Region] = []
        self.receiver = MeetingReceiver(self.rooms, sink=open_speakers_choice(speakers))
        self.camera: VideoPublisher | None = None
        self.camera_tap: PreviewTap | None = None
        self.screen: VideoPublisher | None = None
        self.screen_tap: PreviewTap | None = None
        self.sharing: ShareTarget | None = None
        self.audio = self._start_audio(microphone)
        # Replaced whole by the Tk thread. Only the mailboxes, never the tiles: a widget (and its
        # PhotoImage) must not be freed on this thread.
        self.targets: dict[tuple[int, int], FrameSlot] = {}
        self.presented = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._present, name="meeting-presenter", daemon=True)
        self._thread.start()

    # -- Tk thread -------------------------------------------------------------------------------
    def members_changed(self, members: list[dict]) -> None:
        self.receiver.retain({int(m["user_id"]) for m in members if int(m["user_id"]) != self.me})
        self.targets = {key: tile.slot for key, tile in self.window.grid_view.tiles.items()}

    def _start_audio(self, microphone: str) -> AudioPublisher:
        receiver = self.receiver        # the publisher thread must not hold this object (it holds the window)
        return AudioPublisher(self.rooms, open_microphone_choice(microphone), echo=make_echo_suppressor(),
                              far_end=lambda: receiver.last_played).start()

    def set_publishing(self, camera: bool, microphone: bool, screen: ShareTarget | None) -> None:
        """What I send: camera and microphone on or off, and the screen or window I share."""
        self.audio.muted = not microphone
        if camera and self.camera is None:
            self.camera_tap = PreviewTap(open_camera_choice(self.camera_choice, self.label))
            self.camera = VideoPublisher(self.rooms, self.camera_tap, H264Encoder(CAMERA_VGA)).start()
        elif not camera and self.camera is not None:
            self._stop_publisher(self.camera)
            self.camera, self.camera_tap = None, None
        if self.screen is not None and screen != self.sharing:
            self._stop_publisher(self.screen)
            self.screen, self.screen_tap, self.sharing = None, None, None
        if screen is not None and self.screen is None:
            source = PreviewTap(open_screen(self.screen_display, target=screen, hidden=lambda: self.hidden_regions))
            encoder = H264Encoder(screen_profile(source.width, source.height, source.fps))
            self.screen_tap, self.sharing = source, screen
            self.screen = VideoPublisher(self.rooms, source, encoder, kind=MediaKind.SCREEN).start()
        self.targets = {key: tile.slot for key, tile in self.window.grid_view.tiles.items()}

    def set_devices(self, camera: str, microphone: str, speakers: str) -> None:
        """Switch devices in the running meeting (call ``set_publishing`` after it)."""
        if camera != self.camera_choice:
            self.camera_choice = camera
            if self.camera is not None:
                self._stop_publisher(self.camera)
                self.camera, self.camera_tap = None, None
        if microphone != self.microphone_choice:
            self.microphone_choice = microphone
            old, self.audio = self.audio, self._start_audio(microphone)
            self._stop_publisher(old)
        if speakers != self.speakers_choice:
            self.speakers_choice = speakers
            self.receiver.set_sink(open_speakers_choice(speakers))

    def set_visible(self, visible: bool, bridge) -> None:
        """Window hidden (minimised): ask the relay to stop sending the remote video we would
        not show, and to resume (with a keyframe) when it is shown again."""
        streams = [(uid, MediaKind(kind)) for (uid, kind) in self.targets if uid != self.me]
        for uid, kind in streams:
            bridge.call(self.receiver.set_paused, uid, kind, not visible)

    def _stop_publisher(self, publisher: VideoPublisher | AudioPublisher) -> None:
        threading.Thread(target=publisher.stop, name="stop-publisher", daemon=True).start()

    def speaking(self) -> dict[int, bool]:
        """Who is talking now (for the tiles' rings), me included."""
        talking = {uid: on for uid, on in self.receiver.speaking.items()}
        talking[self.me] = self.audio.speaking
        return talking

    def active_speaker(self) -> int | None:
        return self.receiver.active_speaker.current

    def close(self) -> None:
        self._stop.set()
        self.targets = {}
        publishers = [p for p in (self.camera, self.screen, self.audio) if p is not None]
        receiver = self.receiver

        def stop_all() -> None:
            for publisher in publishers:
                publisher.stop()
            receiver.close()
        threading.Thread(target=stop_all, name="meeting-media-stop", daemon=True).start()

    # -- presenter thread ---------------------------------------------------------------------------
    def _present(self) -> None:
        pacer = Pacer(PRESENT_RATE)
        while pacer.wait(self._stop):
            try:
                self._present_once()
            except Exception:
                log.exception("presenting video failed")
                time.sleep(0.2)

    def _present_once(self) -> None:
        for (uid, kind), slot in list(self.targets.items()):
            size = slot.size
            if uid == self.me:
                tap = self.camera_tap if kind == MediaKind.CAMERA else self.screen_tap
                picture = tap.take() if tap is not None else None
                if picture is not None:
                    slot.put(scale_bgr(picture.image, size))
                    self.presented += 1
                continue
            member = self.receiver.members.get(uid)
            stream = member.video.get(MediaKind(kind)) if member is not None else None
            if stream is None:
                continue
            due = stream.video.pop_due()
            if due is not None:
                slot.put(scale_frame(due[0], size))
                self.presented += 1
