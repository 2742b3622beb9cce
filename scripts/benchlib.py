"""What the benchmark scripts share: percentiles, users created straight in the database,
py-spy profiles of the server process, and for the desktop-window measurements the garbage
collector's pauses, the machine's load, the teardown of the helper process and display, and
the test file a bot sends the window's user."""
from __future__ import annotations

import collections
import contextlib
import gc
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from server.passwords import ScryptParams, hash_password
from server.storage import open_storage

PASSWORD = "benchmark password"


def fresh_database(db: str, tmp: Path) -> tuple[str, Callable[[], None]]:
    """A new database for one run ("sqlite": a file in ``tmp``; "mysql": a new MariaDB database
    on 127.0.0.1), and how to drop it afterwards."""
    if db == "sqlite":
        return f"sqlite:///{tmp}/bench.db", (lambda: None)
    from tests.helpers import make_mysql_database
    return make_mysql_database()


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


@contextlib.contextmanager
def py_spy(pid: int, path: str | None, skip: float = 0.0, rate: int = 250) -> Iterator[None]:
    """Sample process ``pid`` with py-spy (every thread, collapsed stacks into ``path``) while
    the block runs, from ``skip`` seconds after it starts (past a set-up phase); without a
    path, do nothing. py-spy is in the test extras."""
    if not path:
        yield
        return
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    command = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--threads",
               "--format", "raw", "--output", path, "--nonblocking"]
    recorders: list[subprocess.Popen] = []
    stopped = threading.Event()

    def start() -> None:
        if not stopped.wait(skip):
            recorders.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    starter = threading.Thread(target=start, daemon=True)
    starter.start()
    try:
        yield
    finally:
        stopped.set()
        starter.join()
        for recorder in recorders:
            recorder.send_signal(signal.SIGINT)
            recorder.wait(30)


# Where a thread waits rather than works (the GIL is released there): left out of the shares.
WAITING = ("EpollSelector.select", "Condition.wait", "_worker (thread.py)", "Event.wait", "Thread.join")


def top_functions(path: str, count: int = 12) -> list[tuple[str, float, float]]:
    """(function, % of busy samples in it, % of busy samples under it) from a collapsed-stack
    file, the ``count`` highest by own samples. Samples of a thread waiting (in select, on a
    condition) are not busy time and are left out."""
    own: collections.Counter[str] = collections.Counter()
    under: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = [_short(f) for f in stack.split(";")[1:]]   # the first is the thread
        if not frames or frames[-1].startswith(WAITING):
            continue
        n = int(samples)
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            under[name] += n
    return [(name, 100 * n / total, 100 * under[name] / total) for name, n in own.most_common(count)]


def _short(frame: str) -> str:
    """"fn (path/to/file.py:12)" -> "fn (file.py)"."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def print_profile(path: str | None, count: int = 15) -> None:
    if path:
        print(f"py-spy: top functions by own samples, share of busy samples ({path})", file=sys.stderr)
        for name, own_pct, under_pct in top_functions(path, count):
            print(f"  {own_pct:5.1f} % own {under_pct:5.1f} % under  {name}", file=sys.stderr)


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


def write_file(path: Path, mib: int) -> None:
    """A file of ``mib`` MiB, each MiB distinct, so nothing on the way can shrink it."""
    block = os.urandom(1024 * 1024)
    with open(path, "wb") as fh:
        for index in range(mib):
            fh.write(index.to_bytes(8, "big") + block[8:])


def make_friends(running, a_id: int, b_id: int) -> None:
    """Make two users friends straight in the storage of ``running`` (a tests.helpers server)."""
    running.server.storage.add_friendship(a_id, b_id, int(time.time() * 1000))


class IncomingFile:
    """In the window process: accept the first file offered to the app's user into a temp
    folder through the app's client core, off the Tk thread as the chat window's Accept does,
    and time the transfer from the offer to ``file_done``."""

    def __init__(self, app) -> None:
        self.app = app
        self.folder = Path(tempfile.mkdtemp(prefix="rtm-incoming-"))
        self.transfer_id: str | None = None
        self.size = self.received = 0
        self.offered_at = self.done_at = None
        self.error: str | None = None
        app.kernel.add_listener(self._on_event)

    def _on_event(self, event) -> None:
        data = event.data
        if event.kind == "file_offer" and self.transfer_id is None:
            self.transfer_id, self.size, self.offered_at = data["transfer_id"], data["size"], time.monotonic()
            self.app.bridge.call(self.app.kernel.files.accept, self.transfer_id, self.folder,
                                 on_error=lambda exc: setattr(self, "error", str(exc)))
        elif data.get("transfer_id") != self.transfer_id:
            return
        elif event.kind == "file_progress":
            self.received = int(data["done"])
        elif event.kind == "file_done":
            self.received, self.done_at = self.size, time.monotonic()
        elif event.kind == "file_failed":
            self.error = str(data.get("message") or data.get("error"))

    def figures(self, started: float) -> dict:
        """The transfer as seen at this moment; times in seconds from ``started`` (monotonic)."""
        if self.offered_at is None:
            return {"state": "not offered", "error": self.error}
        state = "failed" if self.error else "done" if self.done_at else "still running"
        until = self.done_at or time.monotonic()
        return {"state": state, "error": self.error, "mib": round(self.size / 2**20, 1),
                "received_mib": round(self.received / 2**20, 1),
                "offered_at_s": round(self.offered_at - started, 1),
                "done_at_s": round(self.done_at - started, 1) if self.done_at else None,
                "mib_per_s": round(self.received / 2**20 / max(until - self.offered_at, 1e-3), 1)}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
