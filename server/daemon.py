"""systemd integration: the sd_notify protocol spoken directly, and the watchdog.

The protocol is one datagram per message on the unix socket named by ``$NOTIFY_SOCKET``
(a path, or an abstract address when it starts with ``@``); each datagram holds
newline-separated ``KEY=VALUE`` lines. We send:

* ``READY=1`` once the server listens (``Type=notify`` units wait for it),
* ``STATUS=…`` with connections, users online and rooms, refreshed every few seconds,
* ``WATCHDOG=1`` from a reactor timer at half of ``$WATCHDOG_USEC``: the ping runs on the
  reactor thread, so a reactor stuck in a callback stops pinging and systemd restarts us,
* ``RELOADING=1`` (with ``MONOTONIC_USEC``) while SIGHUP is applied, then ``READY=1``,
* ``STOPPING=1`` when the graceful shutdown begins.

Without ``$NOTIFY_SOCKET`` (not under systemd) every call is a cheap no-op.
"""
from __future__ import annotations

import logging
import os
import resource
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from .reactor import Reactor

log = logging.getLogger("server.daemon")

STATUS_INTERVAL = 5.0


class Notifier:
    """Sends sd_notify datagrams to one address; silent when there is none."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            return b"\0" + self.address[1:].encode()
        return self.address

    def notify(self, *lines: str) -> bool:
        """Send one datagram; False (logged once) if it could not be delivered."""
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode("utf-8"), self._target())
            return True
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._warned = True
            return False

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half the watchdog timeout), or None when systemd
    asked for none or asked another process (``$WATCHDOG_PID``)."""
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6


def status_line(figures: Mapping[str, Any]) -> str:
    """The one-line STATUS= text: connections, users online, rooms."""
    rooms = figures.get("rooms", 0)
    if not isinstance(rooms, int):
        rooms = len(rooms)
    return (f"{figures.get('connections', 0)} connections, {figures.get('users_online', 0)} users online, "
            f"{rooms} rooms")


class Daemon:
    """Ties a server's lifecycle to systemd: ready, status, watchdog, reloading, stopping."""

    def __init__(self, reactor: Reactor, port: int, figures: Callable[[], Mapping[str, Any]],
                 notifier: Notifier | None = None, env: Mapping[str, str] | None = None) -> None:
        """``port``: the one the server listens on; ``figures``: its live status (reactor
        thread), summed up in ``STATUS=``."""
        self.reactor = reactor
        self.port = port
        self.figures = figures
        self.notifier = notifier if notifier is not None else Notifier.from_env(env)
        self.watchdog_every = watchdog_interval(env)
        self.started = False
        self.draining = False

    def start(self) -> None:
        """Call once the server listens, before the reactor runs (or on the reactor thread)."""
        if self.started or not self.notifier.enabled:
            return
        self.started = True
        if self.watchdog_every:
            log.info("systemd watchdog: pinging every %.1f s", self.watchdog_every)
            self.reactor.call_every(self.watchdog_every, self.notifier.watchdog)
        self.reactor.call_every(STATUS_INTERVAL, self._status)
        self.notifier.ready(f"listening on port {self.port}")

    def _status(self) -> None:
        if not self.draining:
            self.notifier.status(status_line(self.figures()))

    def stopping(self, connections: int) -> None:
        """The server begins to drain its ``connections`` (told only once READY was sent)."""
        self.draining = True
        if self.started:
            self.notifier.stopping(f"draining {connections} connections")

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self) -> None:
        self.notifier.ready(status_line(self.figures()))


def raise_fd_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards ``wanted`` (never above the hard limit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit to %d: %s", target, exc)
    return soft
