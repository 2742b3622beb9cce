"""Events the client core posts for the UI, bots and tests."""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Event:
    kind: str
    data: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


class EventRecorder:
    """Keeps every event it hears and lets a thread wait for one (tests, bots, load test)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, kind: str, predicate: Callable[[Event], bool] = lambda e: True,
                 timeout: float = 10.0, start: int = 0) -> Event:
        """The first event of ``kind`` (from index ``start``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[start:]:
                    if event.kind == kind and predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [e.kind for e in self.events[-10:]]
                    raise TimeoutError(f"no '{kind}' event within {timeout} s (last events: {kinds})")
                self._cond.wait(remaining)

    def count(self, kind: str, predicate: Callable[[Event], bool] = lambda e: True) -> int:
        with self._cond:
            return sum(1 for e in self.events if e.kind == kind and predicate(e))

    def mark(self) -> int:
        with self._cond:
            return len(self.events)


class EventQueue:
    """What the Tk UI drains with ``after()``: a plain thread-safe queue of events."""

    def __init__(self) -> None:
        self.queue: queue.Queue[Event] = queue.Queue()

    def __call__(self, event: Event) -> None:
        self.queue.put(event)

    def drain(self, limit: int = 1000) -> list[Event]:
        out = []
        for _ in range(limit):
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return out
