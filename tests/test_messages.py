"""The typed message layer: every packet body decodes, encodes back the same, and is refused
with BAD_REQUEST when it breaks a limit; the binary sub-headers round-trip."""
from __future__ import annotations

import json

import msgspec
import pytest

from common import limits, messages
from common.chunks import CHUNK_HEADER, ChunkHeader, chunk_frame, unpack_chunk
from common.errors import ApiError, ErrorCode
from common.frame import FrameDecoder
from common.media import MEDIA_HEADER, MediaKind
from common.packets import BINARY_TYPES, FILE_CHUNK_HEADER_SIZE, MEDIA_HEADER_SIZE, PacketType as P
from tests.samples import REQUEST_SAMPLES, TID

USER = {"id": 7, "phone": "5550001", "nickname": "Ann", "signature": "", "avatar": {"builtin": 3, "version": 1}}
MESSAGE = {"id": 812, "from": 3, "to": 7, "client_msg_id": "5f0c", "text": "hello", "time": 1795505942612,
           "delivered_at": None, "read_at": None}
ROOM = {"number": "123456789", "title": "Weekly", "host_id": 7, "locked": False, "has_password": True,
        "members": [{"user_id": 7, "nickname": "Ann", "avatar": {"builtin": 3, "version": 0}, "camera": True, "microphone": True, "screen": False,
                     "host": True, "away": False}]}

EVENT_SAMPLES: dict[int, dict] = {
    P.ERROR: {"code": 6, "name": "RATE_LIMITED", "message": "slow down", "details": {"retry_after": 1.5}},
    P.KICKED: {"reason": "elsewhere", "address": "10.0.0.1:5000", "time": 1},
    P.GOING_AWAY: {"reason": "restart", "reconnect": True, "retry_after": 2.0},
    P.FRIEND_REQUEST_EVENT: {"request": {"id": 1, "from": 3, "to": 7, "greeting": "hi", "time": 5, "user": USER}},
    P.FRIEND_ANSWER_EVENT: {"request_id": 1, "accepted": True, "user": USER},
    P.FRIEND_REMOVED_EVENT: {"user_id": 3},
    P.FRIEND_ADDED_EVENT: {"friend": {**USER, "online": True}},
    P.FRIEND_ONLINE: {"user_id": 3},
    P.FRIEND_OFFLINE: {"user_id": 3},
    P.PROFILE_CHANGED_EVENT: {"user": USER},
    P.CHAT_MESSAGE_EVENT: {"message": MESSAGE},
    P.CHAT_STATUS_EVENT: {"status": "delivered", "peer": 7, "at": 5, "ids": [1, 2]},
    P.TYPING_EVENT: {"from": 3, "typing": True},
    P.FILE_OFFER_EVENT: {"transfer_id": TID, "from": 3, "from_nickname": "Ann", "name": "a.pdf", "size": 10,
                         "sha256": "e3" * 32, "spooled": False,
                         "message": {**MESSAGE, "client_msg_id": f"file:{TID}", "text": "a.pdf",
                                     "file": {"transfer_id": TID, "name": "a.pdf", "size": 10, "state": "offered"}}},
    P.FILE_ANSWER_EVENT: {"transfer_id": TID, "accepted": True, "offset": 0},
    P.FILE_ACK: {"transfer_id": TID, "offset": 262144},
    P.FILE_CANCEL_EVENT: {"transfer_id": TID, "by": 0, "reason": "timed out", "error": "TIMEOUT"},
    P.FILE_DONE_EVENT: {"transfer_id": TID, "stage": "delivered", "size": 10},
    P.FILE_PULL_EVENT: {"transfer_id": TID, "offset": 5},
    P.ROOM_MEMBERS_EVENT: {"room": ROOM},
    P.ROOM_MUTE_EVENT: {"number": "123456789", "by": 7, "all": True},
    P.ROOM_CHAT_EVENT: {"number": "123456789", "user_id": 7, "nickname": "Ann", "text": "hi", "time": 5},
    P.ROOM_REMOVED_EVENT: {"number": "123456789", "reason": "kicked", "message": "bye", "by": 7},
    P.ROOM_WAITING_EVENT: {"number": "123456789", "waiting": [{"user_id": 3, "nickname": "Bo"}]},
    P.ROOM_ADMIT_EVENT: {"number": "123456789", "admitted": True, "room": ROOM},
    P.KEYFRAME_REQUEST_EVENT: {"kind": 1},
}


def test_every_packet_type_has_a_body_definition():
    defined = set(messages.REQUESTS) | set(messages.EVENTS) | BINARY_TYPES | {P.RESULT}
    assert defined == set(P)
    assert set(REQUEST_SAMPLES) == set(messages.REQUESTS) and set(EVENT_SAMPLES) == set(messages.EVENTS)


@pytest.mark.parametrize("ptype", sorted(REQUEST_SAMPLES), ids=lambda t: P(t).name)
def test_requests_decode_and_encode_back_to_the_same_json(ptype):
    sample = REQUEST_SAMPLES[ptype]
    body = messages.decode_request(ptype, json.dumps(sample).encode())
    assert isinstance(body, messages.REQUESTS[ptype])
    assert json.loads(messages.encode(body)) == sample


@pytest.mark.parametrize("ptype", sorted(EVENT_SAMPLES), ids=lambda t: P(t).name)
def test_events_decode_and_encode_back_to_the_same_json(ptype):
    sample = EVENT_SAMPLES[ptype]
    body = messages.decode_event(ptype, json.dumps(sample).encode())
    assert json.loads(messages.encode(body)) == sample
    assert messages.to_dict(body) == sample


def _string_fields(cls: type) -> list[str]:
    info = msgspec.inspect.type_info(cls)
    names = []
    for f in info.fields:
        types = f.type.types if isinstance(f.type, msgspec.inspect.UnionType) else (f.type,)
        if any(isinstance(t, msgspec.inspect.StrType) for t in types):
            names.append(f.encode_name)
    return names


def _refused(ptype: int, raw: bytes, decode=messages.decode_request) -> ApiError:
    with pytest.raises(ApiError) as info:
        decode(ptype, raw)
    assert info.value.code == ErrorCode.BAD_REQUEST
    return info.value


def test_a_lone_surrogate_in_any_string_field_of_any_request_is_a_bad_request():
    checked = set()
    for ptype, sample in REQUEST_SAMPLES.items():
        for name in _string_fields(messages.REQUESTS[ptype]):
            raw = json.dumps({**sample, name: "x\ud800y"}).encode()   # json.dumps escapes it: "x\ud800y"
            assert b"\\ud800" in raw
            _refused(ptype, raw)
            low = json.dumps({**sample, name: "\udc00"}).encode()
            _refused(ptype, low)
            checked.add((ptype, name))
    assert {(P.CHAT_SEND, "text"), (P.CHAT_SEND, "client_msg_id"), (P.REGISTER, "nickname"), (P.HELLO, "client"),
            (P.FILE_OFFER, "name"), (P.FILE_CANCEL, "reason"), (P.ROOM_JOIN, "number"),
            (P.FRIEND_REQUEST, "phone")} <= checked
    assert len(checked) >= 27    # every string field of every request body


def test_a_lone_surrogate_in_a_server_event_is_refused_too():
    for ptype, sample in EVENT_SAMPLES.items():
        for name in _string_fields(messages.EVENTS[ptype]):
            _refused(ptype, json.dumps({**sample, name: "\ud800"}).encode(), messages.decode_event)


def test_a_surrogate_pair_is_a_character_not_an_error():
    body = messages.decode_request(P.ROOM_CHAT, b'{"text": "\\ud83d\\udc4b"}')
    assert body.text == "\N{WAVING HAND SIGN}"


@pytest.mark.parametrize("ptype, body, field", [
    (P.CHAT_SEND, {"to": 0, "text": "x", "client_msg_id": "a"}, "to"),
    (P.CHAT_SEND, {"to": 1, "text": "x", "client_msg_id": "a b"}, "client_msg_id"),
    (P.CHAT_SEND, {"to": 1, "text": "x", "client_msg_id": "a" * 65}, "client_msg_id"),
    (P.CHAT_SEND, {"to": 1, "text": "x" * (limits.MAX_CONTROL_BODY + 1), "client_msg_id": "a"}, "text"),
    (P.CHAT_SEND, {"to": True, "text": "x", "client_msg_id": "a"}, "to"),
    (P.CHAT_SEND, {"to": 2 ** 63, "text": "x", "client_msg_id": "a"}, "to"),
    (P.CHAT_DELIVERED, {"ids": []}, "ids"),
    (P.CHAT_DELIVERED, {"ids": list(range(1, messages.MAX_RECEIPT_IDS + 2))}, "ids"),
    (P.CHAT_DELIVERED, {"ids": [0]}, "ids"),
    (P.CHAT_HISTORY, {"user_id": 3, "limit": messages.HISTORY_MAX + 1}, "limit"),
    (P.REGISTER, {"phone": "1" * 65, "password": "password1", "nickname": "a"}, "phone"),
    (P.LOGIN, {"phone": "5550001", "password": "p" * 1025}, "password"),
    (P.RESUME, {"token": "t" * 257}, "token"),
    (P.FRIEND_REQUEST, {"user_id": 3, "greeting": "g" * 1001}, "greeting"),
    (P.FRIEND_REQUESTS, {"direction": "sideways"}, "direction"),
    (P.PROFILE_UPDATE, {"avatar_builtin": 13}, "avatar_builtin"),
    (P.PROFILE_UPDATE, {"avatar_builtin": 0}, "avatar_builtin"),
    (P.FILE_OFFER, {"to": 3, "name": "a", "size": -1, "sha256": "0" * 64}, "size"),
    (P.FILE_CANCEL, {"transfer_id": TID, "reason": "r" * (messages.FILE_REASON_MAX + 1)}, "reason"),
    (P.ROOM_CREATE, {"title": "t" * (messages.TITLE_MAX + 1)}, "title"),
    (P.ROOM_JOIN, {"number": "1" * 33}, "number"),
    (P.ROOM_JOIN, {"number": 123456789}, "number"),
    (P.ROOM_KICK, {"user_id": 2 ** 31}, "user_id"),
    (P.ROOM_CHAT, {"text": "x" * (limits.MAX_CHAT_BYTES * 4 + 1)}, "text"),
    (P.KEYFRAME_REQUEST, {"user_id": 3, "kind": 4}, "kind"),
    (P.MEDIA_SUBSCRIBE, {"user_id": 3, "kind": 1, "paused": "yes"}, "paused"),
    (P.HELLO, {"version": -1}, "version"),
])
def test_limits_are_checked_while_decoding(ptype, body, field):
    error = _refused(ptype, json.dumps(body).encode())
    assert f"field '{field}" in error.message


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"\xff\xfe", b'{"a": ' * 5000, b"1e999999", b'"x"'])
def test_malformed_bodies_are_bad_requests(raw):
    _refused(P.CHAT_SEND, raw)


def test_missing_required_field_names_it():
    assert _refused(P.CHAT_SEND, b'{"text": "x", "client_msg_id": "a"}').message == "missing field 'to'"


def test_empty_body_is_an_empty_object_and_null_means_not_given():
    assert messages.decode_request(P.HEARTBEAT, b"") == messages.Empty()
    body = messages.decode_request(P.ROOM_MUTE, b'{"user_id": null, "unknown": [1]}')
    assert body.user_id is None
    history = messages.decode_request(P.CHAT_HISTORY, b'{"user_id": 3, "before": null}')
    assert history.before is None and history.limit is None


def test_unset_optional_fields_are_left_out_but_records_keep_their_nulls():
    assert messages.encode(messages.RoomRemovedEvent(number="1", reason="closed", message="m")) == \
        b'{"number":"1","reason":"closed","message":"m"}'
    assert b'"delivered_at":null' in messages.encode(messages.decode_event(P.CHAT_MESSAGE_EVENT,
                                                                          json.dumps({"message": MESSAGE}).encode()))


def test_media_kinds_in_requests_are_the_media_kinds():
    for kind in MediaKind:
        assert messages.decode_request(P.KEYFRAME_REQUEST, b'{"user_id": 1, "kind": %d}' % kind).kind == kind
    _refused(P.KEYFRAME_REQUEST, b'{"user_id": 1, "kind": %d}' % (max(MediaKind) + 1))
    _refused(P.KEYFRAME_REQUEST, b'{"user_id": 1, "kind": %d}' % (min(MediaKind) - 1))


def test_binary_sub_headers_match_the_sizes_the_limits_use():
    assert CHUNK_HEADER.size == FILE_CHUNK_HEADER_SIZE == 24
    assert MEDIA_HEADER.size == MEDIA_HEADER_SIZE == 19


def test_file_chunk_round_trip():
    raw_id = bytes(range(16))
    [frame] = FrameDecoder().feed(chunk_frame(raw_id, 2 ** 40 + 5, b"data"))
    assert frame.type == P.FILE_CHUNK and frame.request_id == 0
    header, data = unpack_chunk(frame.body)
    assert header == ChunkHeader(raw_id, 2 ** 40 + 5) and bytes(data) == b"data"
    assert unpack_chunk(frame.body[:24]) is None     # a header without data is no chunk
