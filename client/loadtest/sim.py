"""One simulated client: ``common.protocol.ClientProtocol`` over one TCP connection.

Thousands of these share one event loop per process. The loop is asyncio's, which on Linux is
a ``selectors`` (epoll) loop; its protocol callbacks cost one small object per connection
and no thread, and coroutines let each scenario read top to bottom. The sans-IO protocol
matches replies to requests and decodes events; this shell keeps what waits for a reply, and
hands each server event's typed body (``common.messages``; raw bytes for binary packets) to
the handler of its type.

The load generator shares the cores with the server it measures, so the per-message path is
kept lean: a read goes straight into one buffer per thread (``BufferedProtocol``; a plain
``Protocol`` gets a fresh 256 KiB ``bytes`` per read: three memory-mapping system calls
each), a request may be answered by a callback instead of a future, and request deadlines are
checked by one timer per client (``_sweep``), not one timer per request.
"""
from __future__ import annotations

import asyncio
import ssl
import threading
import time
from typing import Any, Callable, NamedTuple

from common import limits, messages
from common.errors import ApiError, ErrorCode
from common.frame import FrameDecoder, ProtocolError
from common.packets import PacketType
from common.protocol import BadEvent, BinaryEvent, ClientProtocol, Failure, Refusal, Reply, ServerEvent

from .metrics import Metrics, ServerMetrics

PASSWORD = "load-test-password"
CLIENT_NAME = "meeting-loadtest/0.1"
READ_SIZE = 256 * 1024
SWEEP_INTERVAL = 0.25   # seconds: the most a request outlives its timeout before it is reported

Answer = Callable[[Any, "BaseException | None"], None]   # (reply body, None) or (None, the error)


class ConnectionLost(Exception):
    """The server closed the connection (or it broke) while a request waited."""


class RequestTimeout(Exception):
    def __init__(self, packet_type: int) -> None:
        super().__init__(f"no reply to {PacketType(packet_type).name}")
        self.packet_type = packet_type


def error_kind(exc: BaseException) -> str:
    """A short, countable name for what went wrong."""
    if isinstance(exc, ApiError):
        return f"ERROR {exc.code.name}"
    if isinstance(exc, RequestTimeout):
        return f"timeout {PacketType(exc.packet_type).name}"
    if isinstance(exc, ConnectionLost):
        return f"connection lost: {exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc.__class__.__name__}"
    if isinstance(exc, OSError):
        return f"connect: {exc.__class__.__name__}"
    return exc.__class__.__name__


class Waiting(NamedTuple):
    """A request waiting for its reply."""

    deadline: float           # the loop's clock
    packet_type: int
    answer: Answer


_thread = threading.local()


def read_buffer() -> bytearray:
    """The buffer every client of this thread's event loop reads into: each read is decoded
    before the next one starts, and a decoder keeps only the tail of a frame not yet complete."""
    buffer = getattr(_thread, "read_buffer", None)
    if buffer is None:
        buffer = _thread.read_buffer = bytearray(READ_SIZE)
    return buffer


def future_answer(future: asyncio.Future) -> Answer:
    """An answer that resolves ``future`` (unless its awaiter gave up on it)."""
    def answer(body: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(body)
        else:
            future.set_exception(error)
    return answer


class SimClient(asyncio.BufferedProtocol):
    def __init__(self, metrics: Metrics | ServerMetrics, phone: str, nickname: str) -> None:
        self.metrics = metrics
        self.phone = phone
        self.nickname = nickname
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.protocol = ClientProtocol()
        self.decoder = FrameDecoder(scratch=read_buffer())
        self.pending: dict[int, Waiting] = {}
        self.handlers: dict[int, Callable[[Any], None]] = {}    # type -> fn(typed body or bytes)
        self.user: dict[str, Any] = {}
        self.closed = self.loop.create_future()
        self.close_reason = ""
        self.expect_close = False
        self.heartbeat_interval = 10.0
        self._writable = asyncio.Event()
        self._writable.set()
        self._sweep: asyncio.TimerHandle | None = None

    # -- asyncio.BufferedProtocol --------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.decoder.read_buffer(READ_SIZE)

    def buffer_updated(self, nbytes: int) -> None:
        try:
            frames = self.decoder.commit(nbytes)
        except ProtocolError as exc:
            self.metrics.error(f"protocol error from server: {exc}")
            self.close()
            return
        for frame in frames:
            event = self.protocol.receive_frame(frame)
            if isinstance(event, (Reply, Failure)):
                waiting = self.pending.pop(event.request_id, None)
                if waiting is not None:
                    if isinstance(event, Reply):
                        waiting.answer(event.body, None)
                    else:
                        waiting.answer(None, event.error)
            elif isinstance(event, (ServerEvent, BinaryEvent)):
                handler = self.handlers.get(event.type)
                if handler is not None:
                    handler(event.body)
                elif event.type == PacketType.GOING_AWAY:
                    self.close_reason = "GOING_AWAY"
                elif event.type == PacketType.KICKED:
                    self.metrics.error("KICKED")
            elif isinstance(event, Refusal):   # a refusal before closing
                self.close_reason = f"ERROR {event.error.code.name}"
            elif isinstance(event, BadEvent):
                self.metrics.error(f"bad {PacketType(event.type).name} from server")

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self.close_reason or (f"{exc.__class__.__name__}" if exc else "closed by server")
        if not self.expect_close and not self.pending:
            # (with requests waiting, whoever awaits them reports the loss)
            self.metrics.error(f"connection lost: {reason}")
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        waiting = list(self.pending.values())
        self.pending.clear()
        self.protocol.connection_lost()
        self._writable.set()
        if not self.closed.done():
            self.closed.set_result(reason)
        for request in waiting:
            request.answer(None, ConnectionLost(reason))

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- sending ---------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self.transport is not None and not self.closed.done()

    async def writable(self) -> None:
        """Wait while the kernel and transport buffers are full (flow control)."""
        await self._writable.wait()

    def send_frame(self, data: bytes) -> None:
        if self.connected:
            self.transport.write(data)  # type: ignore[union-attr]

    def send(self, packet_type: int, body: messages.Body | dict | bytes | None = None) -> None:
        """A packet that wants no reply (request id 0)."""
        self.send_frame(self.protocol.event(packet_type, body))

    def send_request(self, packet_type: int, body: messages.Body | dict | bytes | None, answer: Answer,
                     timeout: float = 30.0) -> None:
        """Send a request; ``answer(reply body, None)`` or ``answer(None, error)`` runs once,
        on the event loop: the error is the ERROR as ApiError, ConnectionLost or RequestTimeout
        (at most ``SWEEP_INTERVAL`` after ``timeout``). No future and no task: the cheap way
        for a scenario that sends many requests."""
        if not self.connected:
            self.loop.call_soon(answer, None, ConnectionLost(self.close_reason or "not connected"))
            return
        request_id, data = self.protocol.request(packet_type, body)
        deadline = self.loop.time() + timeout
        self.pending[request_id] = Waiting(deadline, packet_type, answer)
        self.transport.write(data)  # type: ignore[union-attr]
        self._sweep_by(deadline)

    def request_future(self, packet_type: int, body: messages.Body | dict | bytes | None = None,
                       timeout: float = 30.0) -> asyncio.Future:
        """Send a request; the future resolves to the reply body or raises the ERROR as ApiError."""
        future = self.loop.create_future()
        self.send_request(packet_type, body, future_answer(future), timeout)
        return future

    async def request(self, packet_type: int, body: messages.Body | dict | bytes | None = None,
                      timeout: float = 30.0) -> dict:
        """Send and await the reply body; raises ApiError, ConnectionLost or RequestTimeout."""
        return await self.request_future(packet_type, body, timeout)

    # -- request deadlines ----------------------------------------------------------------------
    def _sweep_by(self, when: float) -> None:
        """Make sure a sweep runs at ``when`` or earlier."""
        if self._sweep is not None:
            if self._sweep.when() <= when:
                return
            self._sweep.cancel()
        self._sweep = self.loop.call_at(when, self._expire)

    def _expire(self) -> None:
        """Time out every request past its deadline, then sleep until the earliest deadline
        left, but at least ``SWEEP_INTERVAL``: a client that always has requests waiting
        sweeps four times a second, not once per request."""
        self._sweep = None
        now = self.loop.time()
        expired = [request_id for request_id, waiting in self.pending.items() if waiting.deadline <= now]
        for request_id in expired:
            waiting = self.pending.pop(request_id)
            self.protocol.forget(request_id)
            waiting.answer(None, RequestTimeout(waiting.packet_type))
        if self.pending:
            earliest = min(waiting.deadline for waiting in self.pending.values())
            self._sweep_by(max(earliest, now + SWEEP_INTERVAL))

    # -- session ---------------------------------------------------------------------------------
    async def connect(self, host: str, port: int, timeout: float = 30.0,
                      tls: tuple[ssl.SSLContext, Callable[[bytes], None] | None] | None = None) -> None:
        """Connect (over TLS when ``tls`` is ``client.tls.TlsOptions.build()``'s result)."""
        context, check = tls if tls else (None, None)
        await asyncio.wait_for(self.loop.create_connection(lambda: self, host, port, ssl=context), timeout)
        if check is not None:
            assert self.transport is not None
            check(self.transport.get_extra_info("ssl_object").getpeercert(binary_form=True))

    async def hello(self) -> dict:
        info = await self.request(PacketType.HELLO, {"version": limits.PROTOCOL_VERSION, "client": CLIENT_NAME})
        self.heartbeat_interval = float(info.get("heartbeat_interval", self.heartbeat_interval))
        return info

    async def register_and_login(self) -> dict:
        """REGISTER (an existing account is fine: reruns reuse phones) then LOGIN."""
        try:
            await self.request(PacketType.REGISTER, {"phone": self.phone, "password": PASSWORD,
                                                     "nickname": self.nickname})
        except ApiError as exc:
            if exc.code != ErrorCode.PHONE_TAKEN:
                raise
        reply = await self.request(PacketType.LOGIN, {"phone": self.phone, "password": PASSWORD})
        self.user = reply["user"]
        return reply

    async def heartbeat(self, name: str = "heartbeat_rtt") -> None:
        started = time.monotonic()
        await self.request(PacketType.HEARTBEAT, {})
        self.metrics.latency(name, started)

    def close(self) -> None:
        self.expect_close = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.expect_close = True
        if self.transport is not None:
            self.transport.abort()
