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

import json
import struct
from typing import Callable, NamedTuple

from . import packets

MAGIC = b"RM"
HEADER = struct.Struct("!2sHII")
MAX_REQUEST_ID = 0xFFFFFFFF


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
    type: int
    request_id: int
    body: bytes

    def json(self) -> dict:
        return decode_json(self.body)


def encode_frame(packet_type: int, body: bytes = b"", request_id: int = 0) -> bytes:
    if len(body) > packets.max_body(packet_type):
        raise ProtocolError(f"body of {len(body)} bytes exceeds the limit for {packets.type_name(packet_type)}")
    return HEADER.pack(MAGIC, packet_type, len(body), request_id) + body


def encode_json(packet_type: int, body: dict | None = None, request_id: int = 0) -> bytes:
    data = json.dumps(body or {}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return encode_frame(packet_type, data, request_id)


def decode_json(body: bytes) -> dict:
    """Parse a control body: a UTF-8 JSON object. Anything else is a ProtocolError."""
    try:
        value = json.loads(body.decode("utf-8")) if body else {}
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"invalid JSON body: {exc.__class__.__name__}") from None
    if not isinstance(value, dict):
        raise ProtocolError("the JSON body must be an object")
    return value


class FrameDecoder:
    """Incremental decoder: feed any slices of bytes, get whole frames back.

    After a ProtocolError the decoder is dead and keeps raising: the stream has lost sync.
    """

    def __init__(self, max_body: Callable[[int], int] = packets.max_body) -> None:
        self._buf = bytearray()
        self._max_body = max_body
        self._error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._error is not None:
            raise self._error
        self._buf += data
        frames: list[Frame] = []
        pos = 0
        buf = self._buf
        end = len(buf)
        try:
            while end - pos >= HEADER.size:
                magic, ptype, length, request_id = HEADER.unpack_from(buf, pos)
                if magic != MAGIC:
                    raise ProtocolError(f"bad magic {bytes(magic)!r}")
                limit = self._max_body(ptype)
                if length > limit:
                    raise FrameTooLarge(ptype, length, limit)
                if end - pos - HEADER.size < length:
                    break
                start = pos + HEADER.size
                with memoryview(buf) as view:   # one copy (a bytearray slice would make two)
                    body = bytes(view[start:start + length])
                frames.append(Frame(ptype, request_id, body))
                pos = start + length
        except ProtocolError as exc:
            self._error = exc
            self._buf = bytearray()
            raise
        if pos:
            del buf[:pos]
        return frames
