"""Several real server processes sharing one MySQL database and one Redis: every path that
crosses nodes (sessions and kicks, presence, friends, chat, typing, receipts, profile changes,
shared limits, a node killed mid-chat)."""
from __future__ import annotations

import threading
import time

import pytest

from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from server.cluster.directory import cluster_nodes
from tests.helpers import TestClient, wait_until
from tests.server_process import ServerProcess
from tests.social import befriend, uid, wait_session_ready
from tests.test_rooms import join_in_background

HEARTBEAT_TIMEOUT = 3.0


@pytest.fixture
def cluster(redis_prefix, mysql_url, tmp_path, client_factory, cluster_env):
    """``start(name, **env)`` starts a node (a ``ServerProcess``) of one cluster."""
    _, redis_url, prefix = redis_prefix
    nodes: list[ServerProcess] = []

    def start(name: str, **env: str) -> ServerProcess:
        proc = ServerProcess(mysql_url, tmp_path / name, env={
            "MEETING_REDIS": redis_url, "MEETING_REDIS_PREFIX": prefix, "MEETING_NODE_NAME": name,
            "MEETING_HEARTBEAT_INTERVAL": "1", "MEETING_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "MEETING_MAX_UNAUTHENTICATED_PER_ADDRESS": "10000", **cluster_env, **env})
        nodes.append(proc)
        proc.start()
        return proc

    yield start
    for proc in nodes:
        proc.stop()


def user_on(client_factory, node: ServerProcess, nickname: str, *also: ServerProcess) -> TestClient:
    """A logged-in user on ``node``; its client fails over to ``also`` (in that order)."""
    client = client_factory(node.port, more_servers=[("127.0.0.1", n.port) for n in also])
    client.register_and_login(nickname)
    wait_session_ready(client)
    return client


def same_user_on(client_factory, node: ServerProcess, other: TestClient) -> TestClient:
    client = client_factory(node.port)
    client.phone, client.password = other.phone, other.password
    return client


def round_trip(client: TestClient) -> None:
    """One ordered request on the client's connection: whatever the server sent before is in."""
    client.kernel.friends.friend_list()


def test_friends_chat_typing_receipts_and_profile_cross_nodes(cluster, redis_prefix, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")

    befriend(alice, bob)                       # request, answer and FRIEND_ADDED cross nodes
    _, redis_url, prefix = redis_prefix
    # the status each node registers (every lease tick)
    wait_until(lambda: all(cluster_nodes(redis_url, prefix)[n]["users"] == 1 for n in ("n1", "n2")), 5,
               "each node registering its one user")
    nodes = cluster_nodes(redis_url, prefix)
    assert {n: (info["alive"], info["users"], info["advertise"]) for n, info in nodes.items()} == {
        "n1": (True, 1, f"127.0.0.1:{n1.port}"), "n2": (True, 1, f"127.0.0.1:{n2.port}")}
    assert alice.kernel.friends.is_online(uid(bob)) and bob.kernel.friends.is_online(uid(alice))
    assert [f["online"] for f in alice.kernel.friends.friend_list()] == [True]

    ack = alice.kernel.chat.send_and_wait(uid(bob), "hello from node 1")
    got = bob.events.wait_for("chat_message", lambda e: e["message"]["id"] == ack["id"])["message"]
    assert got["text"] == "hello from node 1"
    alice.events.wait_for("chat_status", lambda e: e["status"] == "delivered" and ack["id"] in e["ids"])
    assert bob.kernel.chat.mark_read(uid(alice)) == 1
    alice.events.wait_for("chat_status", lambda e: e["status"] == "read")

    bob.kernel.chat.typing(uid(alice))
    assert alice.events.wait_for("typing")["user_id"] == uid(bob)
    alice.kernel.chat.typing(uid(bob))            # the friendship reached alice's node's cache too
    assert bob.events.wait_for("typing")["user_id"] == uid(alice)

    bob.kernel.profile.update(signature="on another node")
    changed = alice.events.wait_for("profile_changed", lambda e: e["user"]["id"] == uid(bob))
    assert changed["user"]["signature"] == "on another node"

    mark, bob_id = alice.events.mark(), uid(bob)
    bob.kernel.logout()
    alice.events.wait_for("friend_offline", lambda e: e["user_id"] == bob_id, start=mark)
    assert [f["online"] for f in alice.kernel.friends.friend_list()] == [False]
    again = same_user_on(client_factory, n1, bob)      # back, now on alice's node
    again.kernel.login(bob.phone, bob.password)
    alice.events.wait_for("friend_online", lambda e: e["user_id"] == bob_id, start=mark)


def test_chat_order_between_two_nodes_is_kept(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
    befriend(alice, bob)
    texts = [f"line {i}" for i in range(200)]
    for text in texts:
        alice.kernel.chat.send(uid(bob), text)
    bob.events.wait_for("chat_message", lambda e: e["message"]["text"] == texts[-1], timeout=30)
    got = [e["message"]["text"] for e in bob.events.events if e.kind == "chat_message"]
    assert got == texts


def test_a_login_on_another_node_kicks_the_session_and_its_token_is_dead_first(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    friend = user_on(client_factory, n2, "Friend")
    first = user_on(client_factory, n1, "Roaming")
    befriend(first, friend)
    for round_ in range(5):
        old_node, new_node = (n1, n2) if round_ % 2 == 0 else (n2, n1)
        token = first.kernel.token
        mark = friend.events.mark()
        second = same_user_on(client_factory, new_node, first)
        second.kernel.login(first.phone, first.password)
        kicked = first.events.wait_for("kicked")
        assert kicked["reason"]
        # The token of the kicked session no longer works, anywhere.
        probe = client_factory(old_node.port)
        with pytest.raises(ApiError) as refused:
            probe.kernel.resume(token)
        assert refused.value.code == ErrorCode.INVALID_TOKEN
        round_trip(friend)
        assert friend.events.count("friend_offline", lambda e: e["user_id"] == uid(first)) == 0, \
            "a session that moved did not go offline"
        assert friend.kernel.friends.is_online(uid(first))
        first.close()
        first = second


def test_racing_logins_on_two_nodes_leave_exactly_one_session(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    owner = user_on(client_factory, n1, "Owner")
    owner.close()
    for round_ in range(10):
        clients = [same_user_on(client_factory, node, owner) for node in (n1, n2)]
        for client in clients:
            client.kernel.connect()
        barrier = threading.Barrier(2)
        errors: list[Exception] = []

        def login(client: TestClient) -> None:
            barrier.wait()
            try:
                client.kernel.login(owner.phone, owner.password)
            except Exception as exc:      # a kick may arrive before the login reply
                errors.append(exc)

        threads = [threading.Thread(target=login, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        wait_until(lambda: sum(1 for c in clients if c.events.count("kicked")) == 1, 10,
                   f"round {round_}: exactly one of the sessions kicked")
        survivor = next(c for c in clients if not c.events.count("kicked"))
        round_trip(survivor)              # the survivor's session works
        for client in clients:
            client.close()


def test_a_per_user_limit_and_the_login_throttle_are_shared_by_the_nodes(cluster, client_factory):
    limits = {"MEETING_LOGIN_FAILURES_PER_ACCOUNT": "3", "MEETING_FRIEND_REQUESTS_PER_MINUTE": "4"}
    n1, n2 = cluster("n1", **limits), cluster("n2", **limits)
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")

    def ask_nobody(client: TestClient) -> ErrorCode:
        with pytest.raises(ApiError) as refused:
            client.kernel.friends.add(user_id=2**31 - 1)
        return refused.value.code

    assert [ask_nobody(alice) for _ in range(2)] == [ErrorCode.USER_NOT_FOUND] * 2
    moved = same_user_on(client_factory, n2, alice)
    moved.kernel.login(alice.phone, alice.password)
    assert [ask_nobody(moved) for _ in range(3)] == [ErrorCode.USER_NOT_FOUND] * 2 + [ErrorCode.RATE_LIMITED]

    wrong = [client_factory(node.port) for node in (n1, n2, n1, n2)]
    for client in wrong[:3]:
        with pytest.raises(ApiError) as failed:
            client.kernel.login(bob.phone, "not the password")
        assert failed.value.code == ErrorCode.WRONG_CREDENTIALS
    with pytest.raises(ApiError) as throttled:
        wrong[3].kernel.login(bob.phone, bob.password)
    assert throttled.value.code == ErrorCode.TOO_MANY_ATTEMPTS


def test_a_node_killed_mid_chat_loses_nothing_acknowledged(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
    befriend(alice, bob)
    acks: list[dict] = []
    stop = threading.Event()

    def chat() -> None:
        n = 0
        while not stop.is_set():
            try:
                acks.append(alice.kernel.chat.send_and_wait(uid(bob), f"mid-chat {n}", timeout=10))
            except (ApiError, TimeoutError, ConnectionError):
                return
            n += 1

    sender = threading.Thread(target=chat)
    sender.start()
    wait_until(lambda: len(acks) >= 20, 30, "20 messages acknowledged before the kill")
    token = bob.kernel.token
    mark = alice.events.mark()
    killed_at = time.monotonic()
    n2.kill()
    alice.events.wait_for("friend_offline", lambda e: e["user_id"] == uid(bob), start=mark,
                          timeout=HEARTBEAT_TIMEOUT + 5)
    assert time.monotonic() - killed_at < HEARTBEAT_TIMEOUT + 1   # reaped within heartbeat_timeout; +1 s to deliver
    stop.set()
    sender.join(15)
    bob.close()

    back = same_user_on(client_factory, n1, bob)          # bob's client moves to a live node
    mark = alice.events.mark()
    back.kernel.resume(token)
    alice.events.wait_for("friend_online", lambda e: e["user_id"] == uid(bob), start=mark)
    stored: set[int] = set()
    page = back.kernel.chat.history(uid(alice), limit=100)
    stored.update(m["id"] for m in page["messages"])
    while page["more"]:
        page = back.kernel.chat.history(uid(alice), before=page["before"], limit=100)
        stored.update(m["id"] for m in page["messages"])
    assert {a["id"] for a in acks} <= stored, "an acknowledged message was lost"


@pytest.fixture
def own_redis(tmp_path):
    from tests.cluster_helpers import RedisProcess
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def nodes_on_own_redis(own_redis, mysql_url, tmp_path):
    """Two started nodes, n1 and n2, of a cluster on the test's own redis-server (``own_redis``,
    which the test may stop and start)."""
    env = {"MEETING_REDIS": own_redis.url, "MEETING_HEARTBEAT_INTERVAL": "1",
           "MEETING_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT)}
    nodes = [ServerProcess(mysql_url, tmp_path / name, env={**env, "MEETING_NODE_NAME": name}) for name in ("n1", "n2")]
    try:
        for node in nodes:
            node.start()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def test_redis_restarted_nodes_answer_clearly_meanwhile_and_register_again(own_redis, nodes_on_own_redis,
                                                                           client_factory):
    n1, n2 = nodes_on_own_redis
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
    carol = client_factory(n2.port)
    carol.kernel.register(carol.phone, carol.password, "Carol")
    befriend(alice, bob)
    number = alice.kernel.rooms.create("survives Redis")["number"]
    bob.kernel.rooms.join(number)

    own_redis.stop()
    ack = alice.kernel.chat.send_and_wait(uid(bob), "while Redis is down")   # stored: acknowledged
    with pytest.raises(ApiError) as refused:
        carol.kernel.login(carol.phone, carol.password)
    assert refused.value.code == ErrorCode.UNAVAILABLE
    assert refused.value.details.get("retry_after")
    listed = alice.kernel.request(PacketType.FRIEND_LIST, {})["friends"]   # served meanwhile
    assert [(f["id"], f["online"]) for f in listed] == [(uid(bob), False)], "unknown on another node"

    own_redis.start()                                     # empty: every key is gone
    n1.wait_for_log("registered again with Redis: 1 of 1 sessions kept", timeout=10)
    n2.wait_for_log("registered again with Redis: 1 of 1 sessions kept", timeout=10)
    n1.wait_for_log("resubscribed", timeout=10)          # both listen to their channels again
    n2.wait_for_log("resubscribed", timeout=10)
    late = alice.kernel.chat.send_and_wait(uid(bob), "after Redis came back")
    bob.events.wait_for("chat_message", lambda e: e["message"]["id"] == late["id"])
    carol.kernel.login(carol.phone, carol.password)
    mark = alice.events.mark()
    carol.kernel.rooms.join(number)                       # the room was registered again
    alice.events.wait_for("room_members", lambda e: {m["user_id"] for m in e["room"]["members"]} ==
                          {uid(alice), uid(bob), uid(carol)}, start=mark)
    history = bob.kernel.chat.history(uid(alice))
    assert ack["id"] in {m["id"] for m in history["messages"]}, "the message sent meanwhile was kept"
    assert n1.running and n2.running


def members_of(event) -> dict[int, dict]:
    return {m["user_id"]: m for m in event["room"]["members"]}


def test_rooms_are_shared_by_the_nodes(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    host, guest = user_on(client_factory, n1, "Host"), user_on(client_factory, n2, "Guest")
    late = user_on(client_factory, n2, "Late")
    room = host.kernel.rooms.create("stand-up", password="s3cret")
    number = room["number"]

    with pytest.raises(ApiError) as wrong:
        guest.kernel.rooms.join(number, "guess")
    assert wrong.value.code == ErrorCode.WRONG_ROOM_PASSWORD
    with pytest.raises(ApiError) as missing:
        guest.kernel.rooms.join("123456789" if number != "123456789" else "987654321", "")
    assert missing.value.code == ErrorCode.NO_SUCH_ROOM
    joined = guest.kernel.rooms.join(number, "s3cret")
    assert set(members_of({"room": joined})) == {uid(host), uid(guest)}
    host.events.wait_for("room_members", lambda e: uid(guest) in members_of(e))

    guest.kernel.rooms.chat("hello from node 2")
    said = host.events.wait_for("room_chat", lambda e: e["text"] == "hello from node 2")
    assert said["user_id"] == uid(guest)

    host.kernel.rooms.lock(True)                   # a locked room sends newcomers to its waiting room
    knock = join_in_background(late, number, "s3cret")
    host.events.wait_for("room_waiting_list", lambda e: [w["user_id"] for w in e["waiting"]] == [uid(late)])
    host.kernel.rooms.admit(uid(late), False)
    with pytest.raises(ApiError) as locked:
        knock.result(10)
    assert locked.value.code == ErrorCode.ROOM_LOCKED
    host.kernel.rooms.lock(False)

    host.kernel.rooms.hand_over(uid(guest))        # to the member on the other node, and back
    guest.events.wait_for("room_members", lambda e: e["room"]["host_id"] == uid(guest))
    mark = host.events.mark()
    guest.kernel.rooms.hand_over(uid(host))
    host.events.wait_for("room_members", lambda e: e["room"]["host_id"] == uid(host), start=mark)

    host.kernel.rooms.mute(uid(guest))
    assert guest.events.wait_for("room_mute")["by"] == uid(host)
    host.kernel.rooms.kick(uid(guest))
    assert guest.events.wait_for("room_removed")["reason"] == "kicked"
    host.events.wait_for("room_members", lambda e: set(members_of(e)) == {uid(host)})
    with pytest.raises(ApiError) as not_in:
        guest.kernel.rooms.chat("still here?")
    assert not_in.value.code == ErrorCode.NOT_IN_ROOM

    late.kernel.rooms.join(number, "s3cret")
    mark = late.events.mark()
    host.kernel.rooms.leave()                      # the host on n1 leaves: the member on n2 hosts
    passed = late.events.wait_for("room_members", lambda e: e["room"]["host_id"] == uid(late), start=mark)
    assert set(members_of(passed)) == {uid(late)}
    with pytest.raises(ApiError) as in_room:
        late.kernel.rooms.create("another")
    assert in_room.value.code == ErrorCode.ALREADY_IN_ROOM
    late.kernel.rooms.leave()
    with pytest.raises(ApiError) as closed:
        host.kernel.rooms.join(number, "s3cret")
    assert closed.value.code == ErrorCode.NO_SUCH_ROOM, "the room closed with its last member"

    number = host.kernel.rooms.create("ended by the host")["number"]
    guest.kernel.rooms.join(number)
    host.kernel.rooms.end()                        # ends it for the member on the other node too
    guest.events.wait_for("room_closed", lambda e: "ended" in e["message"])
    with pytest.raises(ApiError) as ended:
        late.kernel.rooms.join(number)
    assert ended.value.code == ErrorCode.NO_SUCH_ROOM


def test_a_member_who_drops_comes_back_on_another_node_within_the_grace(cluster, client_factory):
    n1, n2 = cluster("n1", MEETING_ROOM_GRACE="30"), cluster("n2", MEETING_ROOM_GRACE="30")
    host, guest = user_on(client_factory, n1, "Host"), user_on(client_factory, n2, "Guest")
    number = host.kernel.rooms.create("grace")["number"]
    guest.kernel.rooms.join(number)
    token = guest.kernel.token
    guest.close()                                              # the connection drops
    host.events.wait_for("room_members", lambda e: members_of(e).get(uid(host)) and
                         members_of(e).get(uid(guest), {}).get("away") is True)

    back = same_user_on(client_factory, n1, guest)             # comes back on the host's node
    mark = host.events.mark()
    back.kernel.resume(token)
    host.events.wait_for("room_members", lambda e: members_of(e).get(uid(guest), {}).get("away") is False,
                         start=mark)
    with pytest.raises(ApiError) as kept:
        back.kernel.rooms.join(number)
    assert kept.value.code == ErrorCode.ALREADY_IN_ROOM and kept.value.details["number"] == number
    back.kernel.rooms.chat("back again")
    host.events.wait_for("room_chat", lambda e: e["text"] == "back again")


def test_the_members_of_a_killed_node_leave_their_rooms_and_the_host_passes(cluster, client_factory):
    n1, n2 = cluster("n1", MEETING_ROOM_GRACE="2"), cluster("n2", MEETING_ROOM_GRACE="2")
    host, guest = user_on(client_factory, n2, "Host"), user_on(client_factory, n1, "Guest")
    number = host.kernel.rooms.create("doomed node")["number"]
    guest.kernel.rooms.join(number)
    host_id = uid(host)
    mark = guest.events.mark()
    n2.kill()
    passed = guest.events.wait_for("room_members", lambda e: e["room"]["host_id"] == uid(guest), start=mark,
                                   timeout=HEARTBEAT_TIMEOUT + 5)
    assert members_of(passed)[host_id]["away"] is True
    gone = guest.events.wait_for("room_members", lambda e: host_id not in members_of(e), start=mark, timeout=10)
    assert set(members_of(gone)) == {uid(guest)}


def test_a_node_stopped_cleanly_is_reaped_at_once_and_its_users_go_offline(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
    befriend(alice, bob)
    bob_id, mark = uid(bob), alice.events.mark()
    stopped_at = time.monotonic()
    assert n2.terminate() == 0
    alice.events.wait_for("friend_offline", lambda e: e["user_id"] == bob_id, start=mark, timeout=5)
    assert time.monotonic() - stopped_at < HEARTBEAT_TIMEOUT
    assert [f["online"] for f in alice.kernel.request(PacketType.FRIEND_LIST, {})["friends"]] == [False]
