"""Events between nodes when the connection to Redis breaks: batches published while a node is
between a broken subscription and its resubscribe reach it from its backlog, in order; and with
Redis restarted empty while chat flows between two real nodes, the recipient sees every
acknowledged message without logging in again."""
from __future__ import annotations

import threading
import time

from server.cluster.bus import TO_USER
from server.cluster.directory import SessionDirectory
from server.cluster.store import Keys, connect
from tests.helpers import wait_until
from tests.social import befriend, uid
from tests.test_cluster import nodes_on_own_redis, own_redis, user_on  # noqa: F401
from tests.test_cluster_state import FakeReactor, make_bus


def test_batches_published_while_a_node_resubscribes_come_from_its_backlog_in_order(own_redis):  # noqa: F811
    redis, keys = connect(own_redis.url), Keys("bus-test:")
    ra, rb = FakeReactor(), FakeReactor()
    sender, receiver = make_bus(redis, keys, "a", ra), make_bus(redis, keys, "b", rb)
    try:
        SessionDirectory(redis, keys, "b").bind(20, 1, "t")
        count = 200
        sent = 0

        def send() -> None:
            nonlocal sent
            sender.send_to_users([20], TO_USER, f"m{sent}".encode())
            ra.iteration()
            sent += 1

        for _ in range(20):
            send()
            time.sleep(0.003)                                # one batch every few ms
        # Break b's subscription and publish at once, until a batch lands in the gap before b
        # has subscribed again (on a busy machine b may win the race a few times).
        for _ in range(50):
            redis.client_kill_filter(_type="pubsub")
            for _ in range(3):
                send()
            if sender.backlogged_batches:
                break                                        # else all three reached b: it is back
        assert sender.backlogged_batches > 0, "some batches were published while nobody listened"
        while sent < count:
            send()
            time.sleep(0.003)
        got = rb.wait_for(count)
        assert [p for _, _, p in got] == [f"m{i}".encode() for i in range(count)], "none lost, none reordered"
        assert receiver.outages >= 1
    finally:
        sender.stop()
        receiver.stop()
        redis.close()


def test_chat_flowing_between_nodes_while_redis_restarts_empty_loses_no_message(  # noqa: F811
        own_redis, nodes_on_own_redis, client_factory):
    n1, n2 = nodes_on_own_redis
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
    befriend(alice, bob)
    bob_mark = bob.events.mark()
    acked: list[int] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def chat() -> None:
        try:
            i = 0
            while not stop.is_set():
                acked.append(alice.kernel.chat.send_and_wait(uid(bob), f"message {i}", timeout=20)["id"])
                i += 1
                time.sleep(0.01)
        except BaseException as exc:    # the test fails on it below
            failures.append(exc)

    sender = threading.Thread(target=chat, name="alice-chats")
    sender.start()
    wait_until(lambda: len(acked) >= 20, 15, "chat flowing before the restart")
    own_redis.stop()
    before_restart = len(acked)
    wait_until(lambda: len(acked) >= before_restart + 20, 15, "messages acknowledged while Redis is down")
    own_redis.start()                                    # empty: no directory, no channels
    n1.wait_for_log("registered again with Redis", timeout=15)
    n2.wait_for_log("registered again with Redis", timeout=15)
    after_restart = len(acked)
    wait_until(lambda: len(acked) >= after_restart + 20, 15, "chat flowing after the restart")
    stop.set()
    sender.join(30)
    assert not failures, failures

    def seen() -> set[int]:
        return {e["message"]["id"] for e in bob.events.events[bob_mark:] if e.kind == "chat_message"}
    wait_until(lambda: set(acked) <= seen(), 20, f"Bob seeing all {len(acked)} acknowledged messages")
    assert bob.events.count("reconnected") == 0, "Bob saw them without logging in again"
    assert n2.running and n1.running
