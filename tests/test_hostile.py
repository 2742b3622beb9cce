"""Hostile input and limits.

The fuzz test sends well-framed packets of every type (and some that are not well formed) with
random JSON bodies from hypothesis: wrong types, unknown keys, huge numbers, long and oversized
strings, deep nesting, random binary bodies. Whatever arrives, no exception may escape a
handler (no traceback, no INTERNAL error), each connection gets errors or is closed, and the
server keeps serving a normal client afterwards. Every packet type a handler is registered for
is covered automatically, so each domain is fuzzed as soon as it lands.

The limit tests check each configurable limit and its error code: unauthenticated connections
per address, the login deadline, frame size per packet type, and the per-user rate limits.
"""
from __future__ import annotations

import json
import logging
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common import frame as wire
from common.errors import ErrorCode
from common.media import MEDIA_HEADER
from common.packets import BINARY_TYPES, PacketType
from server.ratelimit import PRE_LOGIN_BODY, TokenBucket
from tests.helpers import (HELLO, RAW_PASSWORD, connect_from, raw_connect, raw_register, raw_request, unique_phone,
                           wait_until)
from tests.social import befriend, uid

PASSWORD = RAW_PASSWORD
BATCH = 50
SLICE = 5
# 50 packets each: 11,000 generated packets per run on SQLite, 3,000 more on MySQL (whose
# type and range checks differ from SQLite's).
EXAMPLES = {"sqlite": 220, "mysql": 60}

# Field names the handlers read, so random bodies reach past the first field check.
KEYS = ["phone", "password", "nickname", "token", "version", "client", "to", "user_id", "friend_id",
        "text", "body", "id", "ids", "message_id", "client_msg_id", "before", "limit", "accept",
        "greeting", "signature", "builtin", "request_id", "from", "peer", "name", "size", "sha256",
        "transfer_id", "offset", "number", "password", "title", "room", "locked", "camera",
        "microphone", "screen", "kind", "paused", "typing", "up_to", "query", "reason", "target"]

HUGE_INTS = st.sampled_from([-1, 0, 1, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64,
                             -(2**63) - 1, 10**30, 10**400])
NASTY_STRINGS = st.sampled_from(["", "0", "123456789", "13800000000", "'; DROP TABLE users; --",
                                 "../../etc/passwd", "\x00", "\ud7ff\U0001F600", "a" * 300, "%s%s%n",
                                 "\\\\'\"", "NaN"])
SCALARS = st.one_of(
    st.none(), st.booleans(), HUGE_INTS, st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), NASTY_STRINGS,
)
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=4)),
    max_leaves=6)
BODIES = st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), JSON_VALUES, max_size=6)

# Plausible bodies: the fields each packet type really takes (docs/PROTOCOL.md), filled with
# values near the valid ones, so the fuzzing reaches past the first field check into the
# handlers' logic, storage and routing. KNOWN holds ids of real users, requests and rooms.
KNOWN: dict[str, list] = {"users": [1, 2, 3], "numbers": ["123456789"], "transfers": ["00" * 16]}
IDS = st.one_of(st.sampled_from([1, 2, 3, 4]), st.integers(-3, 10**6), HUGE_INTS,
                st.deferred(lambda: st.sampled_from(KNOWN["users"])))
SHORT_TEXT = st.one_of(st.text(max_size=40), NASTY_STRINGS)
FIELDS = {
    "version": st.one_of(st.just(1), st.integers(-1, 3), HUGE_INTS),
    "client": SHORT_TEXT, "password": SHORT_TEXT, "nickname": SHORT_TEXT, "signature": SHORT_TEXT,
    "greeting": SHORT_TEXT, "title": SHORT_TEXT, "reason": SHORT_TEXT, "name": SHORT_TEXT,
    "text": st.one_of(SHORT_TEXT, st.integers(8000, 9000).map(lambda n: "é" * n)),
    "token": st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", max_size=60),
    "phone": st.one_of(st.integers(10**10, 2 * 10**10 - 1).map(str), SHORT_TEXT),
    "to": IDS, "user_id": IDS, "request_id": IDS, "up_to": IDS, "before": IDS, "after": IDS,
    "limit": st.integers(-5, 1000), "size": st.one_of(st.integers(-5, 5000), HUGE_INTS),
    "offset": st.one_of(st.integers(-5, 5000), HUGE_INTS), "kind": st.integers(-1, 5),
    "avatar_builtin": st.integers(-1, 20),
    "ids": st.lists(IDS, max_size=5),
    "client_msg_id": st.one_of(st.integers(0, 2**64).map(lambda n: f"m-{n:x}"), SHORT_TEXT),
    "transfer_id": st.one_of(st.deferred(lambda: st.sampled_from(KNOWN["transfers"])),
                             st.binary(min_size=16, max_size=16).map(bytes.hex), SHORT_TEXT),
    "number": st.one_of(st.deferred(lambda: st.sampled_from(KNOWN["numbers"])),
                        st.integers(10**8, 10**9 - 1).map(str), SHORT_TEXT),
    "sha256": st.one_of(st.binary(min_size=32, max_size=32).map(bytes.hex), SHORT_TEXT),
    "direction": st.sampled_from(["incoming", "outgoing", "sideways", ""]),
    "error": st.sampled_from(["", "checksum", "disk_full", "bogus"]),
    **{flag: st.one_of(st.booleans(), SCALARS) for flag in
       ("accept", "typing", "locked", "camera", "microphone", "screen", "paused", "complete")},
}
TEMPLATES: dict[int, tuple[str, ...]] = {
    PacketType.HELLO: ("version", "client"), PacketType.REGISTER: ("phone", "password", "nickname"),
    PacketType.LOGIN: ("phone", "password"), PacketType.RESUME: ("token",),
    PacketType.USER_SEARCH: ("phone",), PacketType.FRIEND_REQUEST: ("user_id", "phone", "greeting"),
    PacketType.FRIEND_ANSWER: ("request_id", "accept"), PacketType.FRIEND_LIST: ("after",),
    PacketType.FRIEND_REMOVE: ("user_id",), PacketType.FRIEND_REQUESTS: ("direction", "after"),
    PacketType.PROFILE_UPDATE: ("nickname", "signature", "avatar_builtin"), PacketType.AVATAR_GET: ("user_id",),
    PacketType.CHAT_SEND: ("to", "text", "client_msg_id"), PacketType.CHAT_DELIVERED: ("ids",),
    PacketType.CHAT_READ: ("user_id", "up_to"), PacketType.CHAT_HISTORY: ("user_id", "before", "limit"),
    PacketType.TYPING: ("to", "typing"), PacketType.CHAT_UNREAD: ("after",),
    PacketType.FILE_OFFER: ("to", "name", "size", "sha256"), PacketType.FILE_ANSWER: ("transfer_id", "accept"),
    PacketType.FILE_ACK: ("transfer_id", "offset", "complete"),
    PacketType.FILE_CANCEL: ("transfer_id", "reason", "error"), PacketType.FILE_RESUME: ("transfer_id", "offset"),
    PacketType.ROOM_CREATE: ("title", "password"), PacketType.ROOM_JOIN: ("number", "password"),
    PacketType.ROOM_KICK: ("user_id",), PacketType.ROOM_MUTE: ("user_id",), PacketType.ROOM_LOCK: ("locked",),
    PacketType.ROOM_CHAT: ("text",), PacketType.MEDIA_STATE: ("camera", "microphone", "screen"),
    PacketType.KEYFRAME_REQUEST: ("user_id", "kind"), PacketType.MEDIA_SUBSCRIBE: ("user_id", "kind", "paused"),
}


@st.composite
def plausible_body(draw, ptype: int) -> bytes:
    """Mostly-valid fields, some dropped, one maybe of a wrong type, maybe an unknown key."""
    if ptype == PacketType.MEDIA_FRAME:
        header = (draw(IDS.filter(lambda v: 0 <= v < 2**32)), draw(st.integers(0, 4)), draw(st.integers(0, 3)),
                  draw(st.integers(0, 255)), draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**64 - 1)))
        return MEDIA_HEADER.pack(*header) + draw(st.binary(max_size=300))
    if ptype == PacketType.FILE_CHUNK:
        transfer = bytes.fromhex(draw(st.sampled_from(KNOWN["transfers"])))
        return transfer + draw(st.integers(0, 2**64 - 1)).to_bytes(8, "big") + draw(st.binary(max_size=300))
    if ptype == PacketType.AVATAR_UPLOAD:
        return draw(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b""])) + draw(st.binary(max_size=300))
    body = {}
    for name in TEMPLATES.get(ptype, ()):
        if draw(st.integers(0, 5)):
            body[name] = draw(FIELDS[name])
    if body and draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from(sorted(body)))] = draw(JSON_VALUES)
    if draw(st.integers(0, 4)) == 0:
        body[draw(st.text(min_size=1, max_size=10))] = draw(JSON_VALUES)
    return _json_bytes(body)


ALL_TYPES = [int(t) for t in PacketType]
TYPES = st.one_of(st.sampled_from(sorted(TEMPLATES) + [int(t) for t in BINARY_TYPES]),
                  st.sampled_from(ALL_TYPES), st.integers(0, 0xFFFF))


def _json_bytes(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def packets(draw) -> bytes:
    """One framed packet; the header's length always matches the body (framing stays in sync)."""
    ptype = draw(TYPES)
    # Oversized frames end the connection, so they are a small share of the mix.
    style = draw(st.sampled_from(["plausible"] * 16 + ["json"] * 8 + ["deep", "raw", "not-object", "binary"] * 2
                                 + ["long-field"]))
    if style == "plausible":
        body = draw(plausible_body(ptype))
    elif style == "json":
        body = _json_bytes(draw(BODIES))
    elif style == "deep":
        depth = draw(st.sampled_from([50, 200, 1000, 1500, 20000]))
        body = b'{"x":' + b"[" * depth + b"]" * depth + b"}"
    elif style == "raw":
        body = draw(st.binary(max_size=200))
    elif style == "not-object":
        body = _json_bytes(draw(JSON_VALUES))
    elif style == "long-field":
        key = draw(st.sampled_from(KEYS))
        body = _json_bytes({key: "x" * draw(st.integers(1000, 70000))})
    else:
        body = draw(st.binary(min_size=0, max_size=900))
    if ptype in BINARY_TYPES and style == "json":
        body = draw(st.binary(max_size=300))
    request_id = draw(st.integers(0, wire.MAX_REQUEST_ID))
    return wire.HEADER.pack(wire.MAGIC, ptype, len(body), request_id) + body


class LogWatch(logging.Handler):
    """Collects server log records that mean a handler let an exception escape."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.bad.append(self.format(record) if record.exc_info else record.getMessage())


@pytest.fixture
def log_watch():
    watch = LogWatch()
    watch.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(watch)
    yield watch
    root.removeHandler(watch)


class RawSession:
    """A raw socket that logs in with the protocol itself and reconnects when dropped."""

    def __init__(self, port: int, phone: str, authenticate: bool) -> None:
        self.port = port
        self.phone = phone
        self.authenticate = authenticate
        self.sock: socket.socket | None = None
        self.closed_by_server = 0
        self.internal_errors: list[dict] = []
        self.replies = 0

    def ensure(self) -> socket.socket:
        if self.sock is None:
            sock = raw_connect(self.port)
            assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
            if self.authenticate:
                reply = raw_request(sock, PacketType.LOGIN, {"phone": self.phone, "password": PASSWORD}, 2)
                assert reply.type == PacketType.RESULT, reply.json()
            self.sock = sock
        return self.sock

    def send_batch(self, batch: list[bytes]) -> None:
        """Send the batch in slices of SLICE packets (the server drops a peer after 20
        protocol violations), reconnecting whenever the server closed the connection."""
        for start in range(0, len(batch), SLICE):
            self._send_slice(batch[start:start + SLICE])

    def _send_slice(self, batch: list[bytes]) -> None:
        """Send packets, then a heartbeat; read until its answer or the server closes."""
        sock = self.ensure()
        sentinel = 0xFFFFFFF0
        data = b"".join(batch) + wire.encode_json(PacketType.HEARTBEAT, {}, sentinel)
        try:
            sock.sendall(data)
        except OSError:
            self._dropped()
            return
        decoder = wire.FrameDecoder()
        sock.settimeout(10)
        while True:
            try:
                chunk = sock.recv(262144)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                self._dropped()
                return
            for frame in decoder.feed(chunk):
                if frame.type == PacketType.ERROR:
                    body = frame.json()
                    if body.get("code") == ErrorCode.INTERNAL:
                        self.internal_errors.append(body)
                if frame.type in (PacketType.RESULT, PacketType.ERROR):
                    self.replies += 1
                if frame.request_id == sentinel and frame.type == PacketType.RESULT:
                    return

    def _dropped(self) -> None:
        self.closed_by_server += 1
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def test_random_packets_of_every_type_never_break_the_server(backend, storage, server_factory, client_factory,
                                                            log_watch):
    srv = server_factory(storage=storage, login_failures_per_address=10**6, login_failures_per_account=10**6,
                         max_unauthenticated_per_address=10**4, messages_per_minute=10**6,
                         friend_requests_per_minute=10**6, rooms_per_minute=10**6, room_joins_per_minute=0)
    # The fuzzer has a friend who is online, hosts a meeting and offers it a file, so that
    # plausible packets name real users, rooms and transfers.
    fuzzer, friend = client_factory(srv.port), client_factory(srv.port)
    fuzzer.register_and_login("fuzzer")
    friend.register_and_login("friend")
    befriend(fuzzer, friend)
    number = friend.kernel.rooms.create("fuzzed")["number"]
    transfer = friend.kernel.request(PacketType.FILE_OFFER, {"to": uid(fuzzer), "name": "f.bin", "size": 4096,
                                                             "sha256": "ab" * 32})["transfer_id"]
    KNOWN.update(users=[uid(fuzzer), uid(friend)], numbers=[number], transfers=[transfer])
    phone = fuzzer.phone
    sessions = [RawSession(srv.port, phone, authenticate=True), RawSession(srv.port, phone, authenticate=False)]
    sent = [0]
    started = time.monotonic()

    @settings(max_examples=EXAMPLES[backend], deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(packets(), min_size=BATCH, max_size=BATCH), anonymous=st.integers(0, 4))
    def run(batch: list[bytes], anonymous: int) -> None:
        # One batch in five is sent before login, the rest as a logged-in user.
        session = sessions[1] if anonymous == 0 else sessions[0]
        session.send_batch(batch)
        sent[0] += len(batch)
        assert not log_watch.bad, log_watch.bad[:3]
        assert not session.internal_errors, session.internal_errors[:3]

    try:
        run()
    finally:
        for session in sessions:
            session.close()
    elapsed = time.monotonic() - started
    assert sent[0] >= EXAMPLES[backend] * BATCH, f"only {sent[0]} packets were generated"
    replies = sum(s.replies for s in sessions)
    assert replies > sent[0] // 2, f"only {replies} replies to {sent[0]} packets: the server stopped answering"
    assert not log_watch.bad, log_watch.bad[:3]
    # The server still serves a normal client, and did not leak connections.
    client = client_factory(srv.port)
    client.register_and_login("after the storm")
    assert client.kernel.request(PacketType.HEARTBEAT, {})["time"] > 0
    print(f"hostile suite: {sent[0]} packets, {replies} replies in {elapsed:.1f} s, "
          f"{sum(s.closed_by_server for s in sessions)} connections closed by the server")


def test_truncated_frames_and_garbage_are_dropped_without_harm(server, client_factory, log_watch):
    client = client_factory(server.port)
    client.register_and_login("bystander")
    truncated = raw_connect(server.port)
    truncated.sendall(wire.HEADER.pack(wire.MAGIC, PacketType.LOGIN, 500, 1) + b'{"phone": "1')
    truncated.close()
    garbage = raw_connect(server.port)
    garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    garbage.settimeout(5)
    assert garbage.recv(100) == b""
    garbage.close()
    assert client.kernel.request(PacketType.HEARTBEAT, {})["time"] > 0
    assert not log_watch.bad


# -- limits ---------------------------------------------------------------------------------------

def _read_error_then_close(sock: socket.socket, timeout: float = 5.0) -> dict | None:
    """The ERROR the server sent before closing (None if it sent none), once it closed."""
    sock.settimeout(timeout)
    decoder = wire.FrameDecoder()
    error = None
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return error
        for frame in decoder.feed(chunk):
            if frame.type == PacketType.ERROR:
                error = frame.json()


def test_unauthenticated_connections_per_address_are_capped(server_factory):
    srv = server_factory(max_unauthenticated_per_address=3)
    phone = unique_phone()
    assert raw_register(srv.port, phone, "capped").type == PacketType.RESULT
    held = [connect_from(srv.port, "127.0.0.1") for _ in range(3)]
    for i, sock in enumerate(held):
        assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
    refused = connect_from(srv.port, "127.0.0.1")
    error = _read_error_then_close(refused)
    assert error is not None and error["code"] == ErrorCode.TOO_MANY_CONNECTIONS
    # Another address is not affected.
    other = connect_from(srv.port, "127.0.0.2")
    assert raw_request(other, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
    # Logging in frees the slot: the address may open one more.
    assert raw_request(held[0], PacketType.LOGIN, {"phone": phone, "password": PASSWORD}, 2).type == PacketType.RESULT
    again = connect_from(srv.port, "127.0.0.1")
    assert raw_request(again, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
    # Closing an anonymous connection frees its slot too.
    held[1].close()
    wait_until(lambda: srv.server.unauthenticated_by_address.get("127.0.0.1", 0) < 3, 5,
               "the closed anonymous connection's slot freed")
    late = connect_from(srv.port, "127.0.0.1")
    assert raw_request(late, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
    for sock in held + [refused, other, again, late]:
        sock.close()


def test_login_deadline_closes_an_idle_anonymous_connection(server_factory):
    srv = server_factory(login_deadline=1.0)
    sock = raw_connect(srv.port)
    assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
    started = time.monotonic()
    error = _read_error_then_close(sock, timeout=6)
    assert error is not None and error["code"] == ErrorCode.LOGIN_DEADLINE
    assert time.monotonic() - started < 4
    sock.close()


@pytest.mark.parametrize("ptype,length,logged_in", [
    (PacketType.HEARTBEAT, PRE_LOGIN_BODY + 1, False),
    (PacketType.LOGIN, PRE_LOGIN_BODY + 1, False),
    (PacketType.MEDIA_FRAME, 200_000, False),       # bulky frames wait for a login
    (PacketType.RESULT, 2000, True),                # a type the server never handles
    (PacketType.HEARTBEAT, 10_000, True),
])
def test_frame_size_is_limited_per_packet_type(server, ptype, length, logged_in):
    sock = raw_connect(server.port)
    assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
    if logged_in:
        phone = unique_phone()
        assert raw_request(sock, PacketType.REGISTER, {"phone": phone, "password": PASSWORD,
                                                       "nickname": "big"}, 2).type == PacketType.RESULT
        assert raw_request(sock, PacketType.LOGIN, {"phone": phone, "password": PASSWORD}, 3).type == PacketType.RESULT
    # Only the header is sent: the server refuses on the claimed length, before any body.
    sock.sendall(wire.HEADER.pack(wire.MAGIC, ptype, length, 9))
    error = _read_error_then_close(sock)
    assert error is not None and error["code"] == ErrorCode.TOO_LARGE, error
    assert error["details"]["type"] == ptype and error["details"]["limit"] < length
    sock.close()


def test_max_control_body_is_configurable(server_factory):
    srv = server_factory(max_control_body=8192)
    sock = raw_connect(srv.port)
    hello = raw_request(sock, PacketType.HELLO, HELLO, 1).json()
    assert hello["limits"]["max_control_body"] == 8192
    sock.close()


def test_token_bucket_refuses_over_the_limit_and_refills():
    now = [1000.0]
    bucket = TokenBucket(6, clock=lambda: now[0])          # 6 per minute: one every 10 s
    assert [bucket.take("a") for _ in range(6)] == [0.0] * 6
    wait = bucket.take("a")
    assert 9.9 <= wait <= 10.0
    assert bucket.take("b") == 0.0, "another key has its own allowance"
    now[0] += 10.0
    assert bucket.take("a") == 0.0
    assert bucket.take("a") > 0
    assert TokenBucket(0).take("x") == 0.0, "0 means unlimited"


def test_rate_limit_error_carries_retry_after(server_factory):
    from common.errors import ApiError
    from server.ratelimit import RateLimits
    from tests.helpers import test_config
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        limits = RateLimits(test_config(tmp, friend_requests_per_minute=2))
    limits.friend_request(1)
    limits.friend_request(1)
    with pytest.raises(ApiError) as info:
        limits.friend_request(1)
    assert info.value.code == ErrorCode.RATE_LIMITED
    assert 0 < info.value.details["retry_after"] <= 31
    limits.friend_request(2)


def test_a_flood_from_one_peer_does_not_stall_another(server, client_factory):
    """A peer pipelining thousands of requests; a second client's heartbeats stay quick."""
    client = client_factory(server.port)
    client.register_and_login("calm")
    flood = raw_connect(server.port)
    stop = threading.Event()

    def pour() -> None:
        data = wire.encode_json(PacketType.HELLO, HELLO, 5) * 200
        try:
            while not stop.is_set():
                flood.sendall(data)
        except OSError:
            pass

    thread = threading.Thread(target=pour, daemon=True)
    thread.start()
    try:
        worst = 0.0
        for _ in range(20):
            started = time.monotonic()
            client.kernel.request(PacketType.HEARTBEAT, {}, timeout=5)
            worst = max(worst, time.monotonic() - started)
        assert worst < 1.0, f"a heartbeat took {worst:.2f} s during the flood"
    finally:
        stop.set()
        flood.close()
        thread.join(5)


# -- per-user rate limits on the real handlers -----------------------------------------------------

def rate_limited(client, ptype: PacketType, body: dict) -> dict:
    from common.errors import ApiError
    with pytest.raises(ApiError) as info:
        client.kernel.request(ptype, body, timeout=5)
    assert info.value.code == ErrorCode.RATE_LIMITED, info.value
    return info.value.details


def test_rate_limits_refuse_only_the_user_over_the_limit(server_factory, client_factory):
    srv = server_factory(messages_per_minute=5, friend_requests_per_minute=2, rooms_per_minute=2)
    a, b, c, d = (client_factory(srv.port) for _ in range(4))
    for client, name in ((a, "a"), (b, "b"), (c, "c"), (d, "d")):
        client.register_and_login(name)
    befriend(a, b)
    # Messages: one-to-one and room chat share A's allowance of 5 a minute.
    for i in range(4):
        a.kernel.request(PacketType.CHAT_SEND, {"to": uid(b), "text": f"m{i}", "client_msg_id": f"a-{i}"})
    room = a.kernel.rooms.create("limits")
    a.kernel.rooms.chat("the fifth")
    details = rate_limited(a, PacketType.CHAT_SEND, {"to": uid(b), "text": "sixth", "client_msg_id": "a-6"})
    assert 10 <= details["retry_after"] <= 13 and details["limit"] == 5       # one token per 12 s
    rate_limited(a, PacketType.ROOM_CHAT, {"text": "also too many"})
    # B is not slowed by A's limit.
    for i in range(5):
        b.kernel.request(PacketType.CHAT_SEND, {"to": uid(a), "text": f"b{i}", "client_msg_id": f"b-{i}"})
    # Friend requests: 2 a minute for C; D is unaffected.
    c.kernel.friends.add(user_id=uid(a))
    c.kernel.friends.add(user_id=uid(b))
    details = rate_limited(c, PacketType.FRIEND_REQUEST, {"user_id": uid(d)})
    assert 25 <= details["retry_after"] <= 31
    d.kernel.friends.add(user_id=uid(c))
    # Rooms: 2 created a minute for A (one above), the second now; B still creates freely.
    a.kernel.rooms.leave()
    a.kernel.rooms.create("second")
    a.kernel.rooms.leave()
    rate_limited(a, PacketType.ROOM_CREATE, {"title": "third"})
    b.kernel.rooms.create("b's own")
    assert room["number"]
    figures = srv.server.status()
    assert figures["rate_limited_messages"] == 2
    assert figures["rate_limited_friend_requests"] == 1 and figures["rate_limited_rooms"] == 1


def test_a_rate_limited_sender_is_slowed_not_dropped(server_factory, client_factory):
    """The client's outbox waits retry_after and sends again: every message arrives, late."""
    srv = server_factory(messages_per_minute=60)
    a, b = client_factory(srv.port), client_factory(srv.port)
    a.register_and_login("hasty")
    b.register_and_login("patient")
    befriend(a, b)
    started = time.monotonic()
    entries = [a.kernel.chat.send(uid(b), f"burst {i}") for i in range(62)]
    for entry in entries:
        entry.acked.result(timeout=15)
    elapsed = time.monotonic() - started
    assert elapsed >= 0.9, f"62 messages at 60 a minute took only {elapsed:.2f} s"
    texts = set()
    for i in range(62):
        texts.add(b.events.wait_for("chat_message", lambda e, i=i: e["message"]["text"] == f"burst {i}")["message"]["text"])
    assert len(texts) == 62


def test_guessing_meeting_numbers_is_slowed(server_factory, client_factory):
    srv = server_factory(room_joins_per_minute=3)
    host, guesser = client_factory(srv.port), client_factory(srv.port)
    host.register_and_login("host")
    guesser.register_and_login("guesser")
    number = host.kernel.rooms.create("secret", password="open sesame")["number"]
    from common.errors import ApiError
    for guess in ("wrong1", "wrong2", "wrong3"):
        with pytest.raises(ApiError) as info:
            guesser.kernel.request(PacketType.ROOM_JOIN, {"number": number, "password": guess})
        assert info.value.code == ErrorCode.WRONG_ROOM_PASSWORD
    details = rate_limited(guesser, PacketType.ROOM_JOIN, {"number": number, "password": "open sesame"})
    assert 15 <= details["retry_after"] <= 21
    assert srv.server.status()["rate_limited_room_joins"] == 1
