"""Media links between the nodes of a cluster: one TCP connection from each node to each node
it sends media to, on the reactor thread.

Why a direct link and not the Redis bus (``server.cluster.bus``): both were measured on the
same media traffic with ``scripts/bench_media_link.py`` (docs/PERFORMANCE.md, "Cluster media").
At 1,300–13,000 frames/s (77 % audio), a frame over this link, batched per reactor iteration,
cost 11–80 µs of CPU (both nodes), against 36–225 µs through the bus batched the same way
(2.8–3.7 times more: Redis is a third process, every byte is copied into and out of it, and
each side hands the batch between a thread and the reactor); the delay was 0.09–0.2 ms
against 0.4–1.1 ms at the median, and at 13,000 frames/s 0.6–3 ms against 4.4–155 ms at the
99th percentile (quiet and loaded machine). Media needs neither the bus's routing (the relay knows which nodes hold the room's
members) nor Redis; the bus stays for control events (room states reach the nodes there).

Finding a node: each node listens on its own port (``link_port``, any free port by default)
and registers ``host:port`` in the Redis hash ``<prefix>links`` (the host is the one of
``advertise``, or ``host``). A node that wants to send to another one looks the address up
(on the worker pool: the reactor never waits for Redis), connects without blocking and sends
HELLO with the cluster's link secret first (``<prefix>link_secret``, random, set by the first
node): only a process that can read the cluster's Redis can feed media into a node. Links are
one-way: the dialling node writes, the accepting node reads.

Writing: records are queued in a ``SendQueue`` and written once per reactor iteration with
one ``sendmsg`` (audio is ~77 % of frames, so the batching is what makes the link cheap). The
relay reads ``queued(node)`` before each frame and applies its slow-receiver policy to the
link as to a member (video dropped until a keyframe, audio past its budget). While a link is
down, ``queued`` says so (``DOWN``) and the relay drops frames for that node; a new connection
is tried on the next frame after ``RETRY_AFTER`` seconds.

A record is ``length u32 | type u8 | payload`` (big-endian; ``length`` counts type and
payload, at most ``MAX_RECORD``):

* ``HELLO``: the cluster's link secret (32 hex digits) and the sending node's name;
* ``MEDIA``: room number u32, then the whole MEDIA_FRAME as forwarded to members (frame
  header included, the publisher written in);
* ``KEYFRAME``: room number u32, publisher u32, kind u8: a receiving node asks the
  publisher's node for a keyframe (that node rate-limits and asks the publisher);
* ``SUBSCRIBE``: room number u32, publisher u32, kind u8, paused u8: every member of the
  sending node has paused the stream (1), or one wants it again (0).
"""
from __future__ import annotations

import errno
import logging
import secrets
import selectors
import socket
import struct
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Protocol

import redis

from common import limits
from common.frame import HEADER
from common.media import MEDIA_HEADER
from common.sendqueue import SendQueue

from .store import UNREACHABLE, Keys

if TYPE_CHECKING:
    from ..reactor import Reactor

log = logging.getLogger("server.cluster.link")

RECORD = struct.Struct(">IB")
ROOM = struct.Struct(">I")
KEYFRAME_BODY = struct.Struct(">IIB")
SUBSCRIBE_BODY = struct.Struct(">IIBB")
HELLO, MEDIA, KEYFRAME, SUBSCRIBE = 1, 2, 3, 4
MAX_RECORD = 1 + ROOM.size + HEADER.size + MEDIA_HEADER.size + limits.MAX_MEDIA_PAYLOAD
TOKEN_HEX = 32
HELLO_TIMEOUT = 5.0       # seconds an accepted link may take to say HELLO
RETRY_AFTER = 1.0         # seconds between connection attempts to a node that cannot be reached
READ_SIZE = 256 * 1024
READ_BUDGET = 4 * 1024 * 1024
DOWN = 1 << 62            # ``queued`` of a link that cannot carry anything now


class LinkReceiver(Protocol):
    """What a node does with the records its peers send (the media relay; reactor thread)."""

    def link_media(self, room: int, frame: bytes) -> None: ...
    def link_keyframe(self, room: int, publisher: int, kind: int) -> None: ...
    def link_subscribe(self, node: str, room: int, publisher: int, kind: int, paused: bool) -> None: ...


def media_record_header(room: int, frame_length: int) -> bytes:
    return RECORD.pack(1 + ROOM.size + frame_length, MEDIA) + ROOM.pack(room)


class PeerLinks:
    """This node's listener, its outgoing links and its accepted ones. Reactor thread, except
    ``start``/``stop`` (the caller's thread, before and after the reactor runs)."""

    def __init__(self, reactor: "Reactor", pool: Executor, client: redis.Redis, keys: Keys, node: str,
                 host: str, advertise_host: str, port: int = 0) -> None:
        self.reactor = reactor
        self.pool = pool
        self.client = client
        self.key = keys.prefix + "links"
        self.node = node
        self.host = host
        self.advertise_host = advertise_host
        self.port = port
        self.secret_key = keys.prefix + "link_secret"
        self.secret = ""
        self.receiver: LinkReceiver | None = None
        self.outgoing: dict[str, OutgoingLink] = {}
        self.incoming: set[IncomingLink] = set()
        self._listener: socket.socket | None = None
        self.records_out = 0
        self.records_in = 0
        self.bytes_out = 0
        self.bytes_in = 0
        self.connects = 0
        self.failures = 0

    # -- starting and stopping -------------------------------------------------------------------
    def start(self, receiver: LinkReceiver) -> None:
        """Listen and register this node's link address (blocking: before the reactor serves)."""
        self.receiver = receiver
        sock = socket.create_server((self.host, self.port), backlog=64)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        self._listener = sock
        self.reactor.add_reader(sock, _Acceptor(self))
        self.client.set(self.secret_key, secrets.token_hex(TOKEN_HEX // 2), nx=True)
        self.secret = self.client.get(self.secret_key).decode()
        self.client.hset(self.key, self.node, f"{_bracket(self.advertise_host)}:{self.port}")
        log.info("node %s takes media links from other nodes at %s:%d", self.node, self.host, self.port)

    def stop(self) -> None:
        try:
            self.client.hdel(self.key, self.node)
        except UNREACHABLE as exc:
            log.warning("could not remove this node's link address (Redis unreachable: %s)", exc)
        for link in [*self.outgoing.values(), *self.incoming]:
            link.close("node stopping")
        if self._listener is not None:
            self._listener.close()

    # -- sending (reactor thread) -------------------------------------------------------------------
    def queued(self, node: str) -> int:
        """Bytes waiting on the link to ``node`` (``DOWN`` if it cannot carry anything now);
        asks for a connection if there is none."""
        link = self.outgoing.get(node)
        if link is None or link.closed:
            link = self._dial(node)
            if link is None:
                return DOWN
        return link.out.size

    def send_media(self, node: str, room: int, frame: bytes) -> None:
        link = self.outgoing.get(node)
        if link is not None and not link.closed:
            link.send(media_record_header(room, len(frame)))
            link.send(frame)
            self.records_out += 1

    def send_keyframe_request(self, node: str, room: int, publisher: int, kind: int) -> None:
        self._send_control(node, RECORD.pack(1 + KEYFRAME_BODY.size, KEYFRAME)
                           + KEYFRAME_BODY.pack(room, publisher, kind))

    def send_subscribe(self, node: str, room: int, publisher: int, kind: int, paused: bool) -> None:
        self._send_control(node, RECORD.pack(1 + SUBSCRIBE_BODY.size, SUBSCRIBE)
                           + SUBSCRIBE_BODY.pack(room, publisher, kind, int(paused)))

    def _send_control(self, node: str, record: bytes) -> None:
        if self.queued(node) == DOWN:
            return
        self.outgoing[node].send(record)
        self.records_out += 1

    def _dial(self, node: str) -> "OutgoingLink | None":
        old = self.outgoing.get(node)
        if old is not None and time.monotonic() < old.retry_at:
            return None
        link = self.outgoing[node] = OutgoingLink(self, node)
        future = self.pool.submit(self.client.hget, self.key, node)
        future.add_done_callback(lambda fut: self.reactor.call_soon_threadsafe(link.resolved, fut))
        return link

    # -- receiving ------------------------------------------------------------------------------------
    def deliver(self, link: "IncomingLink", kind: int, payload: memoryview) -> None:
        receiver = self.receiver
        assert receiver is not None
        self.records_in += 1
        if kind == MEDIA:
            receiver.link_media(ROOM.unpack_from(payload)[0], bytes(payload[ROOM.size:]))
        elif kind == KEYFRAME and len(payload) == KEYFRAME_BODY.size:
            receiver.link_keyframe(*KEYFRAME_BODY.unpack_from(payload))
        elif kind == SUBSCRIBE and len(payload) == SUBSCRIBE_BODY.size:
            room, publisher, media_kind, paused = SUBSCRIBE_BODY.unpack_from(payload)
            receiver.link_subscribe(link.node, room, publisher, media_kind, bool(paused))
        else:
            link.close(f"unexpected record type {kind} of {len(payload)} bytes")

    def status(self) -> dict[str, int]:
        return {"link_peers_out": sum(1 for link in self.outgoing.values() if link.up),
                "link_peers_in": len(self.incoming), "link_records_out": self.records_out,
                "link_records_in": self.records_in, "link_bytes_out": self.bytes_out, "link_bytes_in": self.bytes_in,
                "link_connects": self.connects, "link_failures": self.failures}


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _split_address(text: str) -> tuple[str, int]:
    """``host:port`` as registered by ``PeerLinks.start``."""
    host, port = text.rsplit(":", 1)
    return host.strip("[]"), int(port)


class _Acceptor:
    def __init__(self, links: PeerLinks) -> None:
        self.links = links

    def on_readable(self) -> None:
        assert self.links._listener is not None
        for _ in range(64):
            try:
                sock, address = self.links._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("media link accept failed: %s", exc)
                return
            self.links.incoming.add(IncomingLink(self.links, sock, f"{address[0]}:{address[1]}"))

    def on_writable(self) -> None:
        pass


class OutgoingLink:
    """This node's connection to one peer node: it writes, and reads only to see it close."""

    def __init__(self, links: PeerLinks, node: str) -> None:
        self.links = links
        self.node = node
        self.sock: socket.socket | None = None
        self.out = SendQueue()
        self.up = False
        self.closed = False
        self.retry_at = 0.0
        self._flush_pending = False
        self._events = 0
        hello = f"{links.secret}{links.node}".encode()
        self.out.append(RECORD.pack(1 + len(hello), HELLO) + hello)

    def resolved(self, future) -> None:
        """Reactor thread: the peer's address came back from Redis; connect without blocking."""
        if self.closed:
            return
        try:
            raw = future.result()
        except (redis.RedisError, OSError) as exc:
            self._failed(f"cannot look its address up ({exc.__class__.__name__}: {exc})")
            return
        if raw is None:
            self._failed("it has no link address registered (stopped, or never started)")
            return
        host, port = _split_address(raw.decode())
        try:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex((host, port))
        except OSError as exc:
            self._failed(f"cannot connect to {host}:{port}: {exc}")
            return
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._failed(f"cannot connect to {host}:{port}: {errno.errorcode.get(code, code)}")
            return
        self.sock = sock
        self._set_events(selectors.EVENT_WRITE)

    def _failed(self, why: str) -> None:
        self.links.failures += 1
        log.warning("media link to node %s: %s; frames for it are dropped until it is back", self.node, why)
        self.close(why)

    def _set_events(self, events: int) -> None:
        if self.sock is None or events == self._events:
            return
        self.links.reactor.set_events(self.sock, self, events, self._events)
        self._events = events

    def send(self, data: bytes) -> None:
        self.out.append(data)
        if self.up and not self._flush_pending and not self._events & selectors.EVENT_WRITE:
            self._flush_pending = True
            self.links.reactor.flush_soon(self)

    def on_writable(self) -> None:
        if not self.up:
            assert self.sock is not None
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self._failed(f"connection failed: {errno.errorcode.get(error, error)}")
                return
            self.up = True
            self.links.connects += 1
            log.info("media link to node %s is up", self.node)
        self.flush()

    def on_readable(self) -> None:
        """The peer never writes on this link: readable means it closed."""
        assert self.sock is not None
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._failed(f"connection lost: {exc.__class__.__name__}")
            return
        self._failed("closed by the peer" if not data else "the peer wrote on a one-way link")

    def flush(self) -> None:
        self._flush_pending = False
        if self.closed or not self.up or self.sock is None:
            return
        try:
            sent = self.out.write(self.sock)
        except OSError as exc:
            self._failed(f"write failed: {exc.__class__.__name__}")
            return
        self.links.bytes_out += sent
        self._set_events(selectors.EVENT_READ | (selectors.EVENT_WRITE if self.out else 0))

    def close(self, reason: str) -> None:
        """A link that was up is dialled again on the next frame (the peer may have restarted);
        one that never came up only after RETRY_AFTER."""
        if self.closed:
            return
        self.closed = True
        self.retry_at = time.monotonic() + (0.0 if self.up else RETRY_AFTER)
        self.up = False
        self.out.clear()
        if self.sock is not None:
            self._set_events(0)
            self.sock.close()
        log.debug("media link to node %s closed: %s", self.node, reason)


class IncomingLink:
    """A peer node's connection to this one: HELLO first, then records to deliver."""

    def __init__(self, links: PeerLinks, sock: socket.socket, peer: str) -> None:
        self.links = links
        self.sock = sock
        self.peer = peer
        self.node = ""
        self.buffer = bytearray()
        self.closed = False
        sock.setblocking(False)
        links.reactor.add_reader(sock, self)
        self._deadline = links.reactor.call_later(HELLO_TIMEOUT, self._hello_due)

    def _hello_due(self) -> None:
        if not self.node:
            self.close(f"no HELLO within {HELLO_TIMEOUT:g} s")

    def on_readable(self) -> None:
        budget = READ_BUDGET
        while budget > 0 and not self.closed:
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.close(f"read error: {exc.__class__.__name__}")
                return
            if not data:
                self.close("closed by the peer")
                return
            self.links.bytes_in += len(data)
            budget -= len(data)
            self._records(data)
            if len(data) < READ_SIZE:
                return

    def _records(self, data: bytes) -> None:
        """Deliver every whole record; keep the start of an incomplete one."""
        if self.buffer:
            self.buffer += data
            view = memoryview(self.buffer)
        else:
            view = memoryview(data)
        pos, end, size = 0, len(view), RECORD.size
        while end - pos >= size and not self.closed:
            length, kind = RECORD.unpack_from(view, pos)
            if not 1 <= length <= MAX_RECORD:
                self.close(f"record of {length} bytes (limit {MAX_RECORD})")
                return
            stop = pos + 4 + length
            if stop > end:
                break
            payload = view[pos + size:stop]
            if not self.node:
                self._hello(kind, bytes(payload))
            else:
                try:
                    self.links.deliver(self, kind, payload)
                except Exception:       # one bad record must not lose the link's place in the stream
                    log.exception("media link from node %s: a record of type %d failed", self.node, kind)
            pos = stop
        rest = bytes(view[pos:]) if pos < end else b""
        view.release()
        self.buffer = bytearray(rest)

    def _hello(self, kind: int, payload: bytes) -> None:
        if kind != HELLO or not secrets.compare_digest(payload[:TOKEN_HEX], self.links.secret.encode()):
            self.close("the first record is not a HELLO with the cluster's link secret")
            return
        self.node = payload[TOKEN_HEX:].decode(errors="replace")
        self._deadline.cancel()
        log.info("media link from node %s (%s) accepted", self.node, self.peer)

    def on_writable(self) -> None:
        pass

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._deadline.cancel()
        self.links.reactor.remove(self.sock)
        self.sock.close()
        self.links.incoming.discard(self)
        log.info("media link from node %s (%s) closed: %s", self.node or "?", self.peer, reason)
