"""Media across the nodes of a cluster (real server processes sharing MySQL and Redis): the
cascaded relay sends a frame once to each other node with members in the room, each node
fans out with its own keyframe cache, keyframe requests reach the publisher's node coalesced,
host controls, screen share and room chat work whatever node each member is on, and the
members of a node killed mid-meeting fail over and get pictures again."""
from __future__ import annotations

import time

import pytest

from client.bot import Bot, BotMedia
from client.media.clock import now_us
from common.media import Codec, MediaKind
from server.admin import query_status
from tests.helpers import unique_phone, wait_until
from tests.server_process import ServerProcess
from tests.test_cluster import cluster, user_on  # noqa: F401  (the cluster fixture)
from tests.test_relay import CAMERA, MIC, Inbox, KeyframeAsks, payload, publish, uid

SCREEN = MediaKind.SCREEN
# Real codecs at a modest size: three encoders and six decoders share the test process and
# two cores with three servers (scripts/bench_encode.py measures the full size).
BOT_MEDIA = BotMedia(width=320, height=240, fps=15.0, bitrate=250_000)
IN_FLIGHT_US = 500_000       # frames captured this close to the end of a window may still be on their way


def status(node: ServerProcess) -> dict:
    return query_status(node.data_dir / "admin.sock")


def meeting_on(client_factory, nodes: list[ServerProcess]) -> list:
    """One member per entry of ``nodes`` (on that node); the first creates the room."""
    people = []
    for i, node in enumerate(nodes):
        person = user_on(client_factory, node, chr(ord("A") + i))
        if i == 0:
            number = person.kernel.rooms.create("across nodes")["number"]
        else:
            person.kernel.rooms.join(number)
        people.append(person)
    for person in people:
        person.events.wait_for("room_members", lambda e: len(e["room"]["members"]) == len(nodes))
    return people


def test_a_frame_crosses_to_each_other_node_once_and_reaches_every_member(cluster, client_factory):
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    a, b, c, d = meeting_on(client_factory, [n1, n2, n2, n3])
    inboxes = {person: Inbox(person) for person in (b, c, d)}
    sent_at = time.time_ns() // 1000
    before = status(n1)
    for seq in range(20):
        assert a.kernel.rooms.publish(CAMERA, Codec.H264, payload(CAMERA, seq), seq == 0, sent_at + seq)
        assert a.kernel.rooms.publish(MIC, Codec.OPUS, payload(MIC, seq), False, sent_at + seq)
    for person, inbox in inboxes.items():
        inbox.wait(lambda: len(inbox.frames) == 40)
        for kind in (CAMERA, MIC):
            got = inbox.of(uid(a), kind)
            assert [h.seq for h, _ in got] == list(range(20)), person.nickname
            assert [p for _, p in got] == [payload(kind, s) for s in range(20)]
            assert all(h.capture_us == sent_at + h.seq for h, _ in got)
    after = status(n1)
    # two other nodes, 40 frames: 80 crossings for 3 receivers (not 120), none dropped
    assert after["media_frames_to_nodes"] - before["media_frames_to_nodes"] == 80
    assert after["media_frames_dropped_for_nodes"] == 0
    assert status(n2)["media_frames_from_nodes"] >= 40 and status(n3)["media_frames_from_nodes"] >= 40

    inbox_a = Inbox(a)
    d.kernel.rooms.publish(MIC, Codec.OPUS, b"from d", False, 1)      # and back the other way
    inbox_a.wait(lambda: inbox_a.of(uid(d), MIC))
    inboxes[b].wait(lambda: inboxes[b].of(uid(d), MIC))
    assert inbox_a.of(uid(d), MIC)[0][1] == b"from d"


def test_a_late_joiner_on_a_third_node_gets_the_cached_keyframe_and_requests_are_coalesced(cluster, client_factory):
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    a, b = meeting_on(client_factory, [n1, n2])
    asks = KeyframeAsks(a)
    inbox_b = Inbox(b)
    publish(a, CAMERA, 0, keyframe=True)
    for seq in range(1, 6):
        publish(a, CAMERA, seq)
    inbox_b.wait(lambda: len(inbox_b.seqs(uid(a), CAMERA)) == 6)
    assert asks.count() == 0

    c = user_on(client_factory, n3, "C")              # n3 serves no member of the room yet
    inbox_c = Inbox(c)
    joined = time.monotonic()
    c.kernel.rooms.join(a.kernel.rooms.room["number"])
    inbox_c.wait(lambda: inbox_c.of(uid(a), CAMERA), timeout=1.0)
    first, data = inbox_c.of(uid(a), CAMERA)[0]
    assert first.keyframe and first.seq == 0 and data == payload(CAMERA, 0)
    assert time.monotonic() - joined < 1.0
    asks.wait(1, timeout=1.0)                          # a fresh keyframe is asked of the publisher

    publish(a, CAMERA, 6)                              # useless to c without the fresh keyframe
    publish(a, CAMERA, 7, keyframe=True)
    publish(a, CAMERA, 8)
    inbox_c.wait(lambda: 8 in inbox_c.seqs(uid(a), CAMERA))
    assert inbox_c.seqs(uid(a), CAMERA) == [0, 7, 8]
    inbox_b.wait(lambda: 8 in inbox_b.seqs(uid(a), CAMERA))
    assert inbox_b.seqs(uid(a), CAMERA) == list(range(9))

    # loss reports from members of two other nodes: the publisher is asked ~every 300 ms, not
    # once per report nor once per node per period
    time.sleep(0.4)
    start_count = asks.count()
    for _ in range(20):
        b.kernel.rooms.request_keyframe(uid(a), CAMERA)
        c.kernel.rooms.request_keyframe(uid(a), CAMERA)
    start = time.monotonic()
    seq = 9
    while time.monotonic() - start < 1.25:             # a keeps sending deltas only
        publish(a, CAMERA, seq)
        seq += 1
        time.sleep(0.03)
    asked = [t for t, _ in asks.times[start_count:]]
    assert 3 <= len(asked) <= 5, asked
    gaps = [later - earlier for earlier, later in zip(asked, asked[1:])]
    assert min(gaps) >= 0.2, gaps
    publish(a, CAMERA, seq, keyframe=True)
    inbox_c.wait(lambda: seq in inbox_c.seqs(uid(a), CAMERA))
    count = asks.count()
    time.sleep(0.8)                                    # the keyframe came: nobody asks any more
    assert asks.count() == count


def test_pausing_and_resuming_a_stream_published_on_another_node(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    a, b = meeting_on(client_factory, [n1, n2])
    asks = KeyframeAsks(a)
    inbox_b = Inbox(b)
    publish(a, CAMERA, 0, keyframe=True)
    publish(a, MIC, 0)
    inbox_b.wait(lambda: len(inbox_b.frames) == 2)
    b.kernel.rooms.subscribe(uid(a), CAMERA, paused=True)     # b is n2's only member: n2 tells n1
    b.kernel.friends.friend_list()
    time.sleep(0.2)                                    # the pause reached n1 over the link
    crossed = status(n1)["media_frames_to_nodes"]
    publish(a, CAMERA, 1)
    publish(a, MIC, 1)
    inbox_b.wait(lambda: 1 in inbox_b.seqs(uid(a), MIC))
    assert inbox_b.seqs(uid(a), CAMERA) == [0]
    assert status(n1)["media_frames_to_nodes"] == crossed + 1, "the paused video should not cross"
    b.kernel.rooms.subscribe(uid(a), CAMERA, paused=False)     # resumed: the cached keyframe at once
    inbox_b.wait(lambda: len(inbox_b.seqs(uid(a), CAMERA)) == 2, timeout=1.0)
    assert inbox_b.seqs(uid(a), CAMERA) == [0, 0]
    asks.wait(1, timeout=1.0)                          # and a fresh one asked across the nodes
    publish(a, CAMERA, 2)
    publish(a, CAMERA, 3, keyframe=True)
    inbox_b.wait(lambda: 3 in inbox_b.seqs(uid(a), CAMERA))
    assert inbox_b.seqs(uid(a), CAMERA) == [0, 0, 3]


def test_a_stream_stops_crossing_only_once_every_member_of_the_node_paused_it(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    a, b, c = meeting_on(client_factory, [n1, n2, n2])
    inbox_b, inbox_c = Inbox(b), Inbox(c)
    publish(a, CAMERA, 0, keyframe=True)
    inbox_c.wait(lambda: inbox_c.seqs(uid(a), CAMERA) == [0])

    def crossed_after_publishing(seq: int) -> int:
        time.sleep(0.2)                                # pauses and resumes reached n1
        before = status(n1)["media_frames_to_nodes"]
        publish(a, CAMERA, seq)
        publish(a, MIC, seq)                           # audio always crosses: the marker
        inbox_b.wait(lambda: payload(MIC, seq) in [p for _, p in inbox_b.of(uid(a), MIC)])
        return status(n1)["media_frames_to_nodes"] - before

    b.kernel.rooms.subscribe(uid(a), CAMERA, paused=True)
    assert crossed_after_publishing(1) == 2            # c still wants the video
    inbox_c.wait(lambda: 1 in inbox_c.seqs(uid(a), CAMERA))
    c.kernel.rooms.subscribe(uid(a), CAMERA, paused=True)
    assert crossed_after_publishing(2) == 1            # nobody on n2 wants it: only audio crosses
    b.kernel.rooms.subscribe(uid(a), CAMERA, paused=False)
    publish(a, CAMERA, 3, keyframe=True)               # wanted again, from a keyframe on
    inbox_b.wait(lambda: 3 in inbox_b.seqs(uid(a), CAMERA))
    assert 2 not in inbox_b.seqs(uid(a), CAMERA) and 2 not in inbox_c.seqs(uid(a), CAMERA)
    assert 3 not in inbox_c.seqs(uid(a), CAMERA)       # c still paused it

def members_of(event) -> dict[int, dict]:
    return {m["user_id"]: m for m in event["room"]["members"]}


def test_media_state_screen_share_host_controls_and_room_chat_across_nodes(cluster, client_factory):
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    host, guest = meeting_on(client_factory, [n1, n2])
    inbox_host, inbox_guest = Inbox(host), Inbox(guest)

    mark = host.events.mark()
    guest.kernel.rooms.set_media_state(camera=False, microphone=True, screen=True)
    host.events.wait_for("room_members", lambda e: members_of(e)[uid(guest)]["screen"], start=mark)
    publish(guest, SCREEN, 0, keyframe=True, size=4000)       # a screen share crosses like a camera
    for seq in range(1, 5):
        publish(guest, SCREEN, seq, size=4000)
    publish(guest, MIC, 0)
    inbox_host.wait(lambda: len(inbox_host.seqs(uid(guest), SCREEN)) == 5 and inbox_host.of(uid(guest), MIC))
    assert inbox_host.seqs(uid(guest), SCREEN) == list(range(5))

    watcher = user_on(client_factory, n3, "Watcher")           # joins on a third node: the shared screen at once
    inbox_watcher = Inbox(watcher)
    watcher.kernel.rooms.join(host.kernel.rooms.room["number"])
    inbox_watcher.wait(lambda: inbox_watcher.of(uid(guest), SCREEN), timeout=1.0)
    assert inbox_watcher.seqs(uid(guest), SCREEN) == [0]
    watcher.kernel.rooms.leave()

    mark = host.events.mark()
    guest.kernel.rooms.set_media_state(camera=False, microphone=True, screen=False)   # sharing stops
    host.events.wait_for("room_members", lambda e: not members_of(e)[uid(guest)]["screen"], start=mark)
    late = user_on(client_factory, n3, "Late")
    inbox_late = Inbox(late)
    mark = guest.events.mark()
    late.kernel.rooms.join(host.kernel.rooms.room["number"])
    guest.events.wait_for("room_members", lambda e: uid(late) in members_of(e), start=mark)  # n2 knows
    publish(guest, MIC, 1)
    inbox_late.wait(lambda: inbox_late.of(uid(guest), MIC))
    assert inbox_late.of(uid(guest), SCREEN) == [], "a stale picture of a share that stopped"
    late.kernel.rooms.leave()

    host.kernel.rooms.chat("from node 1")                      # room chat both ways
    assert guest.events.wait_for("room_chat", lambda e: e["text"] == "from node 1")["user_id"] == uid(host)
    guest.kernel.rooms.chat("from node 2")
    assert host.events.wait_for("room_chat", lambda e: e["text"] == "from node 2")["user_id"] == uid(guest)

    host.kernel.rooms.mute(uid(guest))                         # host controls reach the other node
    assert guest.events.wait_for("room_mute")["by"] == uid(host)
    mark = host.events.mark()
    host.kernel.rooms.kick(uid(guest))
    assert guest.events.wait_for("room_removed")["reason"] == "kicked"
    host.events.wait_for("room_members", lambda e: set(members_of(e)) == {uid(host)}, start=mark)
    before = status(n1)["media_frames_to_nodes"]
    publish(host, MIC, 7)                                      # nobody left on another node: nothing crosses
    host.kernel.friends.friend_list()
    time.sleep(0.3)
    assert status(n1)["media_frames_to_nodes"] == before
    assert inbox_guest.seqs(uid(host), MIC) == []


@pytest.fixture
def bots():
    """make(nickname, tone, *nodes): a logged-in bot that knows these nodes (in that order)."""
    made: list[Bot] = []

    def make(nickname: str, tone: float, *nodes: ServerProcess) -> Bot:
        bot = Bot([("127.0.0.1", node.port) for node in nodes], unique_phone(), "bot password 123", nickname,
                  BotMedia(**{**BOT_MEDIA.__dict__, "tone": tone}))
        made.append(bot)
        bot.login(register=True)
        return bot
    yield make
    for bot in made:
        bot.close()


def decoded_video(receiver: Bot, sender: Bot) -> int:
    member = receiver.receiver.members.get(sender.kernel.user["id"])
    stream = member.video.get(MediaKind.CAMERA) if member else None
    return stream.stats.decoded if stream else 0


def sees(receiver: Bot, sender: Bot, at_least: int = 1) -> bool:
    return decoded_video(receiver, sender) >= at_least


def shares_decoded(bots_: list[Bot], start: int, end: int) -> dict[tuple[str, str, str], float]:
    """For each receiver, sender and medium: the share of the frames the sender captured in
    [start, end - IN_FLIGHT_US) that the receiver decoded."""
    shares = {}
    for sender in bots_:
        sid = sender.kernel.user["id"]
        video_sent = {c for c in sender.video.stats.sent_captures if start <= c < end - IN_FLIGHT_US}
        audio_sent = {c for c in sender.audio.stats.sent_captures if start <= c < end - IN_FLIGHT_US}
        for receiver in bots_:
            if receiver is sender:
                continue
            member = receiver.receiver.members[sid]
            video = set(member.video[MediaKind.CAMERA].stats.decoded_captures)
            audio = set(member.audio.decoded_captures)
            shares[(receiver.nickname, sender.nickname, "video")] = len(video & video_sent) / len(video_sent)
            shares[(receiver.nickname, sender.nickname, "audio")] = len(audio & audio_sent) / len(audio_sent)
    return shares


def test_a_meeting_of_members_on_three_nodes_decodes_every_stream_and_a_late_joiner_sees_at_once(
        cluster, bots):
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    alice, bob = bots("alice", 330.0, n1), bots("bob", 440.0, n2)
    number = alice.create(title="three nodes")
    bob.join(number)
    wait_until(lambda: sees(alice, bob) and sees(bob, alice), 10, "alice and bob see each other")
    time.sleep(1.0)

    carol = bots("carol", 550.0, n3)                  # late, on a node that serves nobody in the room yet
    carol.join(number)
    wait_until(lambda: sees(carol, alice) and sees(carol, bob), 5, "carol sees everyone")
    for sender in (alice, bob):
        first = carol.first_picture_after_join(sender.kernel.user["id"])
        assert first is not None and first < 1.0, f"carol's first picture of {sender.nickname} after {first} s"
    trio = [alice, bob, carol]
    wait_until(lambda: all(sees(r, s, 5) for r in trio for s in trio if r is not s), 10, "everyone sees everyone")

    start = now_us()
    time.sleep(8.0)
    end = now_us()
    time.sleep(IN_FLIGHT_US / 1e6)
    shares = shares_decoded(trio, start, end)
    low = {key: round(share, 3) for key, share in shares.items() if share < 0.95}
    assert not low, f"streams decoded below 95 %: {low}"


def test_a_node_killed_mid_meeting_its_members_come_back_through_another_node(cluster, bots):
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    alice = bots("alice", 330.0, n1, n3)               # on n1; knows n3 too
    bob, carol = bots("bob", 440.0, n2), bots("carol", 550.0, n3)
    number = alice.create(title="doomed node")
    bob.join(number)
    carol.join(number)
    trio = [alice, bob, carol]
    wait_until(lambda: all(sees(r, s, 5) for r in trio for s in trio if r is not s), 10, "everyone sees everyone")
    alice_id = alice.kernel.user["id"]
    mark = bob.events.mark()

    seen = {bot.nickname: {s.nickname: decoded_video(bot, s) for s in trio if s is not bot} for bot in trio}
    killed_at = time.monotonic()
    n1.kill()
    # (right after the kill her client may not have noticed yet: still "online", on n1)
    wait_until(lambda: alice.kernel.state == "online" and alice.kernel.port == n3.port, 10,
               "alice's client resumed on n3")
    # pictures again both ways within a few seconds: the others see alice come back ...
    wait_until(lambda: all(decoded_video(b, alice) >= seen[b.nickname]["alice"] + 15 for b in (bob, carol)), 6,
               "bob and carol see alice again")
    wait_until(lambda: all(decoded_video(alice, s) >= seen["alice"][s.nickname] + 15 for s in (bob, carol)), 6,
               "alice sees bob and carol again")
    back_after = time.monotonic() - killed_at
    assert back_after < 6.0, f"pictures again after {back_after:.1f} s"
    # ... still a member, now served by another node (the room never lost her)
    bob.events.wait_for("room_members", lambda e: alice_id in members_of(e)
                                and not members_of(e)[alice_id]["away"], start=mark, timeout=5)
    assert alice.rooms.room is not None and alice.rooms.room["number"] == number
    now = {(bob, carol): decoded_video(bob, carol), (carol, bob): decoded_video(carol, bob)}
    wait_until(lambda: all(decoded_video(r, s) >= n + 10 for (r, s), n in now.items()), 5,
               "bob and carol go on seeing each other")


def test_a_media_link_without_the_cluster_secret_is_refused_and_feeds_nothing(cluster, client_factory, redis_prefix):
    import socket
    from common.media import MediaHeader, media_frame
    from server.cluster.peerlink import HELLO, RECORD, media_record_header

    client, _, prefix = redis_prefix
    n1, n2 = cluster("n1"), cluster("n2")
    a, b = meeting_on(client_factory, [n1, n2])
    inbox_b = Inbox(b)
    host, port = client.hget(prefix + "links", "n2").decode().rsplit(":", 1)
    forged = media_frame(MediaHeader(uid(a), MIC, Codec.OPUS, 0, 1, 1), b"forged")
    number = int(a.kernel.rooms.room["number"])
    for secret in ("0" * 32, ""):                       # a wrong secret, then no HELLO at all
        hello = f"{secret}n1".encode()
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            if secret:
                sock.sendall(RECORD.pack(1 + len(hello), HELLO) + hello)
            sock.sendall(media_record_header(number, len(forged)) + forged)
            assert sock.recv(1) == b"", "the node should close the link"
    n2.wait_for_log("closed: the first record is not a HELLO with the cluster's link secret")
    publish(a, MIC, 0)                                  # the real link still works
    inbox_b.wait(lambda: inbox_b.of(uid(a), MIC))
    assert [p for _, p in inbox_b.of(uid(a), MIC)] == [payload(MIC, 0)]


def test_each_worker_of_a_host_takes_its_own_media_link_port():
    from server.config import ServerConfig
    from server.supervisor import worker_config
    config = ServerConfig(workers=2, link_port=8700, redis="redis://127.0.0.1:6379", db="mysql://x@127.0.0.1/db")
    assert [worker_config(config, i).link_port for i in (1, 2)] == [8700, 8701]
    assert worker_config(ServerConfig(workers=2), 2).link_port == 0      # any free port, each its own
