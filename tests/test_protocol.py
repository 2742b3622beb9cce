"""The sans-IO client protocol, driven with bytes only: no socket, no thread, no server."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import frame as wire
from common import messages
from common.chunks import chunk_frame
from common.errors import ApiError, ErrorCode
from common.frame import FrameDecoder, ProtocolError
from common.packets import PacketType as P
from common.protocol import (BadEvent, BinaryEvent, ClientProtocol, Failure, Orphan, Refusal, Reply,
                             ServerEvent)

MESSAGE = {"id": 9, "from": 3, "to": 7, "client_msg_id": "k1", "text": "hi 👋", "time": 5,
           "delivered_at": None, "read_at": None}


def server_stream(protocol: ClientProtocol) -> tuple[bytes, list]:
    """Three requests, then what a server answers (mixed with events), and the events the
    protocol must yield for it."""
    hello_id, _ = protocol.request(P.HELLO, messages.Hello(version=1, client="t"))
    send_id, _ = protocol.request(P.CHAT_SEND, {"to": 3, "text": "x", "client_msg_id": "k1"})
    join_id, _ = protocol.request(P.ROOM_JOIN, {"number": "1"})
    chunk = chunk_frame(bytes(16), 0, b"z" * 5000)
    frames = [
        wire.encode_json(P.RESULT, {"version": 1, "server": "s"}, hello_id),
        wire.encode_json(P.CHAT_MESSAGE_EVENT, {"message": MESSAGE}),
        chunk,
        wire.encode_json(P.RESULT, {"id": 9, "time": 5, "client_msg_id": "k1", "duplicate": False}, send_id),
        wire.encode_json(P.TYPING_EVENT, {"from": 3, "typing": "yes"}),          # does not fit its type
        wire.encode_json(P.ERROR, ApiError(ErrorCode.NO_SUCH_ROOM).to_body(), join_id),
        wire.encode_json(P.ERROR, ApiError(ErrorCode.LOGIN_DEADLINE).to_body(), 0),
        wire.encode_json(P.RESULT, {}, 999),                                       # nobody asked
    ]
    expected = [
        Reply(hello_id, P.HELLO, {"version": 1, "server": "s"}),
        ServerEvent(P.CHAT_MESSAGE_EVENT, messages.decode_event(P.CHAT_MESSAGE_EVENT,
                                                                json.dumps({"message": MESSAGE}).encode())),
        BinaryEvent(P.FILE_CHUNK, FrameDecoder().feed(chunk)[0].body),
        Reply(send_id, P.CHAT_SEND, {"id": 9, "time": 5, "client_msg_id": "k1", "duplicate": False}),
        BadEvent(P.TYPING_EVENT, "field 'typing': Expected `bool`, got `str`"),
        ("failure", join_id, P.ROOM_JOIN, ErrorCode.NO_SUCH_ROOM),
        ("refusal", ErrorCode.LOGIN_DEADLINE),
        Orphan(999),
    ]
    return b"".join(frames), expected


def comparable(events: list) -> list:
    """ApiError has no equality: compare failures and refusals by their codes."""
    out = []
    for event in events:
        if isinstance(event, Failure):
            out.append(("failure", event.request_id, event.request_type, event.error.code))
        elif isinstance(event, Refusal):
            out.append(("refusal", event.error.code))
        elif isinstance(event, BinaryEvent):
            out.append(BinaryEvent(event.type, bytes(event.body)))
        else:
            out.append(event)
    return out


def test_replies_are_matched_to_their_requests_and_events_are_typed():
    protocol = ClientProtocol()
    stream, expected = server_stream(protocol)
    events = protocol.receive_data(stream)
    assert comparable(events) == comparable(expected)
    message = events[1].body.message
    assert isinstance(message, messages.ChatMessage) and message.from_id == 3 and message.text == "hi 👋"
    assert protocol.waiting == 0


def test_fed_one_byte_at_a_time_gives_the_same_events():
    protocol = ClientProtocol()
    stream, expected = server_stream(protocol)
    events = []
    for i in range(len(stream)):
        events.extend(protocol.receive_data(stream[i:i + 1]))
    assert comparable(events) == comparable(expected)


@settings(max_examples=150, deadline=None)
@given(cuts=st.lists(st.integers(0, 20_000), max_size=40))
def test_any_split_of_the_input_gives_the_same_events(cuts):
    protocol = ClientProtocol()
    stream, expected = server_stream(protocol)
    points = sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]
    events, previous = [], 0
    for point in points:
        events.extend(protocol.receive_data(stream[previous:point]))
        previous = point
    assert comparable(events) == comparable(expected)


def test_requests_are_numbered_and_framed():
    protocol = ClientProtocol()
    first, data = protocol.request(P.HEARTBEAT)
    second, _ = protocol.request(P.CHAT_SEND, messages.ChatSend(to=3, text="x", client_msg_id="a"))
    assert (first, second) == (1, 2) and protocol.waiting == 2
    [frame] = FrameDecoder().feed(data)
    assert (frame.type, frame.request_id, frame.body) == (P.HEARTBEAT, 1, b"{}")
    [event] = FrameDecoder().feed(protocol.event(P.TYPING, messages.Typing(to=3, typing=True)))
    assert event.request_id == 0 and json.loads(event.body) == {"to": 3, "typing": True}
    [binary] = FrameDecoder().feed(protocol.event(P.MEDIA_FRAME, b"\x00" * 20))
    assert binary.body == b"\x00" * 20


def test_request_ids_wrap_and_skip_ids_still_waiting():
    protocol = ClientProtocol()
    protocol._last_id = wire.MAX_REQUEST_ID - 1
    waiting, _ = protocol.request(P.HEARTBEAT)          # the largest id
    wrapped, _ = protocol.request(P.HEARTBEAT)
    assert (waiting, wrapped) == (wire.MAX_REQUEST_ID, 1)
    protocol._last_id = wire.MAX_REQUEST_ID - 1
    assert protocol.request(P.HEARTBEAT)[0] == 2          # MAX and 1 are still waiting


def test_a_forgotten_request_makes_its_late_reply_an_orphan():
    protocol = ClientProtocol()
    request_id, _ = protocol.request(P.HEARTBEAT)
    protocol.forget(request_id)
    assert protocol.receive_data(wire.encode_json(P.RESULT, {"time": 1}, request_id)) == [Orphan(request_id)]


def test_an_unreadable_reply_fails_its_request_and_the_stream_goes_on():
    protocol = ClientProtocol()
    request_id, _ = protocol.request(P.HEARTBEAT)
    events = protocol.receive_data(wire.encode_frame(P.RESULT, b"{not json", request_id)
                                   + wire.encode_json(P.FRIEND_ONLINE, {"user_id": 4}))
    assert isinstance(events[0], Failure) and events[0].error.code == ErrorCode.BAD_REQUEST
    assert events[1] == ServerEvent(P.FRIEND_ONLINE, messages.UserRef(user_id=4))


def test_a_lone_surrogate_in_an_event_is_a_bad_event():
    raw = wire.encode_frame(P.ROOM_CHAT_EVENT, b'{"number": "1", "user_id": 1, "nickname": "\\ud800", '
                                               b'"text": "x", "time": 1}')
    [event] = ClientProtocol().receive_data(raw)
    assert isinstance(event, BadEvent) and event.type == P.ROOM_CHAT_EVENT


def test_an_event_type_without_a_definition_comes_as_a_dict():
    [event] = ClientProtocol().receive_data(wire.encode_json(150, {"anything": [1]}))
    assert event == ServerEvent(150, {"anything": [1]})


def test_connection_lost_returns_the_waiting_ids_and_starts_clean():
    protocol = ClientProtocol()
    ids = [protocol.request(P.HEARTBEAT)[0] for _ in range(3)]
    protocol.receive_data(wire.encode_json(P.RESULT, {}, ids[0])[:7])        # half a frame
    assert sorted(protocol.connection_lost()) == ids[:3]
    assert protocol.waiting == 0
    assert protocol.receive_data(wire.encode_json(P.FRIEND_OFFLINE, {"user_id": 2})) == [
        ServerEvent(P.FRIEND_OFFLINE, messages.UserRef(user_id=2))]


def test_a_broken_stream_raises_protocol_error():
    with pytest.raises(ProtocolError):
        ClientProtocol().receive_data(b"XX" + b"\0" * 10)
