"""The media relay on a real server, with synthetic payload bytes (no codecs): forwarding to
every other member, the keyframe cache for newcomers, keyframe request rate limiting, pausing,
and a receiver that stops reading."""
from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from common import frame as wire
from common.media import Codec, MediaHeader, MediaKind, unpack_media
from common.packets import PacketType
from tests.helpers import HELLO, TestClient, barrier, raw_barrier, unique_phone, wait_until

CAMERA, MIC = MediaKind.CAMERA, MediaKind.MICROPHONE


class Inbox:
    """What one client received: (header, payload) per MEDIA_FRAME, waitable."""

    def __init__(self, client: TestClient, keep_payload: bool = True) -> None:
        self.frames: list[tuple[MediaHeader, bytes]] = []
        self.keep_payload = keep_payload
        self.cond = threading.Condition()
        client.kernel.rooms.add_media_listener(self._on_frame)

    def _on_frame(self, header: MediaHeader, payload: bytes) -> None:
        with self.cond:
            self.frames.append((header, payload if self.keep_payload else b""))
            self.cond.notify_all()

    def of(self, user_id: int, kind: int) -> list[tuple[MediaHeader, bytes]]:
        with self.cond:
            return [(h, p) for h, p in self.frames if h.user_id == user_id and h.kind == kind]

    def seqs(self, user_id: int, kind: int) -> list[int]:
        return [h.seq for h, _ in self.of(user_id, kind)]

    def wait(self, predicate, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"media did not arrive in time ({len(self.frames)} frames so far)")
                self.cond.wait(left)


class KeyframeAsks:
    """When the server asked this client for a keyframe of its own stream."""

    def __init__(self, client: TestClient) -> None:
        self.times: list[tuple[float, MediaKind]] = []
        self.cond = threading.Condition()
        client.kernel.rooms.add_keyframe_listener(self._on_ask)

    def _on_ask(self, kind: MediaKind) -> None:
        with self.cond:
            self.times.append((time.monotonic(), kind))
            self.cond.notify_all()

    def count(self) -> int:
        with self.cond:
            return len(self.times)

    def wait(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.times) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(self.times)} keyframe requests, expected {n}")
                self.cond.wait(left)


def payload(kind: int, seq: int, size: int = 64) -> bytes:
    head = f"{kind}:{seq}:".encode()
    return head + bytes(max(0, size - len(head)))


def publish(client: TestClient, kind: MediaKind, seq_label: int, keyframe: bool = False, size: int = 64) -> bool:
    codec = Codec.OPUS if kind == MIC else Codec.H264
    return client.kernel.rooms.publish(kind, codec, payload(kind, seq_label, size), keyframe,
                                       time.time_ns() // 1000)


@pytest.fixture
def meeting(server, client_factory):
    """make(n, srv=server) -> n logged-in clients; the first creates a room, the rest join."""
    def make(n: int, srv=None) -> list[TestClient]:
        srv = srv or server
        people = []
        for i in range(n):
            client = client_factory(srv.port)
            client.register_and_login(chr(ord("A") + i))
            if i == 0:
                number = client.kernel.rooms.create("relay test")["number"]
            else:
                client.kernel.rooms.join(number)
            people.append(client)
        for client in people:
            client.events.wait_for("room_members", lambda e: len(e["room"]["members"]) == n)
        return people
    return make


def uid(client: TestClient) -> int:
    return client.kernel.user["id"]


def keyframes_asked(server, publisher: TestClient, kind: MediaKind) -> int:
    """How many keyframes the relay has asked of the publisher's stream so far."""
    return server.server.relay.media[publisher.kernel.rooms.room["number"]].streams[(uid(publisher), kind)] \
        .keyframe_requests


def asking_stopped(server, publisher: TestClient, kind: MediaKind) -> None:
    """Wait until the relay neither wants a keyframe of the publisher's stream nor has a retry
    pending (it keeps rescheduling one while it wants a keyframe), then let every request it
    sent arrive."""
    stream = server.server.relay.media[publisher.kernel.rooms.room["number"]].streams[(uid(publisher), kind)]
    wait_until(lambda: not stream.wanted and stream.retry is None, 5, "the relay to stop asking for a keyframe")
    barrier(publisher)


def test_frames_reach_every_other_member_never_the_sender(server, meeting):
    a, b, c = meeting(3)
    inboxes = {person: Inbox(person) for person in (a, b, c)}
    sent_at = time.time_ns() // 1000
    for seq in range(20):
        assert a.kernel.rooms.publish(CAMERA, Codec.H264, payload(CAMERA, seq), seq == 0, sent_at + seq)
        assert a.kernel.rooms.publish(MIC, Codec.OPUS, payload(MIC, seq), False, sent_at + seq)
    for person in (b, c):
        inbox = inboxes[person]
        inbox.wait(lambda: len(inbox.frames) == 40)
        for kind, codec in ((CAMERA, Codec.H264), (MIC, Codec.OPUS)):
            got = inbox.of(uid(a), kind)
            assert [h.seq for h, _ in got] == list(range(20))
            assert [p for _, p in got] == [payload(kind, s) for s in range(20)]
            assert all(h.codec == codec and h.capture_us == sent_at + h.seq for h, _ in got)
        assert [h.keyframe for h, _ in inbox.of(uid(a), CAMERA)] == [True] + [False] * 19
    b.kernel.rooms.publish(MIC, Codec.OPUS, b"from b", False, 1)
    inboxes[a].wait(lambda: len(inboxes[a].frames) == 1)
    inboxes[c].wait(lambda: len(inboxes[c].frames) == 41)
    assert inboxes[a].frames[0][0].user_id == uid(b)          # a got b's frame, none of its own
    assert inboxes[b].of(uid(b), MIC) == []
    stats = {(s["user_id"], s["kind"]): s for s in a.kernel.rooms.stats()["streams"]}
    camera = stats[(uid(a), CAMERA)]
    assert (camera["frames_in"], camera["frames_out"], camera["dropped"]) == (20, 40, 0)
    totals = server.server.status()
    assert (totals["media_frames_in"], totals["media_frames_out"], totals["media_frames_dropped"]) == (41, 82, 0)


def test_newcomer_gets_the_cached_keyframe_at_once(server, meeting, client_factory):
    a, b = meeting(2)
    asks = KeyframeAsks(a)
    inbox_b = Inbox(b)
    publish(a, CAMERA, 0, keyframe=True)
    for seq in range(1, 6):
        publish(a, CAMERA, seq)
    publish(a, MIC, 0)
    inbox_b.wait(lambda: len(inbox_b.frames) == 7)
    assert asks.count() == 0

    c = client_factory(server.port)
    c.register_and_login("C")
    inbox_c = Inbox(c)
    joined = time.monotonic()
    c.kernel.rooms.join(a.kernel.rooms.room["number"])
    inbox_c.wait(lambda: inbox_c.of(uid(a), CAMERA), timeout=1.0)
    first, data = inbox_c.of(uid(a), CAMERA)[0]
    assert first.keyframe and first.seq == 0 and data == payload(CAMERA, 0)
    assert time.monotonic() - joined < 1.0
    asks.wait(1, timeout=1.0)                                  # and a fresh keyframe is asked for
    assert asks.times[0][1] == CAMERA

    publish(a, CAMERA, 6)                                      # a delta: useless to c without its keyframe
    publish(a, MIC, 1)                                         # audio needs no keyframe
    publish(a, CAMERA, 7, keyframe=True)
    publish(a, CAMERA, 8)
    inbox_c.wait(lambda: 8 in inbox_c.seqs(uid(a), CAMERA))
    assert inbox_c.seqs(uid(a), CAMERA) == [0, 7, 8]
    assert inbox_c.seqs(uid(a), MIC) == [1]
    inbox_b.wait(lambda: 8 in inbox_b.seqs(uid(a), CAMERA))
    assert inbox_b.seqs(uid(a), CAMERA) == list(range(9))
    asked = keyframes_asked(server, a, CAMERA)                 # up to the keyframe (it went out before b got it)
    asking_stopped(server, a, CAMERA)                          # the keyframe came: no more asking
    assert asks.count() == keyframes_asked(server, a, CAMERA) == asked


def test_keyframe_requests_are_rate_limited_and_repeated_until_one_arrives(server, meeting):
    a, b = meeting(2)
    asks = KeyframeAsks(a)
    inbox_b = Inbox(b)
    publish(a, CAMERA, 0, keyframe=True)
    publish(a, CAMERA, 1)
    inbox_b.wait(lambda: len(inbox_b.frames) == 2)
    for _ in range(30):                                        # a burst of loss reports
        b.kernel.rooms.request_keyframe(uid(a), CAMERA)
    start = time.monotonic()
    seq = 2
    while time.monotonic() - start < 1.25:                     # a keeps sending deltas only
        publish(a, CAMERA, seq)
        seq += 1
        time.sleep(0.03)
    asked = [t for t, _ in asks.times]
    assert 3 <= len(asked) <= 5, asked                         # ~every 300 ms, not 30 times
    gaps = [later - earlier for earlier, later in zip(asked, asked[1:])]
    assert min(gaps) >= 0.2, gaps
    publish(a, CAMERA, seq, keyframe=True)
    inbox_b.wait(lambda: seq in inbox_b.seqs(uid(a), CAMERA))
    asked = keyframes_asked(server, a, CAMERA)
    for extra in range(1, 20):
        publish(a, CAMERA, seq + extra)
        time.sleep(0.03)
    asking_stopped(server, a, CAMERA)
    assert asks.count() == keyframes_asked(server, a, CAMERA) == asked   # it arrived: the asking stopped


def test_a_paused_stream_is_not_sent_and_resumes_from_a_keyframe(meeting):
    a, b, c = meeting(3)
    asks = KeyframeAsks(a)
    inbox_b, inbox_c = Inbox(b), Inbox(c)
    b.kernel.rooms.subscribe(uid(a), CAMERA, paused=True)
    for seq in range(10):
        publish(a, CAMERA, seq, keyframe=seq in (0, 5))
        publish(a, MIC, seq)
    inbox_c.wait(lambda: len(inbox_c.frames) == 20)
    inbox_b.wait(lambda: len(inbox_b.seqs(uid(a), MIC)) == 10)
    assert inbox_b.seqs(uid(a), CAMERA) == []                  # paused: no video, audio still flows
    b.kernel.rooms.subscribe(uid(a), CAMERA, paused=False)
    inbox_b.wait(lambda: inbox_b.seqs(uid(a), CAMERA))
    resumed, _ = inbox_b.of(uid(a), CAMERA)[0]
    assert resumed.seq == 5 and resumed.keyframe                # the latest keyframe, at once
    asks.wait(1)


def test_camera_off_and_leaving_forget_the_cached_keyframe(server, meeting, client_factory):
    a, b = meeting(2)
    a.kernel.rooms.set_media_state(camera=True, microphone=False, screen=False)
    publish(a, CAMERA, 0, keyframe=True)
    publish(b, CAMERA, 0, keyframe=True)
    Inbox(b).wait(lambda: True)
    a.kernel.rooms.set_media_state(camera=False, microphone=False, screen=False)
    b.kernel.rooms.leave()
    c = client_factory(server.port)
    c.register_and_login("C")
    inbox_c = Inbox(c)
    c.kernel.rooms.join(a.kernel.rooms.room["number"])
    publish(a, MIC, 0)                                         # a marker that comes after any cached frame
    inbox_c.wait(lambda: inbox_c.of(uid(a), MIC))
    assert [h.kind for h, _ in inbox_c.frames] == [MIC]        # no stale picture of a or of b


def test_frames_outside_a_room_and_malformed_frames(server, meeting, client_factory):
    a, b = meeting(2)
    inbox_b = Inbox(b)
    loner = client_factory(server.port)
    loner.register_and_login("L")
    assert not publish(loner, CAMERA, 0, keyframe=True)        # the client knows it is in no room
    bogus = b"\x00" * 4 + bytes([9, 1, 0]) + b"\x00" * 12 + b"payload"
    a.kernel.send(PacketType.MEDIA_FRAME, bogus)        # unknown kind
    a.kernel.send(PacketType.MEDIA_FRAME, b"short")
    errors = a.events.wait_for("server_error", lambda e: e["name"] == "BAD_REQUEST")
    assert "kind" in errors["message"] or "shorter" in errors["message"]
    loner.kernel.send(PacketType.MEDIA_FRAME, b"\x00" * 4 + bytes([1, 1, 1]) + b"\x00" * 12 + b"x")
    publish(a, MIC, 0)
    inbox_b.wait(lambda: inbox_b.frames)
    barrier(loner)                                             # the server has read the loner's frame ...
    barrier(b)                                                 # ... and b has all it was sent
    assert [h.user_id for h, _ in inbox_b.frames] == [uid(a)]
    assert server.server.status()["media_frames_ignored"] == 1


class RawMember:
    """A member on a bare socket, so the test decides when (and whether) it reads."""

    def __init__(self, port: int, number: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.decoder = wire.FrameDecoder()
        self.events: list[wire.Frame] = []
        self.next_id = 1
        phone, password = unique_phone(), "correct horse battery"
        self.request(PacketType.HELLO, HELLO)
        self.request(PacketType.REGISTER, {"phone": phone, "password": password, "nickname": "Raw"})
        self.user_id = self.request(PacketType.LOGIN, {"phone": phone, "password": password})["user"]["id"]
        self.request(PacketType.ROOM_JOIN, {"number": number})

    def request(self, ptype: int, body: dict) -> dict:
        rid = self.next_id
        self.next_id += 1
        self.sock.sendall(wire.encode_json(ptype, body, rid))
        while True:
            for frame in self.read():
                if frame.request_id == rid:
                    assert frame.type == PacketType.RESULT, frame.json()
                    return frame.json()
                self.events.append(frame)

    def drain(self) -> list[MediaHeader]:
        """Read everything the server queued for this member (up to a barrier); the media
        headers received."""
        rid = self.next_id
        self.next_id += 1
        frames = raw_barrier(self.sock, self.decoder, rid)
        return [unpack_media(f.body)[0] for f in frames if f.type == PacketType.MEDIA_FRAME]

    def read(self) -> list[wire.Frame]:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        return self.decoder.feed(data)


SERVER_CODE = str(Path(__file__).resolve().parents[1] / "server" / "*")


def server_held_bytes() -> int:
    """Python memory allocated by the server's code and still alive (tracemalloc must run).
    The tests share one process with the server, so its RSS would also count the clients, the
    allocator's caches and whatever earlier tests left running."""
    snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, SERVER_CODE)])
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_a_receiver_that_stops_reading_hurts_nobody_and_memory_stays_bounded(server, meeting):
    a, b = meeting(2)
    config = server.server.config
    inbox_b = Inbox(b, keep_payload=False)
    asks = KeyframeAsks(a)
    stalled = RawMember(server.port, a.kernel.rooms.room["number"])
    conn = server.server.sessions.get(stalled.user_id)
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)   # keep the kernel from hiding the queue
    frames, size = 300, 20_000
    tracemalloc.start()
    held_before = server_held_bytes()
    peak_queue = peak_all = 0
    sent_video = []
    for seq in range(frames):                                  # 6 MB of video at ~1 MB/s, plus audio
        if publish(a, CAMERA, seq, keyframe=seq % 25 == 0, size=size):
            sent_video.append(seq)
        assert publish(a, MIC, seq, size=200)
        if seq % 25 == 0:
            stalled.sock.sendall(wire.encode_json(PacketType.HEARTBEAT, {}))   # alive, just not reading
        peak_queue = max(peak_queue, conn.out_size)
        peak_all = max(peak_all, sum(c.out_size for c in list(server.server.connections.values())))
        time.sleep(0.02)
    inbox_b.wait(lambda: len(inbox_b.seqs(uid(a), MIC)) == frames, timeout=10)
    inbox_b.wait(lambda: inbox_b.seqs(uid(a), CAMERA)[-1:] == sent_video[-1:], timeout=10)
    held_growth = server_held_bytes() - held_before
    tracemalloc.stop()
    published = len(sent_video) * size

    print(f"published {published / 1e6:.1f} MB of video; stalled receiver's queue peaked at {peak_queue} bytes, "
          f"all queues at {peak_all}; memory the server holds grew {held_growth / 1e6:.1f} MB")
    # the reader who keeps up got everything, in order
    assert inbox_b.seqs(uid(a), CAMERA) == sent_video and len(sent_video) >= frames * 0.95
    assert inbox_b.seqs(uid(a), MIC) == list(range(frames))
    # the stalled receiver's queue on the server stayed under the audio budget plus one frame
    assert peak_queue <= config.media_audio_budget + size + 1024, peak_queue
    assert peak_all <= config.media_audio_budget + 4 * (size + 1024), peak_all
    assert held_growth < published / 2, (held_growth, published)
    status = server.server.status()
    assert status["media_frames_dropped"] > 0
    assert not conn.closed

    # it was never asked for while the receiver stayed stuck: no keyframe storm for the others
    barrier(a)
    assert asks.count() == 0
    # once it reads again: audio was kept flowing, and video restarts at a keyframe
    received = stalled.drain()
    audio = [h.seq for h in received if h.kind == MIC]
    video = [h.seq for h in received if h.kind == CAMERA]
    assert len(audio) >= frames * 0.9 and len(video) < frames / 2, (len(audio), len(video))
    assert video == list(range(len(video)))                    # a prefix: then dropped, not delayed
    publish(a, CAMERA, frames)                                 # a delta it cannot use: dropped ...
    asks.wait(1)                                               # ... and, as it reads again, a keyframe is asked for
    publish(a, CAMERA, frames + 1, keyframe=True)
    publish(a, CAMERA, frames + 2)
    barrier(a)                                                 # the server has forwarded both
    resumed = [h for h in stalled.drain() if h.kind == CAMERA]
    assert [(h.seq, h.keyframe) for h in resumed] == [(frames + 1, True), (frames + 2, False)]
    assert "time" in stalled.request(PacketType.ROOM_CHAT, {"text": "still here"})


def test_a_congested_publisher_holds_video_until_a_keyframe(meeting):
    a, b = meeting(2)
    asks = KeyframeAsks(a)
    inbox_b = Inbox(b)
    assert publish(a, CAMERA, 0, keyframe=True)
    link = a.kernel._link
    with link._lock:                                           # the network thread updates it too
        link.out_size += 10 ** 9                               # as if the uplink had stalled
    try:
        assert not publish(a, CAMERA, 1)                       # dropped locally ...
        assert asks.count() == 1 and asks.times[0][1] == CAMERA   # ... and the encoder is asked for a keyframe
        assert not publish(a, CAMERA, 2)
        assert publish(a, MIC, 0)                              # audio is always queued
        assert asks.count() == 1
    finally:
        with link._lock:
            link.out_size -= 10 ** 9
    assert not publish(a, CAMERA, 3)                           # a delta still cannot be decoded
    assert publish(a, CAMERA, 4, keyframe=True)
    assert publish(a, CAMERA, 5)
    inbox_b.wait(lambda: len(inbox_b.seqs(uid(a), CAMERA)) == 3)
    got = inbox_b.of(uid(a), CAMERA)
    assert [(h.seq, h.keyframe) for h, _ in got] == [(0, True), (1, True), (2, False)]   # no gap in seq
    assert [p for _, p in got][1:] == [payload(CAMERA, 4), payload(CAMERA, 5)]


def test_media_control_errors(server, meeting, client_factory):
    from common.errors import ApiError, ErrorCode

    a, b = meeting(2)
    loner = client_factory(server.port)
    loner.register_and_login("L")

    def code(client: TestClient, ptype: PacketType, body: dict) -> ErrorCode:
        with pytest.raises(ApiError) as err:
            client.kernel.request(ptype, body)
        return err.value.code

    assert code(b, PacketType.KEYFRAME_REQUEST, {"user_id": 999_999, "kind": 1}) == ErrorCode.NO_SUCH_MEMBER
    assert code(b, PacketType.MEDIA_SUBSCRIBE, {"user_id": uid(b), "kind": 1, "paused": True}) == ErrorCode.NO_SUCH_MEMBER
    assert code(b, PacketType.MEDIA_SUBSCRIBE, {"user_id": uid(a), "kind": 7, "paused": True}) == ErrorCode.BAD_REQUEST
    assert code(loner, PacketType.MEDIA_SUBSCRIBE, {"user_id": uid(a), "kind": 1, "paused": True}) == ErrorCode.NOT_IN_ROOM
    assert code(loner, PacketType.MEDIA_STATS, {}) == ErrorCode.NOT_IN_ROOM
    assert b.kernel.request(PacketType.KEYFRAME_REQUEST, {"user_id": uid(a), "kind": 1}) == {}
    b.kernel.rooms.request_keyframe(999_999, CAMERA)           # fire-and-forget about someone gone: no error
    b.kernel.rooms.chat("after the loss report")               # replies come in order: the report was handled
    assert b.events.count("server_error") == 0
