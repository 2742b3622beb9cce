"""Admin status: live figures from the running server over a local unix socket.

The socket (``config.admin_socket_path``, by default ``<data_dir>/admin.sock``) is created with
mode 0600 (bound under a temporary name, chmod-ed, then renamed into place, so there is no
moment when others could open it), and a peer whose uid (SO_PEERCRED) is neither the server's
nor root is refused as well. The reactor serves it like any other socket.

The exchange is one line each way: the client sends ``status\\n``, the server answers one
JSON object and a newline, then closes. ``meeting-server status`` is the client.
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import socket
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, TextIO

from .config import ServerConfig

if TYPE_CHECKING:
    from .reactor import Reactor

log = logging.getLogger("server.admin")

MAX_REQUEST = 1024
CLIENT_TIMEOUT = 5.0
DISABLED = "off"


class AdminError(Exception):
    """The admin socket cannot be reached or answered nonsense."""


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


# The figures the admin socket answers ``status`` with (reactor thread).
Figures = Callable[[], Mapping[str, Any]]


class AdminServer:
    """The listening admin socket (a reactor Selectable)."""

    def __init__(self, reactor: Reactor, figures: Figures, path: Path) -> None:
        self.reactor = reactor
        self.figures = figures
        self.path = path
        self.sock: socket.socket | None = None
        self._inode: int | None = None

    def open(self) -> bool:
        """Bind and register with the reactor; False (logged) if the socket cannot be served."""
        path = self.path
        if len(os.fsencode(path)) >= 108:
            log.warning("admin socket path %s is too long for a unix socket: status disabled", path)
            return False
        if path.exists() and _is_live(path):
            log.warning("admin socket %s is in use by another server: status disabled for this one", path)
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{id(self)}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            temporary.unlink(missing_ok=True)
            sock.bind(str(temporary))
            os.chmod(temporary, 0o600)
            os.replace(temporary, path)
            sock.listen(16)
        except OSError as exc:
            sock.close()
            temporary.unlink(missing_ok=True)
            log.warning("cannot open the admin socket %s: %s", path, exc)
            return False
        sock.setblocking(False)
        self.sock = sock
        self._inode = path.stat().st_ino
        self.reactor.add_reader(sock, self)
        log.info("admin status on %s", path)
        return True

    def on_readable(self) -> None:
        assert self.sock is not None
        for _ in range(16):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("admin accept failed: %s", exc)
                return
            uid = _peer_uid(sock)
            if uid not in (os.getuid(), 0):
                log.warning("admin socket: refused a client running as uid %d", uid)
                sock.close()
                continue
            AdminSession(self.reactor, self.figures, sock)

    def on_writable(self) -> None:
        pass

    def close(self) -> None:
        """Stop serving and remove the socket file if it is still ours."""
        if self.sock is None:
            return
        self.reactor.remove(self.sock)
        self.sock.close()
        self.sock = None
        try:
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()
        except OSError:
            pass


class AdminSession:
    """One admin client: read a command line, write the answer, close."""

    def __init__(self, reactor: Reactor, figures: Figures, sock: socket.socket) -> None:
        self.reactor = reactor
        self.figures = figures
        self.sock = sock
        self.inbuf = b""
        self.out = b""
        sock.setblocking(False)
        self.timer = reactor.call_later(CLIENT_TIMEOUT, self.close)
        reactor.add_reader(sock, self)

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.inbuf += data
        if b"\n" not in self.inbuf and data and len(self.inbuf) < MAX_REQUEST:
            return
        command = self.inbuf.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
        if command == "status":
            answer: dict[str, Any] = {"ok": True, "status": self.figures()}
        else:
            answer = {"ok": False, "error": f"unknown command {command[:40]!r}; try 'status'"}
        self.out = json.dumps(answer, default=str).encode("utf-8") + b"\n"
        self.reactor.set_events(self.sock, self, selectors.EVENT_WRITE, selectors.EVENT_READ)
        self.on_writable()

    def on_writable(self) -> None:
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.out = self.out[sent:]
        if not self.out:
            self.close()

    def close(self) -> None:
        if self.sock.fileno() == -1:
            return
        self.timer.cancel()
        self.reactor.remove(self.sock)
        self.sock.close()


def open_admin(config: ServerConfig, reactor: Reactor, figures: Figures) -> AdminServer | None:
    """Serve the admin socket unless ``admin_socket = off``; None when it is not served."""
    if config.admin_socket == DISABLED:
        return None
    admin = AdminServer(reactor, figures, config.admin_socket_path)
    return admin if admin.open() else None


def _is_live(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


# -- the client side: `meeting-server status` ------------------------------------------------------
def query_status(path: str | os.PathLike, timeout: float = CLIENT_TIMEOUT) -> dict[str, Any]:
    """Ask a running server for its figures; raises AdminError with a readable reason."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(os.fspath(path))
        except FileNotFoundError:
            raise AdminError(f"no admin socket at {path}: is the server running with this configuration?") from None
        except PermissionError:
            raise AdminError(f"permission denied on {path}: run as the server's user (or root)") from None
        except ConnectionRefusedError:
            raise AdminError(f"nobody listens on {path}: the server is not running") from None
        sock.sendall(b"status\n")
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except socket.timeout:
        raise AdminError(f"no answer from {path} within {timeout:g} s (is the server stuck?)") from None
    except OSError as exc:
        raise AdminError(f"admin socket {path}: {exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(b"".join(chunks))
    except ValueError:
        raise AdminError(f"the server at {path} sent an unreadable answer") from None
    if not answer.get("ok"):
        raise AdminError(answer.get("error", "the server refused the command"))
    return answer["status"]


_LABELS = [
    ("uptime_s", "uptime (s)"),
    ("connections", "connections"),
    ("users_online", "users online"),
    ("rooms", "rooms"),
    ("room_members", "room members"),
    ("pool_queue", "pool queue depth"),
    ("reactor_loops", "reactor loop iterations"),
    ("bytes_in", "bytes in"),
    ("bytes_out", "bytes out"),
    ("frames_in", "frames in"),
    ("frames_out", "frames out"),
    ("media_frames_in", "media frames in"),
    ("media_frames_out", "media frames out"),
    ("media_frames_dropped", "media frames dropped"),
    ("accepted", "connections accepted"),
    ("refused", "connections refused"),
    ("pool_submitted", "pool jobs submitted"),
    ("pool_completed", "pool jobs completed"),
]


LABEL_WIDTH = 24


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, (list, tuple)):
        return " ".join(str(item) for item in value)
    return str(value)


def _add(lines: list[str], label: str, value: Any, indent: str = "") -> None:
    if isinstance(value, Mapping):
        lines.append(f"{indent}{label}:")
        for key, sub in value.items():
            _add(lines, str(key).replace("_", " "), sub, indent + "  ")
    elif isinstance(value, (list, tuple)) and any(isinstance(item, Mapping) for item in value):
        lines.append(f"{indent}{label}: {len(value)}")
        for item in value:
            fields = item.items() if isinstance(item, Mapping) else [("", item)]
            lines.append(f"{indent}  - " + ", ".join(f"{k}={_fmt(v)}" if k else _fmt(v) for k, v in fields))
    else:
        lines.append(f"{indent}{label + ':':<{LABEL_WIDTH - len(indent)}} {_fmt(value)}")


def format_status(figures: Mapping[str, Any]) -> str:
    """Human-readable status: the known figures first, then whatever domain modules added."""
    lines: list[str] = []
    for key, label in _LABELS:
        if key in figures:
            _add(lines, label, figures[key])
    known = {key for key, _ in _LABELS}
    for key, value in figures.items():
        if key not in known:
            _add(lines, key.replace("_", " "), value)
    return "\n".join(lines)


def gather_status(path: str | os.PathLike) -> dict[str, Any]:
    """The figures of the server at ``path``; when that is a supervisor (``workers`` > 1),
    each of its workers is asked in turn and its figures (or why it could not answer) are
    added to its entry, with the totals of the live ones."""
    figures = query_status(path)
    supervisor = figures.get("supervisor")
    if not supervisor:
        return figures
    totals = {"connections": 0, "users_online": 0, "rooms": 0}
    for worker in supervisor["workers"]:
        if worker.get("pid") is None:
            continue
        try:
            worker["status"] = status = query_status(worker["admin_socket"])
        except AdminError as exc:
            worker["error"] = str(exc)
            continue
        for key in totals:
            totals[key] += _count(status.get(key, 0))
    supervisor["totals"] = totals
    return figures


def _count(value: Any) -> int:
    return value if isinstance(value, int) else len(value)


def format_cluster(supervisor: Mapping[str, Any]) -> str:
    """The table of a supervisor's workers: one line per node, then the totals."""
    lines = [f"node {supervisor['node']}: {len(supervisor['workers'])} workers on port {supervisor['port']}, "
             f"supervisor pid {supervisor['pid']}, up {_fmt(supervisor['uptime_s'])} s", ""]
    header = f"{'node':<24}{'pid':>8}  {'state':<11}{'up (s)':>10}{'restarts':>9}{'connections':>13}{'users':>9}" \
             f"{'rooms':>7}"
    lines.append(header)
    for worker in supervisor["workers"]:
        status = worker.get("status") or {}
        figures = "".join(f"{_fmt(_count(status[key])) if key in status else '-':>{width}}"
                          for key, width in (("connections", 13), ("users_online", 9), ("rooms", 7)))
        lines.append(f"{worker['node']:<24}{worker['pid'] or '-':>8}  {worker['state']:<11}"
                     f"{_fmt(worker['up_s']):>10}{worker['restarts']:>9}{figures}")
        if worker.get("error"):
            lines.append(f"  ({worker['error']})")
    totals = supervisor.get("totals") or {}
    lines.append(f"{'total':<24}{'':>8}  {'':<11}{'':>10}{'':>9}{_fmt(totals.get('connections', 0)):>13}"
                 f"{_fmt(totals.get('users_online', 0)):>9}{_fmt(totals.get('rooms', 0)):>7}")
    return "\n".join(lines)


def registered_nodes(config: ServerConfig) -> dict[str, dict[str, Any]]:
    """Every node registered in the cluster's Redis: its last published figures and whether its
    lease is alive; raises AdminError when Redis does not answer."""
    import redis

    from .cluster.directory import cluster_nodes
    try:
        return cluster_nodes(config.redis, config.redis_prefix)
    except redis.RedisError as exc:
        raise AdminError(f"the cluster's Redis at {config.redis} does not answer: {exc}") from None


def format_nodes(nodes: Mapping[str, Mapping[str, Any]], now: float | None = None) -> str:
    """The cluster as Redis knows it: one line per node, then the totals of the live ones."""
    now = time.time() if now is None else now
    alive = [info for info in nodes.values() if info.get("alive")]
    lines = [f"cluster: {len(nodes)} nodes, {len(alive)} alive", "",
             f"{'node':<24}{'advertise':<24}{'state':<7}{'pid':>8}{'connections':>13}{'users':>9}{'rooms':>7}"
             f"{'seen (s ago)':>14}"]
    for name, info in nodes.items():
        lines.append(f"{name:<24}{str(info.get('advertise', '-')):<24}{'alive' if info.get('alive') else 'dead':<7}"
                     f"{info.get('pid', '-'):>8}{_fmt(info.get('connections', 0)):>13}{_fmt(info.get('users', 0)):>9}"
                     f"{_fmt(info.get('rooms', 0)):>7}{max(0.0, now - info.get('updated', now)):>14.1f}")
    lines.append(f"{'total (alive)':<24}{'':<24}{'':<7}{'':>8}"
                 f"{_fmt(sum(info.get('connections', 0) for info in alive)):>13}"
                 f"{_fmt(sum(info.get('users', 0) for info in alive)):>9}"
                 f"{_fmt(sum(info.get('rooms', 0) for info in alive)):>7}")
    return "\n".join(lines)


def print_status(config: ServerConfig, as_json: bool = False, out: TextIO | None = None) -> int:
    """`meeting-server status`: this server's figures (each worker's with ``workers``), and with
    ``redis`` every node of the cluster; 0 when all of it was printed, 1 otherwise."""
    out = out or sys.stdout
    problems: list[str] = []
    figures: dict[str, Any] = {}
    if config.admin_socket == DISABLED:
        problems.append("the admin socket is disabled (admin_socket = off)")
    else:
        try:
            figures = gather_status(config.admin_socket_path)
        except AdminError as exc:
            problems.append(str(exc))
    nodes = None
    if config.redis:
        try:
            nodes = registered_nodes(config)
        except AdminError as exc:
            problems.append(str(exc))
    for problem in problems:
        print(f"meeting-server status: {problem}", file=sys.stderr)
    if not figures and nodes is None:
        return 1
    if as_json:
        json.dump({**figures, **({"cluster": nodes} if nodes is not None else {})}, out, indent=2, sort_keys=True,
                  default=str)
        out.write("\n")
    else:
        parts = []
        if figures:
            parts.append(format_cluster(figures["supervisor"]) if "supervisor" in figures else format_status(figures))
        if nodes is not None:
            parts.append(format_nodes(nodes))
        out.write("\n\n".join(parts) + "\n")
    return 1 if problems else 0
