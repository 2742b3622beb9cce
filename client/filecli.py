"""`meeting-client send` and `meeting-client receive`: file transfer from a terminal.

    MEETING_PASSWORD=... meeting-client send --server 10.0.0.5:8600 --phone 13800000001 \\
        --to 13800000002 report.pdf
    MEETING_PASSWORD=... meeting-client receive --server 10.0.0.5:8600 --phone 13800000002 \\
        --dir ~/Downloads --count 1

Both log in with the account's phone number; the password comes from the environment variable
named by ``--password-env`` (default MEETING_PASSWORD) or, on a terminal, from a prompt. The
sender offers the file to a friend (found by phone number) and waits until it is delivered or
spooled for an offline friend; the receiver accepts offers (also those that waited while it
was offline) into a folder. Both show progress on stderr: percent, bytes, rate and time left.
Exit status: 0 when every file arrived, 1 when one failed or was declined, 2 on bad usage.
"""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

from common.errors import ApiError

from .events import Event, EventKind
from .kernel import ClientKernel, ConnectionLost
from .link import ConnectError
from .tls import TlsOptions
from .servers import parse_servers

MiB = 1024 * 1024
ENDINGS = (EventKind.FILE_DONE, EventKind.FILE_SPOOLED, EventKind.FILE_FAILED, EventKind.FILE_CANCELLED,
           EventKind.FILE_DECLINED)


class UsageError(Exception):
    """Bad command-line input: reported and exit status 2."""


def format_progress(name: str, done: int, total: int, rate: float, eta: float | None) -> str:
    """One progress line, e.g. ``report.pdf  45%  115.2/256.0 MiB  88.1 MiB/s  0:02 left``."""
    percent = 100 * done // total if total else 100
    left = f"{int(eta) // 60}:{int(eta) % 60:02d} left" if eta is not None else "--:-- left"
    return (f"{name}  {percent:3d}%  {done / MiB:.1f}/{total / MiB:.1f} MiB  "
            f"{rate / MiB:.1f} MiB/s  {left}")


class Terminal:
    """Turns the kernel's file events into progress lines and a final outcome per transfer."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.names: dict[str, str] = {}
        self.outcomes: dict[str, Event] = {}
        self.offers: list[dict] = []       # offers not taken yet (receive)
        self.last_event = time.monotonic()
        self.fatal: str | None = None      # the session ended for good (kicked, expired)
        self.changed = threading.Condition()
        self._live_line = False

    def __call__(self, event: Event) -> None:
        transfer_id = event.data.get("transfer_id")
        if event.kind == EventKind.FILE_OFFER:
            with self.changed:
                self.offers.append(event.data)
        elif event.kind == EventKind.FILE_PROGRESS and transfer_id in self.names:
            line = format_progress(self.names[transfer_id], event["done"], event["total"], event["rate"],
                                   event["eta"])
            self.out.write(f"\r{line}\033[K")
            self.out.flush()
            self._live_line = True
        elif event.kind in ENDINGS and transfer_id in self.names:
            self.say(describe_ending(self.names[transfer_id], event))
            with self.changed:
                self.outcomes[transfer_id] = event
                self.changed.notify_all()
        elif event.kind == EventKind.DISCONNECTED and event.data.get("will_reconnect"):
            self.say(f"disconnected ({event['reason']}), reconnecting...")
        elif event.kind == EventKind.RECONNECTED:
            self.say("reconnected, resuming")
        elif event.kind in (EventKind.KICKED, EventKind.SESSION_EXPIRED, EventKind.LOGGED_OUT) or (
                event.kind == EventKind.DISCONNECTED and not event.data.get("will_reconnect")):
            reason = {EventKind.KICKED: "your account logged in somewhere else",
                      EventKind.SESSION_EXPIRED: "your session expired"}.get(event.kind, "disconnected")
            with self.changed:
                self.fatal = self.fatal or reason
        with self.changed:
            if event.kind.startswith("file_"):
                self.last_event = time.monotonic()
            self.changed.notify_all()

    def say(self, text: str) -> None:
        self.out.write(("\n" if self._live_line else "") + text + "\n")
        self.out.flush()
        self._live_line = False

    def wait(self, done: Callable[[], bool], idle_timeout: float) -> None:
        """Until ``done()``. Raises ConnectionLost if the session ends, TimeoutError after
        ``idle_timeout`` seconds without a file event (0: wait for ever)."""
        with self.changed:
            while self.fatal is None and not done():
                if not idle_timeout:
                    self.changed.wait()
                    continue
                remaining = self.last_event + idle_timeout - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"nothing happened for {idle_timeout:g} s")
                self.changed.wait(remaining)
            if self.fatal is not None:
                raise ConnectionLost(self.fatal)


def describe_ending(name: str, event: Event) -> str:
    if event.kind == EventKind.FILE_DONE:
        where = f" -> {event.data['path']}" if event.data.get("path") else ""
        return f"{name}: delivered{where}"
    if event.kind == EventKind.FILE_SPOOLED:
        return f"{name}: your friend is offline; the server keeps it and offers it at their next login"
    if event.kind == EventKind.FILE_DECLINED:
        return f"{name}: declined"
    if event.kind == EventKind.FILE_CANCELLED:
        reason = event.data.get("reason")
        return f"{name}: cancelled" + (f" ({reason})" if reason else "")
    return f"{name}: failed: {event.data.get('message') or event.data.get('error')}"


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--server", required=True, help="HOST:PORT (the port defaults to 8600); several separated "
                                                        "by commas are tried in turn")
    parser.add_argument("--phone", required=True, help="your account's phone number")
    parser.add_argument("--password-env", default="MEETING_PASSWORD",
                        help="environment variable holding your password (default MEETING_PASSWORD; "
                             "without it you are asked)")
    parser.add_argument("--tls-ca", default=None, help="speak TLS; trust the server's certificate by this CA file")
    parser.add_argument("--tls-pin", default=None, help="speak TLS; trust the certificate with this SHA-256 fingerprint")
    parser.add_argument("--timeout", type=float, default=0,
                        help="give up after this many seconds with nothing happening (0: never)")
    parser.add_argument("--log-level", default="WARNING")
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args


def _password(variable: str) -> str:
    password = os.environ.get(variable)
    if password:
        return password
    if not sys.stdin.isatty():
        raise UsageError(f"set {variable} to your password (stdin is not a terminal to ask on)")
    return getpass.getpass("Password: ")


def _session(args: argparse.Namespace, terminal: Terminal) -> ClientKernel:
    """A logged-in kernel whose events go to ``terminal`` from the start (offers may arrive
    with the login itself)."""
    try:
        servers = parse_servers(args.server)
    except ValueError as exc:
        raise UsageError(f"--server {args.server!r}: {exc}") from None
    password = _password(args.password_env)
    kernel = ClientKernel.for_servers(servers, tls=TlsOptions.from_flags(args.tls_ca, args.tls_pin))
    kernel.add_listener(terminal)
    try:
        kernel.login(args.phone, password)
    except BaseException:
        kernel.close()
        raise
    return kernel


def send_main(argv: Sequence[str], out: TextIO = sys.stderr) -> int:
    parser = _parser("meeting-client send", "Send files to a friend, with progress.")
    parser.add_argument("--to", required=True, help="the friend's phone number")
    parser.add_argument("files", nargs="+", type=Path)
    args = _parse(parser, argv)
    terminal = Terminal(out)
    return _run(lambda: _send(args, terminal), terminal, out)


def _send(args: argparse.Namespace, terminal: Terminal) -> int:
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    kernel = _session(args, terminal)
    try:
        friend = kernel.friends.search(args.to)["user"]
        pending = []
        for path in args.files:
            terminal.say(f"{path.name}: hashing and offering to {friend['nickname']}...")
            transfer_id = kernel.files.send_file(friend["id"], path)
            terminal.names[transfer_id] = path.name
            pending.append(transfer_id)
            terminal.say(f"{path.name}: offered, waiting for {friend['nickname']} to accept")
        terminal.wait(lambda: all(t in terminal.outcomes for t in pending), args.timeout)
        good = all(terminal.outcomes[t].kind in (EventKind.FILE_DONE, EventKind.FILE_SPOOLED) for t in pending)
        return 0 if good else 1
    finally:
        kernel.close()


def receive_main(argv: Sequence[str], out: TextIO = sys.stderr) -> int:
    parser = _parser("meeting-client receive", "Accept files from friends into a folder, with progress.")
    parser.add_argument("--dir", type=Path, default=Path.home() / "Downloads", help="where files go")
    parser.add_argument("--count", type=int, default=0, help="stop after this many files (0: run until ^C)")
    args = _parse(parser, argv)
    terminal = Terminal(out)
    return _run(lambda: _receive(args, terminal), terminal, out)


def _receive(args: argparse.Namespace, terminal: Terminal) -> int:
    accepted: list[str] = []
    kernel = _session(args, terminal)
    try:
        terminal.say(f"waiting for files into {args.dir} (^C to stop)")
        while not args.count or len(accepted) < args.count:
            terminal.wait(lambda: bool(terminal.offers), args.timeout)
            with terminal.changed:
                offer = terminal.offers.pop(0)
            if offer["transfer_id"] in terminal.names:   # offered again after a reconnect
                continue
            terminal.names[offer["transfer_id"]] = offer["name"]
            terminal.say(f"{offer['name']}: {offer['size'] / MiB:.1f} MiB from {offer.get('from_nickname', '?')}, "
                         "accepting")
            try:
                kernel.files.accept(offer["transfer_id"], directory=args.dir)
            except ApiError as exc:
                terminal.say(f"{offer['name']}: cannot accept: {exc.message}")
                continue
            accepted.append(offer["transfer_id"])
        terminal.wait(lambda: all(t in terminal.outcomes for t in accepted), args.timeout)
        return 0 if all(terminal.outcomes[t].kind == EventKind.FILE_DONE for t in accepted) else 1
    finally:
        kernel.close()


def _run(work: Callable[[], int], terminal: Terminal, out: TextIO) -> int:
    try:
        return work()
    except UsageError as exc:
        out.write(f"{exc}\n")
        return 2
    except KeyboardInterrupt:
        terminal.say("stopped")
        return 1
    except (ApiError, ConnectError, ConnectionLost, TimeoutError, OSError) as exc:
        terminal.say(f"error: {getattr(exc, 'message', None) or exc}")
        return 1
