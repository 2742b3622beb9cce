"""Opus through PyAV: 48 kHz mono, 20 ms frames (960 samples of int16), one packet per frame."""
from __future__ import annotations

import av
import numpy as np

SAMPLE_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000


class OpusEncoder:
    def __init__(self, bitrate: int = 32_000) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.bit_rate = bitrate
        ctx.options = {"application": "voip", "frame_duration": str(FRAME_MS)}
        self._ctx = ctx
        self._pts = 0

    def encode(self, pcm: np.ndarray) -> bytes:
        """One 20 ms frame of int16 samples in, one Opus packet out."""
        if pcm.shape != (FRAME_SAMPLES,) or pcm.dtype != np.int16:
            raise ValueError(f"expected {FRAME_SAMPLES} int16 samples, got {pcm.shape} {pcm.dtype}")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        return b"".join(bytes(packet) for packet in self._ctx.encode(frame))


class OpusDecoder:
    def __init__(self) -> None:
        ctx = av.CodecContext.create("libopus", "r")
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "mono"
        self._ctx = ctx

    def decode(self, payload: bytes) -> np.ndarray:
        """One Opus packet in, its int16 samples out (960 for our 20 ms frames)."""
        frames = self._ctx.decode(av.Packet(payload))
        if not frames:
            return np.zeros(0, np.int16)
        parts = [frame.to_ndarray().reshape(-1) for frame in frames]
        pcm = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if pcm.dtype != np.int16:
            pcm = np.clip(pcm * 32767.0, -32768, 32767).astype(np.int16)
        return pcm
