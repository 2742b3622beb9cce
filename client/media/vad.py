"""Voice activity (per frame, with hangover) and the active-speaker choice built on it."""
from __future__ import annotations

import math

import numpy as np


def level_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dB relative to full scale (-100 for silence)."""
    if len(frame) == 0:
        return -100.0
    rms = math.sqrt(float(np.mean(frame.astype(np.float64) ** 2))) / 32768.0
    return 20 * math.log10(rms) if rms > 1e-5 else -100.0


class VoiceActivity:
    """Energy above an adaptive noise floor, held for a short hangover.

    The floor follows quiet frames quickly and loud ones slowly, so steady background noise
    (a fan) stops counting as speech after a few seconds; the pauses between words pull
    the floor back down, so a talker keeps counting.
    """

    def __init__(self, margin_db: float = 9.0, min_db: float = -50.0, hangover_frames: int = 15) -> None:
        self.margin_db = margin_db
        self.min_db = min_db
        self.hangover_frames = hangover_frames
        self.noise_db = -60.0
        self.level_db = -100.0
        self._hang = 0

    def update(self, frame: np.ndarray) -> bool:
        level = level_dbfs(frame)
        self.level_db = level
        rate = 0.2 if level < self.noise_db else 0.01
        self.noise_db += (level - self.noise_db) * rate
        if level > self.min_db and level > self.noise_db + self.margin_db:
            self._hang = self.hangover_frames
        elif self._hang:
            self._hang -= 1
        return self._hang > 0

    @property
    def active(self) -> bool:
        return self._hang > 0


class ActiveSpeaker:
    """Who to highlight: the loudest member with voice activity, held for ``hold_frames``
    so the highlight does not flicker between two people talking over each other."""

    def __init__(self, hold_frames: int = 25) -> None:
        self.hold_frames = hold_frames
        self.current: int | None = None
        self._held = 0

    def update(self, levels: dict[int, tuple[bool, float]]) -> int | None:
        """``levels``: member id -> (voice active, level dBFS) for this frame."""
        talking = {member: db for member, (active, db) in levels.items() if active}
        if self._held:
            self._held -= 1
        if not talking:
            if not self._held:
                self.current = None
            return self.current
        loudest = max(talking, key=talking.get)
        if self.current not in talking or (not self._held and loudest != self.current):
            self.current = loudest
            self._held = self.hold_frames
        return self.current
