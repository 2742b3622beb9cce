"""The parent process: start the workers, draw the progress bar, gather the results."""
from __future__ import annotations

import json
import multiprocessing
import queue as queue_module
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from .metrics import Metrics
from .scenarios import SCENARIOS
from .worker import Settings, worker_process

ADMIN_POLL = 2.0
BAR_WIDTH = 24


def query_admin(path: str, timeout: float = 5.0) -> dict[str, Any]:
    """The server's own figures from its admin socket (see server/admin.py)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(b"status\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    finally:
        sock.close()
    answer = json.loads(b"".join(chunks))
    if not answer.get("ok"):
        raise OSError(answer.get("error", "admin socket refused"))
    return answer["status"]


@dataclass
class RunResult:
    settings: Settings
    metrics: Metrics
    elapsed: float
    steady: tuple[float, float] | None      # seconds since the start: the common steady window
    server_before: dict[str, Any] | None = None
    server_peak: dict[str, Any] | None = None   # a snapshot taken while every worker was steady
    server_after: dict[str, Any] | None = None
    failures: list[str] = field(default_factory=list)


class Progress:
    """One line on stderr, redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, settings: Settings, stream: TextIO, enabled: bool = True) -> None:
        self.settings = settings
        self.stream = stream
        self.enabled = enabled
        self.tty = stream.isatty()
        self.last_line = 0.0
        self.start = time.monotonic()

    def draw(self, reports: dict[int, dict[str, Any]], final: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and not final and now - self.last_line < 5.0:
            return
        self.last_line = now
        target = sum(r.get("target", 0) for r in reports.values()) or self.settings.clients
        counters: dict[str, int] = {}
        samples: dict[str, int] = {}
        for report in reports.values():
            for key, value in report.get("counters", {}).items():
                counters[key] = counters.get(key, 0) + value
            for key, value in report.get("samples", {}).items():
                samples[key] = samples.get(key, 0) + value
        errors = sum(r.get("errors", 0) for r in reports.values())
        phases = sorted({r.get("phase", "?") for r in reports.values()}) or ["starting"]
        logged_in = counters.get("logged_in", 0)
        filled = int(BAR_WIDTH * min(1.0, logged_in / target)) if target else 0
        busiest = max(samples.items(), key=lambda kv: kv[1], default=("", 0))
        line = (f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.settings.scenario} "
                f"{'/'.join(phases)}: {logged_in:,}/{target:,} logged in"
                + (f", {busiest[1]:,} {busiest[0]}" if busiest[1] else "")
                + f", {errors:,} errors, {now - self.start:.0f} s")
        if self.tty:
            self.stream.write("\r\033[K" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def run(settings: Settings, admin_socket: str | None = None, progress_stream: TextIO | None = None,
        show_progress: bool = True) -> RunResult:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    t0 = time.monotonic()
    server_before = _admin(admin_socket)
    scenario = SCENARIOS[settings.scenario]
    workers = [context.Process(target=worker_process, args=(settings, scenario, i, t0, queue), daemon=True,
                               name=f"loadtest-{i}") for i in range(settings.processes)]
    for process in workers:
        process.start()
    progress = Progress(settings, progress_stream or sys.stderr, show_progress)
    reports: dict[int, dict[str, Any]] = {}
    results: dict[int, dict[str, Any]] = {}
    failures: list[str] = []
    server_peak = None
    next_poll = time.monotonic()
    while len(results) + len(failures) < len(workers):
        try:
            message = queue.get(timeout=0.25)
        except queue_module.Empty:
            message = None
            for i, process in enumerate(workers):
                if not process.is_alive() and i not in results and process.exitcode not in (0, None) \
                        and not any(f.startswith(f"process {i}:") for f in failures):
                    failures.append(f"process {i}: exited with code {process.exitcode}")
        if message is not None:
            kind = message["type"]
            if kind == "progress":
                reports[message["proc"]] = message
            elif kind == "result":
                results[message["proc"]] = message
            elif kind == "failed":
                failures.append(f"process {message['proc']}: {message['error']}")
        all_steady = (len(reports) == len(workers) and not results
                      and all(r["phase"] == "steady" for r in reports.values()))
        if admin_socket and all_steady and time.monotonic() >= next_poll:
            next_poll = time.monotonic() + ADMIN_POLL
            server_peak = _admin(admin_socket) or server_peak
        progress.draw(reports)
    progress.draw(reports, final=True)
    for process in workers:
        process.join(10)
    elapsed = time.monotonic() - t0
    merged = Metrics(t0)
    windows = []
    for result in results.values():
        merged.merge(result["metrics"])
        if result["steady"] and result["steady"][1]:
            windows.append((result["steady"][0] - t0, result["steady"][1] - t0))
    steady = (max(w[0] for w in windows), min(w[1] for w in windows)) if windows else None
    if steady and steady[1] <= steady[0]:
        steady = None
    return RunResult(settings, merged, elapsed, steady, server_before, server_peak,
                     _admin(admin_socket), failures)


def _admin(path: str | None) -> dict[str, Any] | None:
    if not path:
        return None
    try:
        return query_admin(path)
    except (OSError, ValueError) as exc:
        print(f"meeting-loadtest: admin status from {path} unavailable: {exc}", file=sys.stderr)
        return None
