"""Media across the nodes of a cluster (real server processes sharing MySQL and Redis): the
cascaded relay sends a frame once to each other node with members in the room, each node
fans out with its own keyframe cache, keyframe requests reach the publisher's node coalesced,
host controls, screen share and room chat work whatever node each member is on, and the
members of a node killed mid-meeting fail over and get pictures again."""
from __future__ import annotations

import time

import pytest

from common.media import Codec, MediaKind
from server.admin import query_status
from tests.server_process import ServerProcess
from tests.test_cluster import cluster, user_on  # noqa: F401  (the cluster fixture)
from tests.test_relay import CAMERA, MIC, Inbox, KeyframeAsks, payload, publish, uid

SCREEN = MediaKind.SCREEN


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
