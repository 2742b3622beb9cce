"""The cluster's shared state against a real Redis: the session directory, node leases and
reaping, the node bus, shared rate limits and login throttles."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from server.cluster.bus import FILE_CHUNK, KICK, MAX_BATCH_BYTES, TO_USER, NodeBus, decode_records, encode_record
from server.cluster.directory import Holder, NodeRegistry, SessionDirectory
from server.cluster.limits import SessionTokenBucket, SharedTokenBucket, SharedWindow
from server.cluster.store import Keys, connect
from tests.helpers import wait_until


@pytest.fixture
def cluster(redis_prefix):
    client, url, prefix = redis_prefix
    redis = connect(url)
    yield redis, Keys(prefix)
    redis.close()


def test_bind_returns_the_holder_it_replaced_on_any_node(cluster):
    redis, keys = cluster
    a, b = SessionDirectory(redis, keys, "a"), SessionDirectory(redis, keys, "b")
    assert a.bind(7, 1, "t1") is None
    assert b.bind(7, 5, "t2") == Holder("a", 1, "t1")
    assert a.holder(7) == Holder("b", 5, "t2")
    assert not a.unbind(7, 1, "t1"), "a replaced session must not unbind its successor"
    assert redis.smembers(keys.node_users("a")) == set()
    assert redis.smembers(keys.node_users("b")) == {b"7"}
    assert b.online_among([7, 8]) == {7}
    assert b.unbind(7, 5, "t2")
    assert a.holder(7) is None and a.online_among([7]) == set()


def test_racing_binds_leave_exactly_one_holder_and_every_loser_learns_its_successor(cluster):
    redis, keys = cluster
    nodes = [SessionDirectory(redis, keys, f"n{i}") for i in range(4)]
    for round_ in range(30):
        user = 1000 + round_
        replaced: list[Holder | None] = [None] * len(nodes)
        barrier = threading.Barrier(len(nodes))

        def login(i: int) -> None:
            barrier.wait()
            replaced[i] = nodes[i].bind(user, i, f"tok{i}")

        threads = [threading.Thread(target=login, args=(i,)) for i in range(len(nodes))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        winner = nodes[0].holder(user)
        # Every session but the winner was replaced by exactly one later bind: a chain.
        kicked = [h for h in replaced if h is not None]
        assert len(kicked) == len(nodes) - 1
        assert sorted(h.conn_id for h in kicked + [winner]) == list(range(len(nodes)))
        holders = [n for n in range(len(nodes)) if redis.sismember(keys.node_users(f"n{n}"), user)]
        assert holders == [int(winner.node[1:])]


def test_a_node_whose_lease_ran_out_is_reaped_once_with_its_sessions(cluster):
    redis, keys = cluster
    dir_a, dir_b = SessionDirectory(redis, keys, "a"), SessionDirectory(redis, keys, "b")
    reg_a, reg_b = NodeRegistry(redis, keys, "a", 0.3), NodeRegistry(redis, keys, "b", 30)
    reg_a.renew({"started": 1, "users": 2})
    reg_b.renew({"started": 1, "users": 0})
    dir_a.bind(1, 1, "x")
    dir_a.bind(2, 2, "y")
    dir_b.bind(2, 9, "z")          # user 2 moved to b already: not a's to lose
    assert reg_b.dead_nodes() == [] and reg_b.reap("a") == []
    wait_until(lambda: reg_b.dead_nodes() == ["a"], 5, "the lease running out")
    assert reg_b.reap("a") == [1]
    assert reg_b.reap("a") == [], "a second reaper gets nothing"
    assert dir_b.holder(1) is None and dir_b.holder(2) == Holder("b", 9, "z")
    assert set(reg_b.nodes()) == {"b"}


def test_records_round_trip():
    records = [(TO_USER, 5, b"hello"), (KICK, 2**32 - 1, b""), (TO_USER, 0, bytes(range(256)))]
    data = b"".join(encode_record(*r) for r in records)
    assert decode_records(data) == records


class FakeReactor:
    """Runs the bus's call_soon at the end of a 'loop iteration' the test drives."""

    def __init__(self) -> None:
        self.soon: list = []
        self.received: list = []
        self.event = threading.Condition()

    def call_soon(self, fn, *args) -> None:
        self.soon.append((fn, args))

    def iteration(self) -> None:
        calls, self.soon = self.soon, []
        for fn, args in calls:
            fn(*args)

    def call_soon_threadsafe(self, fn, *args) -> None:
        with self.event:
            fn(*args)
            self.event.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list:
        with self.event:
            assert self.event.wait_for(lambda: len(self.received) >= count, timeout), \
                f"{len(self.received)} of {count} records arrived"
            return list(self.received)


def make_bus(redis, keys, node, reactor: FakeReactor) -> NodeBus:
    bus = NodeBus(redis, keys, node, call_soon=reactor.call_soon,
                  call_soon_threadsafe=reactor.call_soon_threadsafe,
                  deliver=reactor.received.extend, on_reconnect=lambda: None)
    bus.start()
    return bus


def test_events_reach_the_node_holding_each_user_in_order_and_in_batches(cluster):
    redis, keys = cluster
    ra, rb, rc = FakeReactor(), FakeReactor(), FakeReactor()
    buses = [make_bus(redis, keys, n, r) for n, r in (("a", ra), ("b", rb), ("c", rc))]
    try:
        directory = SessionDirectory(redis, keys, "b")
        directory.bind(20, 1, "t")
        SessionDirectory(redis, keys, "c").bind(30, 1, "t")
        sender = buses[0]
        for i in range(300):
            sender.send_to_users([20, 30, 99], TO_USER, f"m{i}".encode())   # 99 is offline: skipped
            if i % 100 == 99:
                ra.iteration()
        sender.send_to_node("c", KICK, 4, b"bye")
        ra.iteration()
        got_b = rb.wait_for(300)
        got_c = rc.wait_for(301)
        assert [p for _, _, p in got_b] == [f"m{i}".encode() for i in range(300)]
        assert {u for _, u, _ in got_b} == {20}
        assert got_c[-1] == (KICK, 4, b"bye")
        assert [p for _, _, p in got_c[:300]] == [f"m{i}".encode() for i in range(300)]
        # the publisher counts after its script returned
        wait_until(lambda: sender.published_records >= 3 * 300 + 1, 5, "the publisher counting every record")
        assert sender.published_records == 3 * 300 + 1
        assert sender.published_batches <= 3, "each reactor iteration publishes one batch"
        assert rb.received and not ra.received
    finally:
        for bus in buses:
            bus.stop()


def test_a_burst_of_large_records_is_cut_into_bounded_script_calls_and_arrives_whole_in_order(cluster):
    redis, keys = cluster
    ra, rb = FakeReactor(), FakeReactor()
    sender, receiver = make_bus(redis, keys, "a", ra), make_bus(redis, keys, "b", rb)
    calls: list[int] = []        # bytes of records per script call
    route = sender._route

    def counting_route(keys, args):
        calls.append(sum(len(arg) for arg in args[3::2]))
        return route(keys=keys, args=args)
    sender._route = counting_route
    try:
        SessionDirectory(redis, keys, "b").bind(20, 1, "t")
        payloads = [bytes([i]) * 200_000 for i in range(24)]     # ~4.6 MiB in one iteration
        for payload in payloads:
            sender.send_to_users([20], FILE_CHUNK, payload)
        ra.iteration()
        got = rb.wait_for(len(payloads), timeout=20)
        assert [p for _, _, p in got] == payloads
        assert len(calls) >= 5 and max(calls) <= MAX_BATCH_BYTES, calls
    finally:
        sender.stop()
        receiver.stop()


def test_a_rate_limit_is_the_same_however_many_nodes_share_it(cluster):
    redis, keys = cluster
    nodes = [SharedTokenBucket(redis, keys, "messages", 10) for _ in range(4)]
    allowed = sum(1 for i in range(40) if nodes[i % 4].take(42) == 0.0)
    assert allowed == 10
    wait = nodes[0].take(42)
    assert 5.0 < wait <= 6.1       # one token per 6 s at 10 per minute
    assert nodes[1].take(43) == 0.0, "other users are not affected"
    assert sum(n.refused for n in nodes) == 31


def test_login_throttles_count_failures_from_every_node(cluster):
    redis, keys = cluster
    a, b = (SharedWindow(redis, keys, "account", 3, 60.0) for _ in range(2))
    a.add("phone")
    b.add("phone")
    assert a.retry_after("phone") == 0.0
    a.add("phone")
    assert 59.0 < b.retry_after("phone") <= 60.0
    b.clear("phone")
    assert a.retry_after("phone") == 0.0
    assert [a.hit("x"), b.hit("x"), a.hit("x")] == [0.0, 0.0, 0.0]
    assert b.hit("x") > 0
    a.release("x")                       # the last attempt succeeded: it does not count
    assert b.hit("x") == 0.0


def test_limits_fall_back_to_the_node_while_redis_is_unreachable(cluster):
    redis, keys = cluster
    dead = connect("redis://127.0.0.1:1/0")
    bucket = SharedTokenBucket(dead, keys, "messages", 2)
    window = SharedWindow(dead, keys, "account", 1, 60.0)
    assert [bucket.take(1), bucket.take(1)] == [0.0, 0.0]
    assert bucket.take(1) > 0
    window.add("p")
    assert window.retry_after("p") > 0


def test_a_session_held_limit_follows_the_session_to_its_next_node(cluster):
    redis, keys = cluster
    node_a, node_b = (SessionTokenBucket(redis, keys, "messages", 10) for _ in range(2))
    node_b.load(7)
    assert sum(1 for _ in range(6) if node_b.take(7) == 0.0) == 6     # decided locally
    node_b.flush()
    node_a.load(7)                                 # the session moved to a
    assert sum(1 for _ in range(10) if node_a.take(7) == 0.0) == 4, "the 6 spent on b still count"
    assert 5.0 < node_a.take(7) <= 6.1
    node_a.flush()
    node_b.load(7)                                 # and back
    assert node_b.take(7) > 0


def test_the_single_process_server_never_loads_redis(tmp_path):
    import subprocess
    import sys
    code = ("import sys\n"
            "from tests.helpers import start_server, test_config\n"
            f"running = start_server(test_config({str(tmp_path)!r}))\n"
            "running.stop()\n"
            "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('server.cluster')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
