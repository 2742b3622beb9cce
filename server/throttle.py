"""Sliding-window counters for failed logins and per-user rate limits (thread-safe)."""
from __future__ import annotations

import collections
import threading
import time


class SlidingWindow:
    """Counts events per key over the last ``window`` seconds."""

    def __init__(self, limit: int, window: float, clock=time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: dict[object, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _trim(self, key: object, now: float) -> collections.deque[float]:
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = collections.deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def retry_after(self, key: object) -> float:
        """Seconds until ``key`` is under its limit again; 0 if it is now."""
        now = self._clock()
        with self._lock:
            events = self._trim(key, now)
            if len(events) < self.limit:
                if not events:
                    self._events.pop(key, None)
                return 0.0
            return max(0.0, events[len(events) - self.limit] + self.window - now)

    def add(self, key: object) -> None:
        now = self._clock()
        with self._lock:
            self._trim(key, now).append(now)

    def hit(self, key: object) -> float:
        """Count one event if allowed; return 0, or the seconds to wait if over the limit."""
        now = self._clock()
        with self._lock:
            events = self._trim(key, now)
            if len(events) >= self.limit:
                return max(0.0, events[len(events) - self.limit] + self.window - now)
            events.append(now)
            return 0.0

    def clear(self, key: object) -> None:
        with self._lock:
            self._events.pop(key, None)
