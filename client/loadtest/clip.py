"""Pre-encoded media for the room scenario, made once per run with PyAV.

Encoding live in every simulated publisher would make the load generator the bottleneck, so
the parent encodes a short moving test pattern (H.264, x264 zero-latency, SPS/PPS repeated
in every keyframe, a keyframe every 2 s) and a 440 Hz tone (Opus, 20 ms packets) once; the
publishers cycle through the packets, restarting at the keyframe when the server asks for one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

CLIP_SECONDS = 4
OPUS_RATE = 48000
OPUS_FRAME = 960  # 20 ms


@dataclass
class Clip:
    video: list[tuple[bytes, bool]]  # (Annex B access unit, keyframe)
    audio: list[bytes]               # Opus packets, 20 ms each
    fps: int
    bitrate: int
    size: str

    @property
    def video_bytes_per_second(self) -> float:
        return sum(len(p) for p, _ in self.video) / (len(self.video) / self.fps)


def encode_clip(width: int, height: int, fps: int, bitrate: int, audio: bool = True) -> Clip:
    import av
    import numpy as np

    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, fps)
    codec.framerate = Fraction(fps, 1)
    codec.bit_rate = bitrate
    codec.gop_size = 2 * fps
    codec.options = {"preset": "ultrafast", "tune": "zerolatency", "repeat-headers": "1",
                     "x264-params": f"keyint={2 * fps}:min-keyint={2 * fps}:scenecut=0:repeat-headers=1"}
    video: list[tuple[bytes, bool]] = []
    yy, xx = np.mgrid[0:height, 0:width]
    for index in range(CLIP_SECONDS * fps):
        shift = index * 4
        rgb = np.empty((height, width, 3), dtype=np.uint8)
        rgb[..., 0] = (xx + shift) % 256
        rgb[..., 1] = (yy + 2 * shift) % 256
        rgb[..., 2] = ((xx // 16 + yy // 16 + index) % 2) * 200
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        for packet in codec.encode(frame):
            video.append((bytes(packet), bool(packet.is_keyframe)))
    for packet in codec.encode(None):
        video.append((bytes(packet), bool(packet.is_keyframe)))
    if video and not video[0][1]:
        raise RuntimeError("the encoder did not start with a keyframe")
    packets: list[bytes] = []
    if audio:
        opus = av.CodecContext.create("libopus", "w")
        opus.sample_rate = OPUS_RATE
        opus.layout = "mono"
        opus.format = "s16"
        opus.bit_rate = 32000
        opus.time_base = Fraction(1, OPUS_RATE)
        for index in range(50):
            t = (np.arange(OPUS_FRAME) + index * OPUS_FRAME) / OPUS_RATE
            samples = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
            frame.sample_rate = OPUS_RATE
            frame.pts = index * OPUS_FRAME
            packets.extend(bytes(p) for p in opus.encode(frame))
        packets.extend(bytes(p) for p in opus.encode(None))
    return Clip(video, packets, fps, bitrate, f"{width}x{height}")
