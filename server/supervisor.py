"""`meeting-server --workers N`: N server processes on this host share the port, kept by this one.

Each worker is ``python -m server serve … --worker I``: a whole server that binds the same
address with ``SO_REUSEPORT`` (the kernel spreads new connections over the workers), names
itself ``<node_name>.<I>`` and serves its own admin socket (``admin.<I>.sock`` beside the main
one). The supervisor is to its workers what systemd is to a single server: each worker's
``NOTIFY_SOCKET`` is the supervisor's own datagram socket (the sender is known from its
kernel-checked credentials, ``SO_PASSCRED``), so the worker's ``READY=1``, ``STATUS=`` and
``WATCHDOG=1`` reach it unchanged (server/daemon.py). The supervisor

* holds the port with a bound, non-listening ``SO_REUSEPORT`` socket (port 0 picks one for all
  workers, and nobody else takes it while a worker restarts),
* tells systemd ``READY=1`` once every worker is ready, relays a summed ``STATUS=`` and pings
  its own watchdog from its loop,
* restarts a worker that dies, with a doubling delay while it keeps dying, and kills and
  restarts one whose watchdog pings stop (a stuck reactor),
* on SIGTERM (or SIGINT) sends ``STOPPING=1`` and SIGTERM to every worker, each of which drains
  its clients with ``GOING_AWAY``, and exits once they are gone (SIGKILL after
  ``shutdown_timeout`` plus a margin),
* passes SIGHUP on (each worker reloads), and reopens its own log,
* answers ``status`` on the main admin socket with its workers, which ``meeting-server
  status`` combines with each worker's own figures.

If a worker fails before all are ready (port taken, database unreachable), the start fails
as a whole: a half-started service would hide the error.
"""
from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .admin import DISABLED, open_admin
from .config import ServerConfig
from .daemon import Notifier, watchdog_interval
from .reactor import Reactor

log = logging.getLogger("server.supervisor")

CHECK_INTERVAL = 0.5
STATUS_INTERVAL = 5.0
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 30.0          # a worker up this long has its restart delay reset
STOP_MARGIN = 5.0            # beyond shutdown_timeout before SIGKILL
START_TIMEOUT = 60.0         # a worker not ready by then is killed (as systemd's TimeoutStartSec)
_CREDENTIALS = struct.Struct("3i")
_STATUS_FIGURES = re.compile(r"(\d+) connections, (\d+) users online")
PR_SET_PDEATHSIG = 1


def worker_config(config: ServerConfig, index: int) -> ServerConfig:
    """The configuration of worker ``index`` (1-based): one process, its own node name, admin
    socket and media link port (``link_port`` + index - 1, when a link port is set)."""
    admin = config.admin_socket
    if admin != DISABLED:
        main = config.admin_socket_path
        admin = str(main.with_name(f"{main.stem}.{index}{main.suffix}"))
    link_port = config.link_port + index - 1 if config.link_port else 0
    return dataclasses.replace(config, workers=1, node_name=f"{config.node_name}.{index}", admin_socket=admin,
                               link_port=link_port)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM (a graceful drain) if the supervisor dies, so no
    worker outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass
class Worker:
    index: int
    node_name: str
    admin_socket: str
    process: subprocess.Popen | None = None
    started: float = 0.0
    ready: bool = False
    reloading: bool = False
    last_ping: float = 0.0
    status: str = ""
    restarts: int = 0
    delay: float = FIRST_RESTART_DELAY
    restart_timer: Any = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.returncode is None else None

    @property
    def state(self) -> str:
        if self.pid is None:
            return "restarting" if self.restart_timer is not None else "stopped"
        return "ready" if self.ready else "starting"


class NotifyListener:
    """The workers' NOTIFY_SOCKET: an abstract unix datagram socket that learns each sender's
    pid from the kernel (SO_PASSCRED)."""

    def __init__(self, on_message: Callable[[int, list[str]], None]) -> None:
        self.on_message = on_message
        self.address = f"@real-time-meeting-supervisor-{os.getpid()}-{os.urandom(4).hex()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(b"\0" + self.address[1:].encode())
        self.sock.setblocking(False)

    def on_readable(self) -> None:
        for _ in range(64):
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(_CREDENTIALS.size))
            except (BlockingIOError, InterruptedError):
                return
            pid = uid = -1
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid, uid, _gid = _CREDENTIALS.unpack(payload[:_CREDENTIALS.size])
            if uid in (os.getuid(), 0):
                self.on_message(pid, data.decode("utf-8", "replace").splitlines())

    def on_writable(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()


class Supervisor:
    def __init__(self, config: ServerConfig, worker_command: Callable[[int, int], Sequence[str]],
                 notifier: Notifier | None = None, reload: Callable[[], None] | None = None) -> None:
        """``worker_command(index, port)`` is the argv of worker ``index``; ``reload`` re-reads
        the supervisor's own configuration on SIGHUP (logging)."""
        self.config = config
        self.worker_command = worker_command
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.reload_self = reload
        self.reactor = Reactor()
        self.notify = NotifyListener(self._on_notify)
        self.reactor.add_reader(self.notify.sock, self.notify)
        self.workers = []
        for index in range(1, config.workers + 1):
            own = worker_config(config, index)
            self.workers.append(Worker(index, own.node_name, own.admin_socket))
        self.port = 0
        self.started = time.time()
        self.all_ready = False
        self.stopping = False
        self.failed = False
        self.admin = None
        self._hold: socket.socket | None = None
        self._stop_deadline = 0.0

    # -- start -------------------------------------------------------------------------------------
    def hold_port(self) -> int:
        """Bind (without listening) the address the workers will share; returns the port.
        Raises OSError when it is taken, also by another server's workers: SO_REUSEPORT would
        let the two quietly share the connections."""
        host, port = self.config.host, self.config.port
        if port and _answers(host, port):
            raise OSError(errno.EADDRINUSE, f"another server already listens on port {port}")
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        self._hold = sock
        self.port = sock.getsockname()[1]
        return self.port

    def run(self) -> int:
        """Start every worker and supervise until stopped; the exit code for the process."""
        if self._hold is None:
            self.hold_port()
        log.info("supervisor: starting %d workers on %s:%d (node %s)", len(self.workers), self.config.host,
                 self.port, self.config.node_name)
        self.admin = open_admin(self.config, self.reactor, self.status)
        for worker in self.workers:
            self._spawn(worker)
        self.reactor.call_every(CHECK_INTERVAL, self._check)
        self.reactor.call_every(STATUS_INTERVAL, self._send_status)
        every = watchdog_interval()
        if every:
            self.reactor.call_every(every, self.notifier.watchdog)
        try:
            self.reactor.run()
        finally:
            self._release()
        return 1 if self.failed else 0

    def _spawn(self, worker: Worker) -> None:
        worker.restart_timer = None
        env = dict(os.environ)
        env.pop("WATCHDOG_PID", None)
        env["NOTIFY_SOCKET"] = self.notify.address
        env["WATCHDOG_USEC"] = str(int(self.config.worker_watchdog * 1e6))
        worker.process = subprocess.Popen(list(self.worker_command(worker.index, self.port)), env=env,
                                          stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        worker.started = worker.last_ping = time.monotonic()
        worker.ready = False
        log.info("worker %d (%s) started, pid %d", worker.index, worker.node_name, worker.process.pid)

    # -- what workers say ----------------------------------------------------------------------------
    def _on_notify(self, pid: int, lines: list[str]) -> None:
        worker = next((w for w in self.workers if w.pid == pid), None)
        if worker is None:
            return
        for line in lines:
            key, _, value = line.partition("=")
            if key == "READY" and value == "1":
                self._worker_ready(worker)
            elif key == "WATCHDOG" and value == "1":
                worker.last_ping = time.monotonic()
            elif key == "STATUS":
                worker.status = value
            elif key == "RELOADING" and value == "1":
                worker.reloading = True

    def _worker_ready(self, worker: Worker) -> None:
        worker.last_ping = time.monotonic()
        if worker.reloading:
            worker.reloading = False
            if not any(w.reloading for w in self.workers):
                self.notifier.ready(self.status_line())
            return
        if worker.ready:
            return
        worker.ready = True
        log.info("worker %d (%s, pid %d) is ready%s", worker.index, worker.node_name, worker.pid,
                 f" again after restart {worker.restarts}" if worker.restarts else "")
        if not self.all_ready and all(w.ready for w in self.workers):
            self.all_ready = True
            log.info("all %d workers are ready on port %d", len(self.workers), self.port)
            self.notifier.ready(f"{len(self.workers)} workers listening on port {self.port}")

    # -- watching ------------------------------------------------------------------------------------------
    def _check(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            process = worker.process
            if process is None or process.returncode is not None:
                continue
            code = process.poll()
            if code is not None:
                self._exited(worker, code, now)
            elif not self.stopping and now - worker.last_ping > (self.config.worker_watchdog if worker.ready
                                                                 else START_TIMEOUT):
                what = "sent no watchdog ping" if worker.ready else "did not become ready"
                log.error("worker %d (%s, pid %d) %s for %.0f s: killing it", worker.index, worker.node_name,
                          process.pid, what, now - worker.last_ping)
                process.kill()
        if self.stopping:
            self._check_stopped(now)

    def _exited(self, worker: Worker, code: int, now: float) -> None:
        was_ready, worker.ready, worker.reloading = worker.ready, False, False
        how = describe_exit(code)
        if self.stopping:
            log.info("worker %d (%s, pid %d) %s", worker.index, worker.node_name, worker.process.pid, how)
            return
        if not self.all_ready:
            log.error("worker %d (%s, pid %d) %s before it was ready (its log is above): stopping",
                      worker.index, worker.node_name, worker.process.pid, how)
            self.failed = True
            self.shutdown("a worker failed to start")
            return
        if now - worker.started > STABLE_AFTER:
            worker.delay = FIRST_RESTART_DELAY
        worker.restarts += 1
        log.error("worker %d (%s, pid %d) %s%s; restarting it in %.1f s (restart %d)", worker.index,
                  worker.node_name, worker.process.pid, how, "" if was_ready else " while starting",
                  worker.delay, worker.restarts)
        worker.restart_timer = self.reactor.call_later(worker.delay, self._spawn, worker)
        worker.delay = min(worker.delay * 2, MAX_RESTART_DELAY)

    # -- status ----------------------------------------------------------------------------------------------
    def status_line(self) -> str:
        ready = sum(w.ready for w in self.workers)
        connections = users = 0
        for worker in self.workers:
            match = _STATUS_FIGURES.search(worker.status) if worker.ready else None
            if match:
                connections += int(match.group(1))
                users += int(match.group(2))
        return f"{ready}/{len(self.workers)} workers ready, {connections} connections, {users} users online"

    def _send_status(self) -> None:
        if not self.stopping:
            self.notifier.status(self.status_line())

    def status(self) -> dict[str, Any]:
        """The supervisor's own figures for `meeting-server status` (each worker is asked apart)."""
        now = time.monotonic()
        return {"supervisor": {
            "node": self.config.node_name,
            "pid": os.getpid(),
            "port": self.port,
            "uptime_s": round(time.time() - self.started, 1),
            "workers": [{"index": w.index, "node": w.node_name, "pid": w.pid, "state": w.state,
                         "up_s": round(now - w.started, 1) if w.pid else 0.0, "restarts": w.restarts,
                         "admin_socket": w.admin_socket} for w in self.workers],
        }}

    # -- signals and stopping ----------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def on_stop(signum, _frame) -> None:
            self.reactor.call_soon_threadsafe(self.shutdown, f"received {signal.Signals(signum).name}")

        def on_hup(_signum, _frame) -> None:
            self.reactor.call_soon_threadsafe(self.reload)

        def on_child(_signum, _frame) -> None:
            self.reactor.call_soon_threadsafe(self._check)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGCHLD, on_child)

    def reload(self) -> None:
        """SIGHUP: every worker re-reads the configuration; READY=1 once all have."""
        live = [w for w in self.workers if w.pid is not None]
        self.notifier.reloading()
        if self.reload_self is not None:
            self.reload_self()
        for worker in live:
            worker.reloading = True
            worker.process.send_signal(signal.SIGHUP)
        log.info("reload passed to %d workers", len(live))
        if not live:
            self.notifier.ready(self.status_line())

    def shutdown(self, reason: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        live = [w for w in self.workers if w.pid is not None]
        log.info("supervisor shutting down: %s; draining %d workers", reason, len(live))
        self.notifier.stopping(f"draining {len(live)} workers")
        for worker in self.workers:
            if worker.restart_timer is not None:
                worker.restart_timer.cancel()
                worker.restart_timer = None
        for worker in live:
            worker.process.send_signal(signal.SIGTERM)
        self._stop_deadline = time.monotonic() + self.config.shutdown_timeout + STOP_MARGIN
        self._check_stopped(time.monotonic())

    def _check_stopped(self, now: float) -> None:
        live = [w for w in self.workers if w.pid is not None]
        if live and now < self._stop_deadline:
            return
        for worker in live:
            log.error("worker %d (%s, pid %d) did not stop within %.0f s: killing it", worker.index,
                      worker.node_name, worker.pid, self.config.shutdown_timeout + STOP_MARGIN)
            worker.process.kill()
            worker.process.wait(5)
            self.failed = True
        self.reactor.stop()

    def _release(self) -> None:
        if self.admin is not None:
            self.admin.close()
        self.notify.close()
        if self._hold is not None:
            self._hold.close()
        self.reactor.close()
        log.info("supervisor stopped")


def _answers(host: str, port: int) -> bool:
    """Whether something accepts connections on ``port`` of this host (``host`` may be a
    wildcard address: then its loopback is asked)."""
    target = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        socket.create_connection((target, port), timeout=1.0).close()
        return True
    except OSError:
        return False


def worker_argv(config_path: str | None, overrides: dict[str, Any]) -> Callable[[int, int], list[str]]:
    """Worker ``index``'s command line: the same configuration file and flags as the
    supervisor (the environment is inherited), the port it holds, and ``--worker INDEX``."""
    base = [sys.executable, "-m", "server", "serve"]
    if config_path:
        base += ["--config", str(Path(config_path))]
    for key, value in overrides.items():
        if key not in ("workers", "port"):
            base += ["--set", f"{key}={value}"]

    def command(index: int, port: int) -> list[str]:
        return [*base, "--port", str(port), "--worker", str(index)]
    return command
