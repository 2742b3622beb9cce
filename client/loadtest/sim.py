"""One simulated client: ``common.protocol.ClientProtocol`` over one TCP connection.

Thousands of these share one event loop per process. The loop is asyncio's, which on Linux is
a ``selectors`` (epoll) loop; its ``Protocol`` callbacks cost one small object per connection
and no thread, and coroutines let each scenario read top to bottom. The sans-IO protocol
matches replies to requests and decodes events; this shell keeps the futures and timers, and
hands each server event's typed body (``common.messages``; raw bytes for binary packets) to
the handler of its type.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any, Callable

from common import limits, messages
from common.errors import ApiError, ErrorCode
from common.frame import ProtocolError
from common.packets import PacketType
from common.protocol import BadEvent, BinaryEvent, ClientProtocol, Failure, Refusal, Reply, ServerEvent

from .metrics import Metrics, ServerMetrics

PASSWORD = "load-test-password"
CLIENT_NAME = "meeting-loadtest/0.1"


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


class SimClient(asyncio.Protocol):
    def __init__(self, metrics: Metrics | ServerMetrics, phone: str, nickname: str) -> None:
        self.metrics = metrics
        self.phone = phone
        self.nickname = nickname
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.protocol = ClientProtocol()
        self.pending: dict[int, asyncio.Future] = {}
        self.handlers: dict[int, Callable[[Any], None]] = {}    # type -> fn(typed body or bytes)
        self.user: dict[str, Any] = {}
        self.closed = self.loop.create_future()
        self.close_reason = ""
        self.expect_close = False
        self.heartbeat_interval = 10.0
        self._writable = asyncio.Event()
        self._writable.set()

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            events = self.protocol.receive_data(data)
        except ProtocolError as exc:
            self.metrics.error(f"protocol error from server: {exc}")
            self.close()
            return
        for event in events:
            if isinstance(event, (Reply, Failure)):
                future = self.pending.pop(event.request_id, None)
                if future is not None and not future.done():
                    if isinstance(event, Reply):
                        future.set_result(event.body)
                    else:
                        future.set_exception(event.error)
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
        for future in self.pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))
        self.pending.clear()
        self.protocol.connection_lost()
        self._writable.set()
        if not self.closed.done():
            self.closed.set_result(reason)

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

    def request_future(self, packet_type: int, body: messages.Body | dict | bytes | None = None,
                       timeout: float = 30.0) -> asyncio.Future:
        """Send a request; the future resolves to the reply body or raises the ERROR as ApiError."""
        future = self.loop.create_future()
        if not self.connected:
            future.set_exception(ConnectionLost(self.close_reason or "not connected"))
            return future
        request_id, data = self.protocol.request(packet_type, body)
        self.pending[request_id] = future
        self.transport.write(data)  # type: ignore[union-attr]
        timer = self.loop.call_later(timeout, self._expire, request_id, packet_type)
        future.add_done_callback(lambda _f: timer.cancel())
        return future

    def _expire(self, request_id: int, packet_type: int) -> None:
        self.protocol.forget(request_id)
        future = self.pending.pop(request_id, None)
        if future is not None and not future.done():
            future.set_exception(RequestTimeout(packet_type))

    async def request(self, packet_type: int, body: messages.Body | dict | bytes | None = None,
                      timeout: float = 30.0) -> dict:
        """Send and await the reply body; raises ApiError, ConnectionLost or RequestTimeout."""
        return await self.request_future(packet_type, body, timeout)

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
