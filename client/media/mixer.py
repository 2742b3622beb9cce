"""Mixing several remote speakers into the one stream the speakers play."""
from __future__ import annotations

import numpy as np

from .audio_codec import FRAME_SAMPLES


def mix(frames: list[np.ndarray], gains: list[float] | None = None) -> np.ndarray:
    """Sum int16 frames in int32 (each with its gain) and clip back to int16.

    Plain summing keeps every voice at its own level (no one gets quieter because someone
    else talks); clipping only bites when several people shout at once.
    """
    if not frames:
        return np.zeros(FRAME_SAMPLES, np.int16)
    total = np.zeros(FRAME_SAMPLES, np.float32)
    for index, frame in enumerate(frames):
        gain = 1.0 if gains is None else gains[index]
        n = min(FRAME_SAMPLES, len(frame))
        total[:n] += frame[:n].astype(np.float32) * gain
    return np.clip(total, -32768, 32767).astype(np.int16)
