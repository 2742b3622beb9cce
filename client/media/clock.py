"""Wall-clock capture timestamps and a drift-free pacer for real-time loops."""
from __future__ import annotations

import threading
import time


def now_us() -> int:
    """Microseconds since the Unix epoch: the capture-time clock carried in MEDIA_FRAME."""
    return time.time_ns() // 1000


class Pacer:
    """Ticks at a fixed rate on a monotonic schedule, so a slow tick does not shift the rest.

    When the caller falls more than one period behind, the schedule restarts from now
    instead of bursting to catch up (a burst of frames is worse than a skipped one).
    """

    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate
        self._next = time.monotonic()

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Sleep until the next tick; False if ``stop`` was set meanwhile."""
        self._next += self.period
        delay = self._next - time.monotonic()
        if delay < -self.period:
            self._next = time.monotonic()
            delay = 0.0
        if delay > 0:
            if stop is not None:
                return not stop.wait(delay)
            time.sleep(delay)
        return stop is None or not stop.is_set()
