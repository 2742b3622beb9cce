"""Unexpected handler failures: a full traceback once per cause and interval, a short line after.

A peer that keeps triggering the same bug must not be able to fill the disk with identical
tracebacks. The cause is the handler, the exception type and the line that raised it; the
first failure of a cause logs the traceback, repeats within ``interval`` seconds log one line,
and the next traceback after the interval says how many were folded into it.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import Callable

TRACEBACK_INTERVAL = 60.0   # seconds between two tracebacks of the same cause
MAX_CAUSES = 1024           # causes remembered before the oldest are forgotten


class FaultLog:
    def __init__(self, log: logging.Logger, interval: float = TRACEBACK_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._causes: dict[tuple, tuple[float, int]] = {}   # cause -> (last traceback at, folded since)
        self.failures = 0

    def failed(self, what: str, who: str, exc: BaseException) -> None:
        """Log an unexpected exception (call from an ``except`` block)."""
        cause = (what, type(exc).__name__, _origin(exc))
        now = self._clock()
        with self._lock:
            self.failures += 1
            last, folded = self._causes.get(cause, (None, 0))
            full = last is None or now - last >= self.interval
            self._causes.pop(cause, None)
            self._causes[cause] = (now, 0) if full else (last, folded + 1)
            if len(self._causes) > MAX_CAUSES:
                del self._causes[next(iter(self._causes))]
        if full:
            again = f" ({folded} more like it since the last traceback)" if folded else ""
            self.log.error("%s %s failed%s", who, what, again, exc_info=exc)
        else:
            self.log.warning("%s %s failed again: %s: %s (traceback logged at most every %g s)",
                             who, what, type(exc).__name__, exc, self.interval)


def _origin(exc: BaseException) -> str:
    """File and line where the exception was raised (the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f"{last.filename}:{last.lineno}"
