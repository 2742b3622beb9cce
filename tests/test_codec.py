"""The sans-IO frame codec: unit and property tests."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.buffers import BufferPool
from common import frame as wire
from common import limits
from common.frame import Frame, FrameDecoder, ProtocolError
from common.media import Codec, MediaHeader, MediaKind, forwarded_frame, media_frame, pack_media, unpack_media
from common.packets import PacketType


def test_round_trip_json():
    data = wire.encode_json(PacketType.LOGIN, {"phone": "12345", "password": "pässwörd"}, request_id=7)
    [frame] = FrameDecoder().feed(data)
    assert frame.type == PacketType.LOGIN and frame.request_id == 7
    assert frame.json() == {"phone": "12345", "password": "pässwörd"}


def test_header_is_twelve_bytes_big_endian():
    data = wire.encode_frame(PacketType.HEARTBEAT, b"{}", request_id=0x01020304)
    assert data[:12] == b"RM" + bytes([0, 2]) + bytes([0, 0, 0, 2]) + bytes([1, 2, 3, 4])
    assert len(data) == limits.HEADER_SIZE + 2


def test_partial_frames_wait_for_the_rest():
    data = wire.encode_json(PacketType.HELLO, {"version": 1})
    decoder = FrameDecoder()
    assert decoder.feed(data[:5]) == []
    assert decoder.feed(data[5:-1]) == []
    assert len(decoder.feed(data[-1:])) == 1
    assert decoder.buffered == 0


def test_bad_magic_is_a_protocol_error_and_the_decoder_stays_dead():
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="magic"):
        decoder.feed(b"XX" + b"\0" * 10)
    with pytest.raises(ProtocolError):
        decoder.feed(wire.encode_json(PacketType.HELLO, {}))


def test_oversized_length_is_refused_from_the_header_alone():
    header = wire.HEADER.pack(wire.MAGIC, PacketType.CHAT_SEND, 0xFFFFFFFF, 1)
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError, match="limit"):
        decoder.feed(header)
    assert decoder.buffered == 0


def test_binary_types_have_their_own_limits():
    decoder = FrameDecoder()
    big_chunk = wire.HEADER.pack(wire.MAGIC, PacketType.FILE_CHUNK, 24 + limits.MAX_FILE_CHUNK, 0)
    assert decoder.feed(big_chunk) == []  # legal: waits for the body
    too_big = wire.HEADER.pack(wire.MAGIC, PacketType.FILE_CHUNK, 24 + limits.MAX_FILE_CHUNK + 1, 0)
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(too_big)


def test_encoder_refuses_bodies_over_the_limit():
    with pytest.raises(ProtocolError):
        wire.encode_frame(PacketType.CHAT_SEND, b"x" * (limits.MAX_CONTROL_BODY + 1))


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe", b'{"a": ' * 5000, b"1e999999"])
def test_invalid_json_bodies(body):
    with pytest.raises(ProtocolError):
        wire.decode_json(body)


def test_empty_body_is_an_empty_object():
    assert wire.decode_json(b"") == {}


def test_media_header_round_trip():
    header = MediaHeader(0, MediaKind.CAMERA, Codec.H264, 1, 42, 1_700_000_000_000_000)
    body = pack_media(header, b"payload")
    [sent] = FrameDecoder().feed(media_frame(header, b"payload"))
    assert sent == Frame(PacketType.MEDIA_FRAME, 0, body)
    [forwarded] = FrameDecoder().feed(forwarded_frame(body, 99))
    parsed, payload = unpack_media(forwarded.body)
    assert parsed.user_id == 99 and parsed.seq == 42 and parsed.keyframe and bytes(payload) == b"payload"
    with pytest.raises(ProtocolError):
        unpack_media(b"short")


frames_strategy = st.lists(
    st.tuples(st.sampled_from(list(PacketType)), st.binary(max_size=300), st.integers(0, 2**32 - 1)),
    max_size=20)


@settings(max_examples=300, deadline=None)
@given(frames=frames_strategy, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_any_split_of_a_stream_decodes_the_same(frames, cuts):
    stream = b"".join(wire.encode_frame(t, body, rid) for t, body, rid in frames)
    expected = [Frame(int(t), rid, body) for t, body, rid in frames]
    points = sorted({c % (len(stream) + 1) for c in cuts})
    decoder = FrameDecoder()
    got: list[Frame] = []
    previous = 0
    for point in points + [len(stream)]:
        got.extend(decoder.feed(stream[previous:point]))
        previous = point
    assert [tuple(f) for f in got] == [tuple(f) for f in expected]
    assert decoder.buffered == 0


@settings(max_examples=500, deadline=None)
@given(chunks=st.lists(st.binary(max_size=2000), max_size=10))
def test_random_bytes_never_raise_anything_but_protocol_error(chunks):
    decoder = FrameDecoder()
    for chunk in chunks:
        try:
            for frame in decoder.feed(chunk):
                if frame.type not in (PacketType.FILE_CHUNK, PacketType.MEDIA_FRAME, PacketType.AVATAR_UPLOAD):
                    try:
                        frame.json()
                    except ProtocolError:
                        pass
        except ProtocolError:
            break


@settings(max_examples=200, deadline=None)
@given(prefix=st.binary(max_size=40), ptype=st.integers(0, 65535), rid=st.integers(0, 2**32 - 1))
def test_valid_frame_after_garbage_in_a_new_decoder(prefix, ptype, rid):
    """A stream with garbage either errors or decodes frames whose lengths respect the limits."""
    decoder = FrameDecoder()
    try:
        for frame in decoder.feed(prefix + wire.HEADER.pack(wire.MAGIC, ptype, 0, rid)):
            assert len(frame.body) <= 4 * 1024 * 1024
    except ProtocolError:
        pass


def read_in_pieces(decoder: FrameDecoder, stream: bytes, sizes: list[int]) -> list[Frame]:
    """Drive the decoder the way the network threads do: recv_into read_buffer(), commit()."""
    frames: list[Frame] = []
    pos = 0
    turn = 0
    while pos < len(stream):
        buffer = decoder.read_buffer(sizes[turn % len(sizes)] if sizes else 256 * 1024)
        turn += 1
        n = min(len(buffer), len(stream) - pos)
        buffer[:n] = stream[pos:pos + n]
        pos += n
        frames.extend(decoder.commit(n))
    return frames


large_frames_strategy = st.lists(
    st.tuples(st.sampled_from([PacketType.FILE_CHUNK, PacketType.MEDIA_FRAME, PacketType.HEARTBEAT]),
              st.integers(0, limits.MAX_FILE_CHUNK), st.integers(0, 2**32 - 1)),
    min_size=1, max_size=6)


@settings(max_examples=60, deadline=None)
@given(frames=large_frames_strategy, sizes=st.lists(st.integers(1, 300_000), max_size=8))
def test_reading_into_the_decoders_buffers_decodes_large_and_small_frames_alike(frames, sizes):
    bodies = [(t, bytes([n % 251]) * (n if t != PacketType.HEARTBEAT else min(n, 100)), rid)
              for t, n, rid in frames]
    stream = b"".join(wire.encode_frame(t, body, rid) for t, body, rid in bodies)
    decoder = FrameDecoder()
    got = read_in_pieces(decoder, stream, sizes)
    assert [(f.type, f.request_id, bytes(f.body)) for f in got] == [(int(t), rid, body) for t, body, rid in bodies]
    assert decoder.buffered == 0


def test_large_bodies_come_from_new_body_and_mix_with_feed():
    made: list[int] = []

    def new_body(size: int) -> bytearray:
        made.append(size)
        return bytearray(size)

    chunk = wire.encode_frame(PacketType.FILE_CHUNK, b"c" * 100_000)
    ping = wire.encode_frame(PacketType.HEARTBEAT, b"{}")
    decoder = FrameDecoder(new_body=new_body)
    assert decoder.feed(chunk[:50_000]) == []
    assert decoder.buffered == 50_000 - wire.HEADER.size
    frames = read_in_pieces(decoder, chunk[50_000:] + ping, [30_000])
    frames += decoder.feed(chunk)
    assert [f.type for f in frames] == [PacketType.FILE_CHUNK, PacketType.HEARTBEAT, PacketType.FILE_CHUNK]
    assert made == [100_000]   # only a body still being read gets its own buffer, of its size
    assert isinstance(frames[0].body, bytearray) and frames[0].body == b"c" * 100_000
    assert isinstance(frames[1].body, bytes) and frames[2].body == b"c" * 100_000


def test_buffer_pool_reuses_buffers_of_the_same_size_up_to_its_limit():
    pool = BufferPool(max_bytes=300)
    first = pool.take(100)
    pool.give(first)
    assert pool.take(100) is first
    assert pool.take(100) is not first
    buffers = [bytearray(100) for _ in range(4)]
    for buffer in buffers:
        pool.give(buffer)
    assert pool.kept == 300
    again = [pool.take(100) for _ in range(4)]
    assert [any(b is g for g in buffers[:3]) for b in again] == [True, True, True, False]
    assert len(pool.take(50)) == 50 and pool.kept == 0
