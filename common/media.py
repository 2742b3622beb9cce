"""The binary layout of MEDIA_FRAME bodies (see docs/PROTOCOL.md, "Media").

    user_id  u32  publisher; the client sends 0, the server fills it in when forwarding
    kind     u8   MediaKind
    codec    u8   Codec
    flags    u8   bit 0: keyframe (video: an IDR with SPS/PPS in front)
    seq      u32  per-stream sequence number, wraps
    capture  u64  capture time, microseconds since the Unix epoch (sender's clock)
    payload  ...  one encoded frame (H.264 Annex B access unit, or one Opus packet)
"""
from __future__ import annotations

import enum
import struct
from typing import NamedTuple

from . import frame as wire
from .frame import ProtocolError
from .packets import PacketType

MEDIA_HEADER = struct.Struct("!IBBBIQ")
_USER_ID = struct.Struct("!I")
FLAG_KEYFRAME = 0x01


class MediaKind(enum.IntEnum):
    CAMERA = 1
    MICROPHONE = 2
    SCREEN = 3


class Codec(enum.IntEnum):
    H264 = 1
    OPUS = 2


class MediaHeader(NamedTuple):
    user_id: int
    kind: int
    codec: int
    flags: int
    seq: int
    capture_us: int

    @property
    def keyframe(self) -> bool:
        return bool(self.flags & FLAG_KEYFRAME)


def pack_media(header: MediaHeader, payload: bytes) -> bytes:
    """A MEDIA_FRAME body."""
    return MEDIA_HEADER.pack(*header) + payload


def media_frame(header: MediaHeader, payload: bytes | memoryview) -> bytes:
    """A whole MEDIA_FRAME frame (request id 0), joined once."""
    return b"".join((wire.HEADER.pack(wire.MAGIC, PacketType.MEDIA_FRAME, MEDIA_HEADER.size + len(payload), 0),
                     MEDIA_HEADER.pack(*header), payload))


def unpack_media(body: bytes) -> tuple[MediaHeader, memoryview]:
    if len(body) < MEDIA_HEADER.size:
        raise ProtocolError(f"MEDIA_FRAME body of {len(body)} bytes is shorter than its header")
    header = MediaHeader(*MEDIA_HEADER.unpack_from(body))
    if header.kind not in MediaKind._value2member_map_ or header.codec not in Codec._value2member_map_:
        raise ProtocolError(f"MEDIA_FRAME with unknown kind {header.kind} or codec {header.codec}")
    return header, memoryview(body)[MEDIA_HEADER.size:]


def forwarded_frame(body: bytes, user_id: int) -> bytes:
    """The whole MEDIA_FRAME frame the server forwards: ``body`` with the publisher written in,
    joined once."""
    return b"".join((wire.HEADER.pack(wire.MAGIC, PacketType.MEDIA_FRAME, len(body), 0),
                     _USER_ID.pack(user_id), memoryview(body)[4:]))
