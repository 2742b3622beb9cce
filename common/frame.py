"""Frame codec, sans-IO.

A frame is a 12-byte header followed by the body:

    magic   2 bytes  b"RM"
    type    u16      PacketType
    length  u32      body length in bytes
    request u32      request id (0 for events)

all big-endian. The header is checked (magic, length against the type's limit) before any of
the body is buffered, so a peer cannot make us hold more than one legal frame.
"""
from __future__ import annotations

import struct
from typing import Callable, NamedTuple

from . import limits, messages, packets
from .errors import ApiError

MAGIC = b"RM"
HEADER = struct.Struct("!2sHII")
MAX_REQUEST_ID = 0xFFFFFFFF
LARGE_BODY = limits.MAX_CONTROL_BODY   # bodies above this (binary only) get their own buffer


class ProtocolError(Exception):
    """The byte stream or a body cannot be understood; the connection should be dropped."""


class FrameTooLarge(ProtocolError):
    """A header claims a body longer than its type allows (the peer can be told why)."""

    def __init__(self, packet_type: int, length: int, limit: int) -> None:
        super().__init__(f"{packets.type_name(packet_type)} frame claims {length} bytes, limit is {limit}")
        self.packet_type = packet_type
        self.length = length
        self.limit = limit


class Frame(NamedTuple):
    """A decoded frame; ``body`` is a ``bytearray`` when it was larger than ``LARGE_BODY``."""

    type: int
    request_id: int
    body: bytes

    def json(self) -> dict:
        return decode_json(self.body)


def encode_frame(packet_type: int, body: bytes = b"", request_id: int = 0) -> bytes:
    if len(body) > packets.max_body(packet_type):
        raise ProtocolError(f"body of {len(body)} bytes exceeds the limit for {packets.type_name(packet_type)}")
    return HEADER.pack(MAGIC, packet_type, len(body), request_id) + body


def encode_json(packet_type: int, body: messages.Body | dict | None = None, request_id: int = 0) -> bytes:
    """A control frame; the body is a ``common.messages`` Struct or a dict."""
    return encode_frame(packet_type, messages.encode(body), request_id)


def encode_error(error: ApiError, request_id: int = 0) -> bytes:
    """The ERROR frame that refuses request ``request_id`` (0: a refusal tied to no request)."""
    return encode_json(packets.PacketType.ERROR, error.to_body(), request_id)


def decode_json(body: bytes) -> dict:
    """Parse a control body of no fixed shape: a UTF-8 JSON object. Anything else is a
    ProtocolError. (Packet bodies with a definition go through ``common.messages``.)"""
    try:
        return messages.decode_any(body)
    except ApiError as exc:
        raise ProtocolError(exc.message) from None



class FrameDecoder:
    """Incremental decoder: feed any slices of bytes, get whole frames back.

    Two ways in: ``feed(data)`` with bytes already read, or ``read_buffer()`` then
    ``commit(n)`` around a ``recv_into``. The second reads into ``scratch``, which many
    decoders may share (a server reads every connection into one buffer and decodes each read
    before the next): the decoder itself keeps only the bytes of a frame not yet complete. A
    large body (over ``LARGE_BODY``: file chunks, media, avatars) is read straight into the
    buffer that becomes the frame's body, so its bytes are copied once, from the kernel; such
    a body is a ``bytearray`` from ``new_body``, allocated whole when its header arrives.
    After a ProtocolError the decoder is dead and keeps raising: the stream has lost sync.
    """

    def __init__(self, max_body: Callable[[int], int] = packets.max_body,
                 new_body: Callable[[int], bytearray] = bytearray,
                 scratch: bytearray | None = None) -> None:
        self._buf = bytearray()        # the start of a frame not yet complete
        self._max_body = max_body
        self._new_body = new_body      # where large bodies come from (a BufferPool's take)
        self._error: ProtocolError | None = None
        self._scratch = bytearray() if scratch is None else scratch
        self._body: bytearray | None = None     # a large body being filled
        self._body_filled = 0
        self._body_type = 0
        self._body_request = 0

    @property
    def buffered(self) -> int:
        return len(self._buf) + self._body_filled   # 0 unless a large body is being filled

    @property
    def missing(self) -> int:
        """Bytes still to come before the frame in progress is complete (0 between frames;
        the rest of the header while only part of it is here)."""
        if self._body is not None:
            return len(self._body) - self._body_filled
        if not self._buf:
            return 0
        if len(self._buf) < HEADER.size:
            return HEADER.size - len(self._buf)
        length = HEADER.unpack_from(self._buf)[2]
        return HEADER.size + length - len(self._buf)

    def read_buffer(self, size: int) -> memoryview:
        """Where the next read should put its bytes: the rest of a large body being received
        (possibly shorter than ``size``), else the scratch buffer, ``size`` bytes of it."""
        if self._body is not None:
            return memoryview(self._body)[self._body_filled:]
        if len(self._scratch) < size:
            self._scratch = bytearray(size)
        return memoryview(self._scratch)[:size]

    def commit(self, nbytes: int) -> list[Frame]:
        """``nbytes`` were read into the buffer from the last ``read_buffer``: decode them."""
        if self._error is not None:
            raise self._error
        if self._body is not None:
            return self._fill_body(nbytes)
        return self.feed(memoryview(self._scratch)[:nbytes])

    def feed(self, data: bytes | memoryview) -> list[Frame]:
        if self._error is not None:
            raise self._error
        frames: list[Frame] = []
        if self._body is not None:
            taken = min(len(data), len(self._body) - self._body_filled)
            self._body[self._body_filled:self._body_filled + taken] = data[:taken]
            frames.extend(self._fill_body(taken))
            data = data[taken:]
            if self._body is not None or not data:
                return frames
        if self._buf:
            self._buf += data
            buf: bytearray | memoryview = self._buf
        else:
            buf = data        # nothing pending: decode in place, keep only an incomplete tail
        pos = 0
        end = len(buf)
        try:
            while end - pos >= HEADER.size:
                magic, ptype, length, request_id = HEADER.unpack_from(buf, pos)
                if magic != MAGIC:
                    raise ProtocolError(f"bad magic {bytes(magic)!r}")
                limit = self._max_body(ptype)
                if length > limit:
                    raise FrameTooLarge(ptype, length, limit)
                start = pos + HEADER.size
                if end - start < length:
                    if length > LARGE_BODY:
                        self._start_body(ptype, request_id, length, buf, start, end)
                        pos = end
                    break
                with memoryview(buf) as view:   # one copy (a bytearray slice would make two)
                    body = bytes(view[start:start + length])
                frames.append(Frame(ptype, request_id, body))
                pos = start + length
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        if pos >= end:
            self._buf = bytearray()
        elif buf is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(buf[pos:end])
        return frames

    def _start_body(self, ptype: int, request_id: int, length: int, buf: bytearray | memoryview,
                    start: int, end: int) -> None:
        self._body = self._new_body(length)
        self._body[:end - start] = memoryview(buf)[start:end]
        self._body_filled = end - start
        self._body_type = ptype
        self._body_request = request_id

    def _fill_body(self, nbytes: int) -> list[Frame]:
        assert self._body is not None
        self._body_filled += nbytes
        if self._body_filled < len(self._body):
            return []
        frame = Frame(self._body_type, self._body_request, self._body)
        self._body = None
        self._body_filled = 0
        return [frame]
