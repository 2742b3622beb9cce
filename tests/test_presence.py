"""Presence: FRIEND_ONLINE / FRIEND_OFFLINE fan-out, presence in the friend list, kicks,
heartbeat timeouts; 50 friends online at once."""
from __future__ import annotations

import time

from common.packets import PacketType
from tests.helpers import HELLO, RESULT, barrier, cut_connection, raw_connect, raw_request
from tests.social import uid, wait_session_ready

FRIENDS = 50


def test_fifty_friends_get_exactly_one_online_and_one_offline_each(storage, server_factory, client_factory):
    running = server_factory(storage=storage)
    star = client_factory(running.port)
    star.kernel.register(star.phone, star.password, "Star")
    star_id = storage.get_user_by_phone(star.phone).id
    friends = []
    for n in range(FRIENDS):
        friend = client_factory(running.port)
        friend.register_and_login(f"fan {n}")
        storage.add_friendship(star_id, uid(friend), 1)
        friends.append(friend)
    for friend in friends:
        wait_session_ready(friend)
    marks = [f.events.mark() for f in friends]

    started = time.monotonic()
    star.kernel.login(star.phone, star.password)
    for friend, mark in zip(friends, marks):
        friend.events.wait_for("friend_online", lambda e: e["user_id"] == star_id, timeout=1.0, start=mark)
    online_after = time.monotonic() - started
    wait_session_ready(star)
    assert all(f["online"] for f in star.kernel.friends.friend_list())
    assert len(star.kernel.friends.friend_list()) == FRIENDS

    marks = [f.events.mark() for f in friends]
    started = time.monotonic()
    star.close()                                   # the connection drops, no logout
    for friend, mark in zip(friends, marks):
        friend.events.wait_for("friend_offline", lambda e: e["user_id"] == star_id, timeout=1.0, start=mark)
    offline_after = time.monotonic() - started
    assert online_after < 1.0 and offline_after < 1.0

    # exactly one of each per friend, and nothing more arrives
    for friend in friends:
        barrier(friend)
        assert friend.events.count("friend_online", lambda e: e["user_id"] == star_id) == 1
        assert friend.events.count("friend_offline", lambda e: e["user_id"] == star_id) == 1
        assert not friend.kernel.friends.is_online(star_id)
    status = running.server.status()
    assert status["presence_online_events"] == FRIENDS and status["presence_offline_events"] == FRIENDS


def test_list_has_presence_kick_is_silent_logout_is_offline(storage, server_factory, client_factory):
    running = server_factory(storage=storage)
    a, b, c = (client_factory(running.port) for _ in range(3))
    for client, name in ((a, "Alice"), (b, "Bob"), (c, "Carol")):
        client.kernel.register(client.phone, client.password, name)
    ids = {name: storage.get_user_by_phone(cl.phone).id for name, cl in (("a", a), ("b", b), ("c", c))}
    storage.add_friendship(ids["a"], ids["b"], 1)
    storage.add_friendship(ids["a"], ids["c"], 1)
    b.kernel.login(b.phone, b.password)
    wait_session_ready(b)
    assert b.kernel.friends.friend_list()[0]["online"] is False

    a.kernel.login(a.phone, a.password)
    wait_session_ready(a)
    presence = {f["id"]: f["online"] for f in a.kernel.friends.friend_list()}
    assert presence == {ids["b"]: True, ids["c"]: False}
    b.events.wait_for("friend_online", lambda e: e["user_id"] == ids["a"])
    assert b.kernel.friends.is_online(ids["a"])

    # Alice's connection breaks; her client reconnects and resumes: offline, then online again
    mark = b.events.mark()
    cut_connection(a.kernel, "test: the network went away")
    b.events.wait_for("friend_offline", lambda e: e["user_id"] == ids["a"], start=mark)
    a.events.wait_for("reconnected")
    b.events.wait_for("friend_online", lambda e: e["user_id"] == ids["a"], start=mark)
    assert b.kernel.friends.is_online(ids["a"])

    # Alice logs in from another place: the old session is kicked, Bob sees nothing
    mark = b.events.mark()
    elsewhere = client_factory(running.port)
    elsewhere.kernel.login(a.phone, a.password)
    a.events.wait_for("kicked")
    wait_session_ready(elsewhere)
    barrier(elsewhere)                                        # its login has settled on the server
    barrier(b)
    assert b.kernel.friends.is_online(ids["a"])
    assert [e.kind for e in b.events.events[mark:] if e.kind in ("friend_online", "friend_offline")] == []

    # a logout is an offline event
    assert len(elsewhere.kernel.friends.friend_list()) == 2
    elsewhere.kernel.logout()
    assert elsewhere.kernel.friends.friend_list() == []      # nothing of Alice's is left on the client
    b.events.wait_for("friend_offline", lambda e: e["user_id"] == ids["a"], timeout=1.0, start=mark)
    assert not b.kernel.friends.is_online(ids["a"])


def test_heartbeat_timeout_is_an_offline_event(storage, server_factory, client_factory):
    running = server_factory(storage=storage, heartbeat_interval=0.5, heartbeat_timeout=1.5)
    a, b = client_factory(running.port), client_factory(running.port)
    a.kernel.register(a.phone, a.password, "Silent")
    b.register_and_login("Watcher")
    a_id = storage.get_user_by_phone(a.phone).id
    storage.add_friendship(a_id, uid(b), 1)

    sock = raw_connect(running.port)          # logs in, then never says anything again
    try:
        assert raw_request(sock, PacketType.HELLO, HELLO).type == RESULT
        assert raw_request(sock, PacketType.LOGIN, {"phone": a.phone, "password": a.password},
                           request_id=2).type == RESULT
        b.events.wait_for("friend_online", lambda e: e["user_id"] == a_id)
        b.events.wait_for("friend_offline", lambda e: e["user_id"] == a_id, timeout=4.0)
    finally:
        sock.close()
