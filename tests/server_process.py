"""The real server as a subprocess (``python -m server``), for crash and signal tests.

    proc = ServerProcess(db_url, data_dir)
    port = proc.start()          # waits for "listening on HOST:PORT" on stderr
    proc.kill()                  # SIGKILL: no shutdown code runs at all
    proc.start()                 # again, same database (and by default the same port)
    code = proc.terminate()      # SIGTERM: graceful shutdown; returns the exit code
    proc.log                     # everything the server wrote to stderr so far

``start()`` returns once the server answered a HELLO, so its signal handlers are in place.
Password hashing is made cheap (MEETING_SCRYPT_N=1024) and the schema is created on the first
start (``--init-db``). The log level is INFO (the port is read from an INFO line); ``args`` are
appended to the command line, ``env`` to the environment (e.g. ``{"MEETING_POOL_THREADS": "2"}``).
Use it as a context manager (or call ``stop()``) so no process outlives its test.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import frame as wire
from common.packets import PacketType

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServerProcess:
    def __init__(self, db_url: str, data_dir: str | os.PathLike, *, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.db_url = db_url
        self.data_dir = Path(data_dir)
        self.extra_env = dict(env or {})
        self.extra_args = tuple(args)
        self.port = 0
        self.host = "127.0.0.1"
        self.process: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    # -- starting -----------------------------------------------------------------------------------
    def start(self, port: int | None = None, timeout: float = 20.0) -> int:
        """Start the server and wait until it listens; returns the port. Without ``port`` a
        restart reuses the previous port (clients reconnect to it), the first start picks one."""
        if self.running:
            raise RuntimeError("the server process is already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        port = self.port if port is None else port
        env = {**os.environ, "MEETING_SCRYPT_N": "1024", "PYTHONUNBUFFERED": "1"}
        env.pop("JOURNAL_STREAM", None)
        env.pop("NOTIFY_SOCKET", None)
        env.update(self.extra_env)
        command = [sys.executable, "-m", "server", "--init-db", "--port", str(port), "--db", self.db_url,
                   "--data-dir", str(self.data_dir), "--log-level", "INFO", *self.extra_args]
        with self._cond:
            start_line = len(self._lines)
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read_stderr, args=(self.process,), daemon=True)
        self._reader.start()
        line = self.wait_for_log(LISTENING, timeout, start=start_line)
        match = LISTENING.search(line)
        self.host, self.port = match.group(1), int(match.group(2))
        self._wait_serving(timeout)
        return self.port

    def _wait_serving(self, timeout: float) -> None:
        """One HELLO round trip: the reactor runs, so the signal handlers (installed between
        listening and serving) are in place and SIGTERM means a graceful stop."""
        deadline = time.monotonic() + timeout
        hello = wire.encode_json(PacketType.HELLO, {"version": 1, "client": "server-process"}, 1)
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=5) as sock:
                    if "--tls-cert" in self.extra_args:
                        context = ssl.create_default_context()
                        context.check_hostname = False
                        context.verify_mode = ssl.CERT_NONE
                        sock = context.wrap_socket(sock)
                    sock.sendall(hello)
                    decoder = wire.FrameDecoder()
                    while True:
                        data = sock.recv(65536)
                        if not data:
                            raise ConnectionError("closed")
                        if any(f.request_id == 1 for f in decoder.feed(data)):
                            return
            except (OSError, ConnectionError, ssl.SSLError):
                if time.monotonic() > deadline or not self.running:
                    raise RuntimeError(f"the server does not answer HELLO:\n{self.log_tail()}") from None
                time.sleep(0.05)

    def _read_stderr(self, process: subprocess.Popen) -> None:
        for line in process.stderr:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # -- watching ---------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    def wait_for_log(self, pattern: str | re.Pattern, timeout: float = 10.0, start: int = 0) -> str:
        """The first stderr line (from line ``start``) matching ``pattern``; raises TimeoutError,
        or RuntimeError if the process exits first."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[start:]:
                    if regex.search(line):
                        return line
                if self.process is not None and self.process.poll() is not None:
                    if self._reader is None or not self._reader.is_alive():
                        raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no log line matching {regex.pattern!r} within {timeout} s:\n{self.log_tail()}")
                self._cond.wait(min(remaining, 0.1))

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._lines[-lines:])

    # -- stopping ---------------------------------------------------------------------------------------
    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL (a crash: nothing is flushed); waits for the process; returns its exit code."""
        return self._signal(signal.SIGKILL, timeout)

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful shutdown); waits for the exit; returns the exit code."""
        return self._signal(signal.SIGTERM, timeout)

    def restart(self, timeout: float = 20.0) -> int:
        """SIGKILL if still running, then start again on the same database and port."""
        if self.running:
            self.kill()
        return self.start(timeout=timeout)

    def _signal(self, signum: int, timeout: float) -> int:
        if self.process is None:
            raise RuntimeError("the server process was never started")
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise TimeoutError(f"the server did not exit within {timeout} s after {signal.Signals(signum).name}")
        if self._reader is not None:
            self._reader.join(5)
        return code

    def stop(self) -> None:
        """Make sure the process is gone (kill if needed)."""
        if self.running:
            self.kill()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
