"""H.264 for real-time conferencing: a libx264 encoder and an FFmpeg decoder (PyAV).

The encoder is tuned for delay, not compression: ``tune=zerolatency`` (no lookahead, no
frame threads: one frame in, one access unit out), no B-frames, no scene-cut keyframes,
a long GOP with keyframes *on request* (a newcomer or a lossy receiver asks through the
server), and SPS/PPS repeated in every keyframe (x264 ``repeat-headers``) so any keyframe
alone starts a decoder. A VBV cap keeps each frame's size near bitrate / fps so a keyframe
does not flood the link.
"""
from __future__ import annotations

import fractions
import logging
from dataclasses import dataclass

import av
import numpy as np
from av.video.frame import PictureType

log = logging.getLogger("client.media.video")


@dataclass(frozen=True)
class VideoProfile:
    width: int
    height: int
    fps: float
    bitrate: int                # bits per second
    preset: str = "ultrafast"
    keyframe_interval: float = 10.0   # seconds between unrequested keyframes (a safety net)


CAMERA_VGA = VideoProfile(640, 480, 30.0, 500_000)
CAMERA_HD = VideoProfile(1280, 720, 30.0, 1_500_000)
SCREEN_SHARE = VideoProfile(0, 0, 5.0, 1_000_000, preset="veryfast", keyframe_interval=20.0)


def screen_profile(width: int, height: int, fps: float = 5.0, bitrate: int = 1_000_000) -> VideoProfile:
    """Screen sharing: the screen's own resolution, a low frame rate, sharper encoding."""
    return VideoProfile(width, height, fps, bitrate, preset=SCREEN_SHARE.preset,
                        keyframe_interval=SCREEN_SHARE.keyframe_interval)


@dataclass
class EncodedFrame:
    payload: bytes      # one H.264 Annex B access unit
    keyframe: bool      # an IDR with SPS/PPS in front


class H264Encoder:
    def __init__(self, profile: VideoProfile = CAMERA_VGA, threads: int = 1) -> None:
        if profile.width % 2 or profile.height % 2 or profile.width <= 0 or profile.height <= 0:
            raise ValueError(f"H.264 needs a positive even size, not {profile.width}x{profile.height}")
        self.profile = profile
        fps = fractions.Fraction(profile.fps).limit_denominator(1001)
        keyint = max(1, round(profile.fps * profile.keyframe_interval))
        kbps = max(16, profile.bitrate // 1000)
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = profile.width, profile.height
        ctx.pix_fmt = "yuv420p"
        ctx.framerate = fps
        ctx.time_base = 1 / fps
        ctx.bit_rate = profile.bitrate
        ctx.gop_size = keyint
        ctx.max_b_frames = 0
        ctx.thread_count = threads
        ctx.options = {
            "preset": profile.preset,
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": (f"repeat-headers=1:bframes=0:scenecut=0:keyint={keyint}:min-keyint={keyint}"
                            f":vbv-maxrate={kbps}:vbv-bufsize={max(8, kbps // 2)}"),
        }
        self._ctx = ctx
        self._pts = 0
        self._want_keyframe = True

    def request_keyframe(self) -> None:
        """The next encoded frame will be an IDR (thread-safe: a flag read by ``encode``)."""
        self._want_keyframe = True

    def encode(self, image: np.ndarray) -> list[EncodedFrame]:
        """Encode one BGR picture; zerolatency gives its access unit back at once."""
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        if image.shape[1] != self.profile.width or image.shape[0] != self.profile.height:
            frame = frame.reformat(width=self.profile.width, height=self.profile.height)
        return self.encode_frame(frame)

    def encode_frame(self, frame: av.VideoFrame) -> list[EncodedFrame]:
        frame.pts = self._pts
        self._pts += 1
        if self._want_keyframe:
            self._want_keyframe = False
            frame.pict_type = PictureType.I
        return [EncodedFrame(bytes(packet), bool(packet.is_keyframe)) for packet in self._ctx.encode(frame)]


class DecodeError(Exception):
    """The payload could not be decoded (damaged, or references a frame the decoder lacks)."""


class H264Decoder:
    """Decodes access units one at a time; slice threading keeps it free of frame delay."""

    def __init__(self) -> None:
        self._ctx = av.CodecContext.create("h264", "r")

    def decode(self, payload: bytes) -> list[av.VideoFrame]:
        try:
            return list(self._ctx.decode(av.Packet(payload)))
        except av.error.FFmpegError as exc:
            raise DecodeError(str(exc)) from None


def is_idr_with_parameter_sets(payload: bytes) -> bool:
    """True if the access unit carries SPS (7), PPS (8) and an IDR slice (5): a decoder start point."""
    types = set()
    index = 0
    while True:
        index = payload.find(b"\x00\x00\x01", index)
        if index < 0 or index + 3 >= len(payload):
            break
        types.add(payload[index + 3] & 0x1F)
        index += 3
    return {5, 7, 8} <= types
