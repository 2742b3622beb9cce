"""The client's network thread: one socket, a selector, a send queue and a wake-up pair.

Whatever other threads queued between two wake-ups leaves in one ``sendmsg`` (see
``SendQueue``).

It knows bytes and frames, not meaning: decoded frames, connection changes and a periodic
tick go to a ``LinkHandler`` (the kernel), called on this thread, which must never block.
"""
from __future__ import annotations

import collections
import logging
import selectors
import socket
import ssl
import threading
import time
from typing import Protocol

from common.frame import Frame, FrameDecoder, ProtocolError
from common.sendqueue import SendQueue

from .buffers import BufferPool

log = logging.getLogger("client.link")

TICK = 0.2
READ_SIZE = 256 * 1024


class LinkHandler(Protocol):
    def on_connected(self) -> None: ...
    def on_frame(self, frame: Frame) -> None: ...
    def on_disconnected(self, reason: str) -> None: ...
    def on_tick(self, now: float) -> None: ...


PROTOCOL_ERROR_REASON = "protocol error from the server"   # how a drop on bytes that are no frame begins


class ConnectError(Exception):
    """The server could not be reached (or its certificate was refused)."""


class Link(threading.Thread):
    def __init__(self, handler: LinkHandler, buffers: BufferPool, ssl_context: ssl.SSLContext | None = None,
                 fingerprint_check=None) -> None:
        """``buffers``: where large frame bodies are read into, and where a frame sent with
        ``recycle`` goes back once sent."""
        super().__init__(name="client-network", daemon=True)
        self.handler = handler
        self.ssl_context = ssl_context
        self.fingerprint_check = fingerprint_check
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._sock: socket.socket | None = None
        self.buffers = buffers
        self._decoder = FrameDecoder(new_body=self.buffers.take)
        self._out = SendQueue(recycle=self.buffers.give)
        self.out_size = 0              # bytes queued (kept apart from the queue: read without the lock)
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)   # notified whenever queued output shrinks
        self._commands: collections.deque = collections.deque()
        self._stopping = False
        self.last_recv = 0.0
        self.bytes_in = 0
        self.bytes_out = 0

    # -- called from any thread ---------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._sock is not None

    def send(self, data: bytes | bytearray, recycle: bool = False) -> bool:
        """Queue a frame; False if not connected (the caller decides what to keep).

        With ``recycle`` the frame is a bytearray from ``buffers`` that goes back to the pool
        once sent."""
        with self._lock:
            if self._sock is None:
                return False
            self._out.append(data, recycle)
            self.out_size += len(data)
        self._wake()
        return True

    def wait_for_room(self, limit: int, timeout: float) -> bool:
        """Block until at most ``limit`` bytes are queued (or the link is down); False on timeout.

        Lets a bulk sender (file chunks) keep the queue short, so heartbeats and chat queued
        after it never wait behind more than ``limit`` bytes."""
        with self._room:
            return self._room.wait_for(lambda: self.out_size <= limit or self._sock is None, timeout)

    def connect(self, host: str, port: int, timeout: float = 10.0) -> None:
        """Connect (blocking the caller, not the thread's loop semantics); raises ConnectError."""
        done = threading.Event()
        result: list[BaseException | None] = [None]
        self._commands.append(("connect", host, port, timeout, done, result))
        self._wake()
        if not done.wait(timeout + 5):
            raise ConnectError(f"timed out connecting to {host}:{port}")
        if result[0] is not None:
            raise result[0]

    def drop(self, reason: str) -> None:
        self._commands.append(("drop", reason))
        self._wake()

    def stop(self) -> None:
        self._stopping = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    # -- the thread -----------------------------------------------------------------------------------
    def run(self) -> None:
        next_tick = time.monotonic()
        try:
            while not self._stopping:
                self._update_interest()
                timeout = max(0.0, next_tick - time.monotonic())
                for key, mask in self.selector.select(timeout):
                    if key.data == "wake":
                        self._drain_wake()
                    else:
                        if mask & selectors.EVENT_READ:
                            self._read()
                        if mask & selectors.EVENT_WRITE and self._sock is not None:
                            self._write()
                self._run_commands()
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + TICK
                    self.handler.on_tick(now)
        except Exception:
            log.exception("network thread failed")
        finally:
            self._close("client stopped", notify=False)
            self.selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run_commands(self) -> None:
        while self._commands:
            command = self._commands.popleft()
            if command[0] == "connect":
                _, host, port, timeout, done, result = command
                try:
                    self._open(host, port, timeout)
                except ConnectError as exc:
                    result[0] = exc
                done.set()
                if result[0] is None:
                    self.handler.on_connected()
            elif command[0] == "drop":
                self._close(command[1])

    def open_now(self, host: str, port: int, timeout: float) -> None:
        """From the network thread itself (a reconnect attempt): connect or raise ConnectError."""
        self._open(host, port, timeout)
        self.handler.on_connected()

    def _open(self, host: str, port: int, timeout: float) -> None:
        self._close("reconnecting", notify=False)
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ConnectError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
            except ssl.SSLCertVerificationError as exc:
                sock.close()
                raise ConnectError(f"the server's certificate is not trusted: {exc.verify_message}") from None
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise ConnectError(f"TLS with {host}:{port} failed: {exc}") from None
            if self.fingerprint_check is not None:
                try:
                    self.fingerprint_check(sock.getpeercert(binary_form=True))
                except Exception as exc:
                    sock.close()
                    raise ConnectError(str(exc)) from None
        sock.setblocking(False)
        with self._lock:
            self._sock = sock
            self._out.clear()
            self.out_size = 0
        self._decoder = FrameDecoder(new_body=self.buffers.take)
        self._registered = 0
        self.last_recv = time.monotonic()

    _registered = 0

    def _update_interest(self) -> None:
        sock = self._sock
        if sock is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self._out else 0)
        if events == self._registered:
            return
        if self._registered:
            self.selector.modify(sock, events, "sock")
        else:
            self.selector.register(sock, events, "sock")
        self._registered = events

    def _read(self) -> None:
        sock = self._sock
        while sock is not None:
            buffer = self._decoder.read_buffer(READ_SIZE)
            try:
                received = sock.recv_into(buffer)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            except (OSError, ssl.SSLError) as exc:
                self._close(f"connection lost: {exc.__class__.__name__}")
                return
            if not received:
                self._close("the server closed the connection")
                return
            self.bytes_in += received
            self.last_recv = time.monotonic()
            try:
                frames = self._decoder.commit(received)
            except ProtocolError as exc:
                self._close(f"{PROTOCOL_ERROR_REASON}: {exc}")
                return
            for frame in frames:
                self.handler.on_frame(frame)
            if received < len(buffer) and not isinstance(sock, ssl.SSLSocket):
                return

    def _write(self) -> None:
        sock = self._sock
        if sock is None:
            return
        with self._lock:
            try:
                sent = self._out.write(sock)
            except (OSError, ssl.SSLError) as exc:
                error: Exception | None = exc
            else:
                error = None
                self.out_size -= sent
                self.bytes_out += sent
                if sent:
                    self._room.notify_all()
        if error is not None:
            self._close(f"connection lost: {error.__class__.__name__}")

    def _close(self, reason: str, notify: bool = True) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
            self._out.clear()
            self.out_size = 0
            self._room.notify_all()
        if sock is None:
            return
        if self._registered:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            self._registered = 0
        try:
            sock.close()
        except OSError:
            pass
        if notify:
            self.handler.on_disconnected(reason)
