"""The server's wall clock as the wire and the database carry it: milliseconds since the epoch."""
from __future__ import annotations

import time


def now_ms() -> int:
    return int(time.time() * 1000)
