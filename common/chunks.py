"""The binary layout of FILE_CHUNK bodies (see docs/PROTOCOL.md, "Files").

    transfer id  16 bytes  the transfer's id as raw bytes (its hex form is ``transfer_id``)
    offset       u64       offset in the file of the first data byte
    data         ...       1 to ``limits.MAX_FILE_CHUNK`` bytes of the file
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from . import frame as wire
from .packets import PacketType

CHUNK_HEADER = struct.Struct("!16sQ")
ID_SIZE = 16
FRAME_PREFIX = wire.HEADER.size + CHUNK_HEADER.size    # frame header + chunk header


class ChunkHeader(NamedTuple):
    raw_id: bytes
    offset: int


def unpack_chunk(body: bytes | bytearray) -> tuple[ChunkHeader, memoryview] | None:
    """The header and data of a chunk body; None if the body holds no data."""
    if len(body) <= CHUNK_HEADER.size:
        return None
    return ChunkHeader(*CHUNK_HEADER.unpack_from(body)), memoryview(body)[CHUNK_HEADER.size:]


def chunk_frame(raw_id: bytes, offset: int, data: bytes) -> bytes:
    """A whole FILE_CHUNK frame (request id 0)."""
    return wire.encode_frame(PacketType.FILE_CHUNK, CHUNK_HEADER.pack(raw_id, offset) + data)


def pack_chunk_prefix_into(buffer: bytearray, raw_id: bytes, offset: int, size: int) -> None:
    """Write the frame header and chunk header in front of ``size`` data bytes that the caller
    puts at ``buffer[FRAME_PREFIX:]`` (a file read straight into the frame)."""
    wire.HEADER.pack_into(buffer, 0, wire.MAGIC, PacketType.FILE_CHUNK, CHUNK_HEADER.size + size, 0)
    CHUNK_HEADER.pack_into(buffer, wire.HEADER.size, raw_id, offset)
