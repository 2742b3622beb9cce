"""The client side of the protocol, sans-IO (in the manner of h11's ``Connection``).

``ClientProtocol`` turns requests into bytes and bytes into typed events, and does no I/O:
no sockets, no threads, no clocks. It numbers requests, remembers which are waiting, and
tells a reply to a request (``Reply``/``Failure``, with the request's type) from a server
event (``ServerEvent`` with its body decoded and validated by ``common.messages``, or
``BinaryEvent``) and from an ERROR the server sends on its own (``Refusal``, request id 0,
sent before it closes the connection). An event body that does not fit its definition is a
``BadEvent``, not an exception: the stream is still in sync and the next frame is fine.

The client kernel (a thread and a selector) and the load test (asyncio) are thin shells
around it: they move bytes and keep what waits for a reply (futures, timers).
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Union

from . import frame as wire
from . import messages
from .errors import ApiError, ErrorCode
from .frame import Frame, FrameDecoder
from .packets import BINARY_TYPES, PacketType


class Reply(NamedTuple):
    """The RESULT of a request."""

    request_id: int
    request_type: int
    body: dict


class Failure(NamedTuple):
    """The ERROR answering a request (or a RESULT that could not be read)."""

    request_id: int
    request_type: int
    error: ApiError


class ServerEvent(NamedTuple):
    """A server-initiated packet with its typed body (a dict for a type with no definition)."""

    type: int
    body: messages.Body | dict


class BinaryEvent(NamedTuple):
    """FILE_CHUNK or MEDIA_FRAME from the server: the raw body."""

    type: int
    body: bytes


class Refusal(NamedTuple):
    """An ERROR with request id 0: the server refuses something it cannot tie to a request
    (a frame too large, the login deadline) and usually closes the connection after it."""

    error: ApiError


class BadEvent(NamedTuple):
    """A server packet whose body does not fit its type; it is skipped."""

    type: int
    reason: str


class Orphan(NamedTuple):
    """A reply to a request that is no longer waiting (given up after a timeout)."""

    request_id: int


Event = Union[Reply, Failure, ServerEvent, BinaryEvent, Refusal, BadEvent, Orphan]


class ClientProtocol:
    def __init__(self, new_body: Callable[[int], bytearray] = bytearray) -> None:
        self._new_body = new_body
        self._decoder = FrameDecoder(new_body=new_body)
        self._pending: dict[int, int] = {}        # request id -> request type
        self._last_id = 0

    # -- out ---------------------------------------------------------------------------------------
    def request(self, packet_type: int, body: messages.Body | dict | bytes | None = None) -> tuple[int, bytes]:
        """A request's id and its frame; the id is waiting until its reply is received."""
        request_id = self._next_id()
        data = self._encode(packet_type, body, request_id)
        self._pending[request_id] = packet_type
        return request_id, data

    def event(self, packet_type: int, body: messages.Body | dict | bytes | None = None) -> bytes:
        """A packet that wants no reply (request id 0): typing, receipts, acks, media."""
        return self._encode(packet_type, body, 0)

    @staticmethod
    def _encode(packet_type: int, body: messages.Body | dict | bytes | None, request_id: int) -> bytes:
        if packet_type in BINARY_TYPES:
            return wire.encode_frame(packet_type, body or b"", request_id)   # type: ignore[arg-type]
        return wire.encode_frame(packet_type, messages.encode(body), request_id)   # type: ignore[arg-type]

    def _next_id(self) -> int:
        request_id = self._last_id
        while True:
            request_id = request_id % wire.MAX_REQUEST_ID + 1
            if request_id not in self._pending:
                self._last_id = request_id
                return request_id

    def forget(self, request_id: int) -> None:
        """Stop waiting for a request (the caller gave up on it); a late reply is an Orphan."""
        self._pending.pop(request_id, None)

    @property
    def waiting(self) -> int:
        return len(self._pending)

    # -- in ----------------------------------------------------------------------------------------
    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        """Bytes from the server, in any slices; raises ProtocolError if the stream is broken."""
        return [self.receive_frame(frame) for frame in self._decoder.feed(data)]

    def receive_frame(self, frame: Frame) -> Event:
        """A frame a link decoded itself (reading large bodies straight into their buffers)."""
        ptype = frame.type
        if frame.request_id and ptype in (PacketType.RESULT, PacketType.ERROR):
            request_type = self._pending.pop(frame.request_id, None)
            if request_type is None:
                return Orphan(frame.request_id)
            try:
                if ptype == PacketType.RESULT:
                    return Reply(frame.request_id, request_type, messages.decode_any(frame.body))
                error = messages.decode_event(PacketType.ERROR, frame.body)
                return Failure(frame.request_id, request_type, _api_error(error))
            except ApiError as exc:
                return Failure(frame.request_id, request_type,
                               ApiError(ErrorCode.BAD_REQUEST, f"bad reply from the server: {exc.message}"))
        if ptype in BINARY_TYPES:
            return BinaryEvent(ptype, frame.body)
        try:
            if ptype == PacketType.ERROR:
                return Refusal(_api_error(messages.decode_event(ptype, frame.body)))
            if ptype in messages.EVENTS:
                return ServerEvent(ptype, messages.decode_event(ptype, frame.body))
            return ServerEvent(ptype, messages.decode_any(frame.body))
        except ApiError as exc:
            return BadEvent(ptype, exc.message)

    def connection_lost(self) -> list[int]:
        """The connection is gone: the ids that were waiting (they get no reply now). The
        protocol is ready for a new connection."""
        lost = list(self._pending)
        self._pending.clear()
        self._decoder = FrameDecoder(new_body=self._new_body)
        return lost


def _api_error(body: messages.ErrorBody) -> ApiError:
    return ApiError.from_body(messages.to_dict(body))
