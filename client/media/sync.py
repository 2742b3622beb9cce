"""Lip sync: show a member's video when the audio captured at the same moment is heard.

Audio is the master clock (a held picture is not noticed, a stretched voice is). Each time
the playout clock plays one of the member's audio frames, ``AvSync`` learns the offset
between that member's capture clock and our playout time; a decoded picture is then due at
its capture time plus that offset. Both timestamps come from the sender's one clock, so
no clock synchronisation between machines is needed. Without recent audio (muted, video
only) pictures are shown as soon as they are decoded.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Any


# Each frame's offset wobbles by the sender's and our scheduling jitter (a few ms, tens under
# load); a moving average follows real changes (the jitter buffer's depth) within ~10 frames.
SMOOTHING = 0.1
STEP_US = 100_000


def wall_us() -> int:
    return time.time_ns() // 1000


class AvSync:
    def __init__(self, audio_timeout_ms: int = 1000, max_hold_ms: int = 400) -> None:
        self.audio_timeout_us = audio_timeout_ms * 1000
        self.max_hold_us = max_hold_ms * 1000
        self._offset_us: int | None = None      # playout time - capture time of the audio
        self._last_audio_us = 0
        self._lock = threading.Lock()

    def audio_played(self, capture_us: int, played_us: int | None = None) -> None:
        """The playout clock just played (or queued for the speakers) audio captured at ``capture_us``."""
        played = wall_us() if played_us is None else played_us
        offset = played - capture_us
        with self._lock:
            if self._offset_us is None or abs(offset - self._offset_us) > STEP_US:
                self._offset_us = offset          # a new stream or a re-buffer: follow at once
            else:
                self._offset_us += round((offset - self._offset_us) * SMOOTHING)
            self._last_audio_us = played

    @property
    def audio_offset_us(self) -> int | None:
        """Playout time minus capture time of the member's audio (None before any was played)."""
        with self._lock:
            return self._offset_us

    def due_us(self, capture_us: int, now_us: int | None = None) -> int:
        """When a picture captured at ``capture_us`` should be shown (wall-clock microseconds)."""
        now = wall_us() if now_us is None else now_us
        with self._lock:
            if self._offset_us is None or now - self._last_audio_us > self.audio_timeout_us:
                return now
            return min(capture_us + self._offset_us, now + self.max_hold_us)


class SyncedVideo:
    """Decoded pictures of one stream waiting for their moment; the renderer asks ``pop_due``."""

    def __init__(self, sync: AvSync, capacity: int = 15) -> None:
        self.sync = sync
        self._pending: collections.deque[tuple[int, int, Any]] = collections.deque(maxlen=capacity)
        self._lock = threading.Lock()

    def push(self, picture: Any, capture_us: int, now_us: int | None = None) -> None:
        due = self.sync.due_us(capture_us, now_us)
        with self._lock:
            self._pending.append((due, capture_us, picture))

    def pop_due(self, now_us: int | None = None) -> tuple[Any, int] | None:
        """The newest picture whose time has come (older due ones are skipped), or None."""
        now = wall_us() if now_us is None else now_us
        found = None
        with self._lock:
            while self._pending and self._pending[0][0] <= now:
                found = self._pending.popleft()
        return (found[2], found[1]) if found else None
