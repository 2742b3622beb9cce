"""What the benchmark scripts share: percentiles, users created straight in the database, and
for the desktop-window measurements the garbage collector's pauses, the machine's load and the
teardown of the helper process and display."""
from __future__ import annotations

import gc
import os
import subprocess
import time

from server.passwords import ScryptParams, hash_password
from server.storage import open_storage

PASSWORD = "benchmark password"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def prepare_users(db_url: str, count: int, params: ScryptParams, prefix: str) -> list[str]:
    """Create ``count`` users directly in the database (schema created if missing), all with one
    hash of PASSWORD at the given scrypt cost; returns their phone numbers."""
    storage = open_storage(db_url)
    storage.init_schema()
    password_hash = hash_password(PASSWORD, params)
    phones = [f"{prefix}{i:07d}" for i in range(count)]
    with storage.db.tx() as cur:
        for phone in phones:
            cur.execute("INSERT INTO users (phone, password_hash, nickname, signature, created_at) "
                        "VALUES (?, ?, ?, '', 0)", (phone, password_hash, f"bench{phone[-4:]}"))
    storage.close()
    return phones


class GcPauses:
    """Times Python's garbage collections while in use: ``with GcPauses() as pauses: ...``."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self._started = 0.0

    def _on_gc(self, phase: str, _info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append(time.perf_counter() - self._started)

    def __enter__(self) -> "GcPauses":
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._on_gc)

    def figures(self) -> dict:
        return {"collections": len(self.pauses), "max_ms": round(1000 * max(self.pauses, default=0), 1)}


def machine_load() -> dict:
    """How busy the machine was (the measurements share it with other work)."""
    return {"cores": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def open_display(display: str | None):
    """Point DISPLAY at ``display``, or at a private Xvfb that is returned (to stop later)."""
    if display:
        os.environ["DISPLAY"] = display
        return None
    from tests.gui_helpers import Xvfb
    xvfb = Xvfb(1600, 1000)
    os.environ["DISPLAY"] = xvfb.start()
    return xvfb


def end_helper(child: subprocess.Popen, xvfb, timeout: float = 30.0) -> None:
    """Tell the helper process to finish (its stdin closes), wait for it, stop the display."""
    if child.stdin and not child.stdin.closed:
        child.stdin.close()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
    if xvfb is not None:
        xvfb.stop()
