"""A member whose session moves to another node mid-meeting (its node killed, or a login there)
is shown to the others as after a drop on one process: away, then back, in the same place,
still host, with the same media state, and never twice."""
from __future__ import annotations

from tests.server_process import ServerProcess
from tests.social import uid
from tests.test_cluster import cluster, members_of, same_user_on, user_on  # noqa: F401
from tests.test_rooms import member_ids

GRACE = {"MEETING_ROOM_GRACE": "30"}


def meeting(client_factory, mover_node: ServerProcess, others_node: ServerProcess) -> tuple:
    """The mover (the host, camera and microphone on) on one node, Ann and Bob on the other."""
    mover = user_on(client_factory, mover_node, "Mover")
    ann, bob = user_on(client_factory, others_node, "Ann"), user_on(client_factory, others_node, "Bob")
    number = mover.kernel.rooms.create("moving")["number"]
    ann.kernel.rooms.join(number)
    bob.kernel.rooms.join(number)
    mover.kernel.rooms.set_media_state(True, True, False)
    for other in (ann, bob):
        other.events.wait_for("room_members", lambda e: len(e["room"]["members"]) == 3
                              and members_of(e)[uid(mover)]["camera"] is True, timeout=5)
    return mover, ann, bob, number


def mover_state(event, mover) -> dict:
    return members_of(event)[uid(mover)]


def assert_away_then_back(other, mover, order: list[int], start: int) -> None:
    """What ``other`` was shown since ``start``: the mover away, then back; in every list the
    same members in the same order (nobody twice), the mover host with camera and microphone
    on; and the client's room shows the mover present."""
    away = other.events.wait_for("room_members", lambda e: mover_state(e, mover)["away"] is True,
                                 start=start, timeout=10)
    after_away = next(i for i, e in enumerate(other.events.events) if e is away) + 1
    other.events.wait_for("room_members", lambda e: mover_state(e, mover)["away"] is False,
                          start=after_away, timeout=10)
    shown = [e for e in other.events.events[start:] if e.kind == "room_members"]
    for event in shown:
        assert member_ids(event["room"]) == order, f"members shown: {member_ids(event['room'])}"
        assert event["room"]["host_id"] == uid(mover)
        state = mover_state(event, mover)
        assert (state["camera"], state["microphone"], state["screen"]) == (True, True, False)
    seen = other.kernel.rooms.room
    assert member_ids(seen) == order and seen["host_id"] == uid(mover)
    assert members_of({"room": seen})[uid(mover)]["away"] is False


def test_a_member_whose_node_is_killed_is_seen_away_then_back_on_the_node_it_resumes_on(cluster, client_factory):
    node_a, node_b = cluster("a", **GRACE), cluster("b", **GRACE)
    mover, ann, bob, number = meeting(client_factory, node_b, node_a)
    order = [uid(mover), uid(ann), uid(bob)]
    marks = {ann: ann.events.mark(), bob: bob.events.mark()}
    mover.kernel.servers[:] = [("127.0.0.1", node_a.port)]    # its client fails over to node a
    log_start = len(node_a.log.splitlines())
    node_b.kill()
    mover.events.wait_for("reconnected", timeout=10)
    for other in (ann, bob):
        assert_away_then_back(other, mover, order, marks[other])
    assert mover.kernel.rooms.room["number"] == number
    # node b's lease runs out afterwards: its users are reaped, but the mover (on node a now)
    # stays present and host
    node_a.wait_for_log("node b stopped renewing its lease", timeout=15, start=log_start)
    ann.kernel.rooms.chat("still here?")
    mover.events.wait_for("room_chat", lambda e: e["text"] == "still here?", timeout=5)
    shown = [e for e in ann.events.events[marks[ann]:] if e.kind == "room_members"]
    assert mover_state(shown[-1], mover)["away"] is False and shown[-1]["room"]["host_id"] == uid(mover)
    assert [mover_state(e, mover)["away"] for e in shown].count(True) == 1


def test_a_login_on_another_node_is_seen_away_then_back(cluster, client_factory):
    node_a, node_b = cluster("a", **GRACE), cluster("b", **GRACE)
    mover, ann, bob, number = meeting(client_factory, node_b, node_a)
    order = [uid(mover), uid(ann), uid(bob)]
    for attempt in range(3):                                   # back and forth between the nodes
        marks = {ann: ann.events.mark(), bob: bob.events.mark()}
        node = node_a if attempt % 2 == 0 else node_b
        device = same_user_on(client_factory, node, mover)
        device.kernel.login(mover.phone, mover.password)
        mover.events.wait_for("kicked", timeout=10)
        adopted = device.events.wait_for("room_members", timeout=10)
        assert adopted["room"]["number"] == number
        for other in (ann, bob):
            assert_away_then_back(other, mover, order, marks[other])
        mover = device
