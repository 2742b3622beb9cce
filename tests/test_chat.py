"""One-to-one chat: ack after commit, live delivery, receipts, offline backlog, history pages,
typing, idempotent sends, the outbox across a dropped connection, and no loss across SIGKILL."""
from __future__ import annotations

import threading
import time

import pytest

from common import frame as wire
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from server.chat_writer import GroupCommitWriter, Job
from server.storage.messages import NewMessage, store_messages_tx
from server.storage.mysql_backend import mariadb_version
from tests.helpers import barrier, count_sent, cut_connection, make_mysql_database, wait_until
from tests.server_process import ServerProcess
from tests.social import befriend, trio, uid  # noqa: F401 - trio is a fixture


def error_of(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    return info.value


def received(client, text: str) -> int:
    return client.events.count("chat_message", lambda e: e["message"]["text"] == text)


def test_live_message_is_acked_delivered_and_read(trio):
    _, (a, b, c) = trio
    befriend(a, b)
    before = int(time.time() * 1000)
    ack = a.kernel.chat.send_and_wait(uid(b), "hello Bob 👋")
    assert ack["id"] > 0 and before <= ack["time"] <= int(time.time() * 1000) + 1 and ack["duplicate"] is False
    message = b.events.wait_for("chat_message", lambda e: e["message"]["id"] == ack["id"])["message"]
    assert (message["from"], message["to"], message["text"]) == (uid(a), uid(b), "hello Bob 👋")
    delivered = a.events.wait_for("chat_status", lambda e: e["status"] == "delivered")
    assert delivered["ids"] == [ack["id"]] and delivered["peer"] == uid(b)
    assert a.kernel.chat.messages_with(uid(b))[0]["delivered_at"] == delivered["at"]
    assert not a.kernel.chat.outbox

    assert b.kernel.chat.mark_read(uid(a)) == 1
    read = a.events.wait_for("chat_status", lambda e: e["status"] == "read")
    assert read["up_to"] == ack["id"] and read["peer"] == uid(b)
    assert a.kernel.chat.messages_with(uid(b))[0]["read_at"] == read["at"]
    assert b.kernel.chat.mark_read(uid(a)) == 0      # nothing new to read: no second event
    assert c.events.count("chat_message") == 0


def test_refusals(trio):
    _, (a, b, c) = trio
    befriend(a, b)
    refused = error_of(a.kernel.chat.send_and_wait, uid(c), "hi stranger")
    assert refused.code == ErrorCode.NOT_FRIENDS
    assert a.events.wait_for("chat_failed")["name"] == "NOT_FRIENDS" and not a.kernel.chat.outbox
    assert error_of(a.kernel.chat.send_and_wait, uid(a), "note to self").code == ErrorCode.NOT_FRIENDS
    assert error_of(a.kernel.chat.send_and_wait, 999_999, "nobody").code == ErrorCode.NOT_FRIENDS

    def raw_send(text: str, cid: str = "raw-1") -> dict:
        return a.kernel.request(PacketType.CHAT_SEND, {"to": uid(b), "text": text, "client_msg_id": cid})
    assert error_of(raw_send, "é" * 4097).code == ErrorCode.MESSAGE_TOO_LONG       # 8194 bytes
    assert error_of(a.kernel.chat.send, uid(b), "x" * 8193).code == ErrorCode.MESSAGE_TOO_LONG
    assert error_of(raw_send, "   ").code == ErrorCode.BAD_REQUEST
    assert error_of(raw_send, "ok", "bad id with spaces").code == ErrorCode.BAD_REQUEST
    assert raw_send("é" * 4096)["id"] > 0                                        # exactly 8192 bytes
    assert c.events.count("chat_message") == 0


def test_offline_recipient_gets_everything_in_order_at_login(trio):
    _, (a, b, _c) = trio
    befriend(a, b)
    b_id = uid(b)
    b.kernel.logout()
    texts = [f"message {n} " + ("long " * 1600 if n % 4 == 0 else "") for n in range(30)]  # ~240 KB in all
    acks = [a.kernel.chat.send_and_wait(b_id, text) for text in texts]
    assert [x["id"] for x in acks] == sorted(x["id"] for x in acks)

    mark_a, mark_b = a.events.mark(), b.events.mark()
    b.kernel.login(b.phone, b.password)
    b.events.wait_for("unread_loaded", start=mark_b)
    got = [e["message"] for e in b.events.events[mark_b:] if e.kind == "chat_message"]
    assert [m["text"] for m in got] == texts
    assert all(m["delivered_at"] is None for m in got)
    wait_until(lambda: {i for e in a.events.events[mark_a:] if e.kind == "chat_status" for i in e["ids"] or []}
               >= {x["id"] for x in acks}, 5, "the delivery receipts")

    # a second login brings the still unread messages again (they were delivered, not read)
    b.kernel.chat.mark_read(a.kernel.user["id"])
    b.kernel.logout()
    mark_b = b.events.mark()
    b.kernel.login(b.phone, b.password)
    assert b.events.wait_for("unread_loaded", start=mark_b)["count"] == 0


def test_history_pages(trio):
    _, (a, b, _c) = trio
    befriend(a, b)
    for n in range(25):
        sender, peer = (a, b) if n % 2 == 0 else (b, a)
        sender.kernel.chat.send_and_wait(uid(peer), f"line {n}")
    pages, before = [], None
    while True:
        page = a.kernel.chat.history(uid(b), before=before, limit=10)
        pages.append([m["text"] for m in page["messages"]])
        if not page["more"]:
            break
        before = page["before"]
    assert pages[0] == [f"line {n}" for n in range(15, 25)]
    assert [t for p in reversed(pages) for t in p] == [f"line {n}" for n in range(25)]
    assert [len(p) for p in pages] == [10, 10, 5]
    assert b.kernel.chat.history(uid(a), limit=3)["messages"][-1]["text"] == "line 24"
    assert error_of(a.kernel.request, PacketType.CHAT_HISTORY,
                    {"user_id": uid(b), "limit": 1000}).code == ErrorCode.BAD_REQUEST


def test_typing_indicator(trio):
    _, (a, b, c) = trio
    befriend(a, b)
    a.kernel.chat.typing(uid(b))
    assert b.events.wait_for("typing")["user_id"] == uid(a)
    a.kernel.chat.typing(uid(b), False)
    assert b.events.wait_for("typing", lambda e: not e["typing"])["user_id"] == uid(a)
    c.kernel.chat.typing(uid(b))                  # not friends: dropped silently...
    refused = error_of(c.kernel.request, PacketType.TYPING, {"to": uid(b)})   # ...or refused if asked
    assert refused.code == ErrorCode.NOT_FRIENDS
    barrier(b)
    assert b.events.count("typing", lambda e: e["user_id"] == uid(c)) == 0


def test_same_client_message_id_is_stored_once(trio):
    running, (a, b, _c) = trio
    befriend(a, b)
    body = {"to": uid(b), "text": "only once", "client_msg_id": "fixed-id-1"}
    first = a.kernel.request(PacketType.CHAT_SEND, body)
    b.events.wait_for("chat_message", lambda e: e["message"]["text"] == "only once")
    again = a.kernel.request(PacketType.CHAT_SEND, body)
    assert again["id"] == first["id"] and again["time"] == first["time"]
    assert first["duplicate"] is False and again["duplicate"] is True
    assert count_sent(running.server.storage, uid(a), "fixed-id-1") == 1
    barrier(b)
    assert received(b, "only once") == 1


def test_many_messages_keep_order_and_share_commits(trio):
    running, (a, b, _c) = trio
    befriend(a, b)
    writer = running.server.chat_writer
    batches_before, jobs_before = writer.batches, writer.jobs_committed
    entries = [a.kernel.chat.send(uid(b), f"burst {n}") for n in range(200)]
    acks = [e.acked.result(15) for e in entries]
    ids = [x["id"] for x in acks]
    assert ids == sorted(ids) and len(set(ids)) == 200
    b.events.wait_for("chat_message", lambda e: e["message"]["text"] == "burst 199")
    got = [e["message"]["text"] for e in b.events.events if e.kind == "chat_message"]
    assert got == [f"burst {n}" for n in range(200)]
    jobs = writer.jobs_committed - jobs_before
    batches = writer.batches - batches_before
    assert jobs >= 200 and batches < jobs and writer.largest_batch > 1


def test_outbox_resends_after_the_connection_drops_before_the_ack(trio):
    running, (a, b, _c) = trio
    befriend(a, b)
    kernel = a.kernel
    original = kernel.on_frame
    swallowed = []

    def lose_the_ack(frame: wire.Frame) -> None:
        if not swallowed and frame.type == PacketType.RESULT and b"lost-ack" in frame.body:
            swallowed.append(frame)
            cut_connection(kernel, "test: the connection broke before the ack")
            return
        original(frame)
    kernel.on_frame = lose_the_ack

    mark = a.events.mark()
    entry = kernel.chat.send(uid(b), "sent just before the connection broke", client_msg_id="lost-ack")
    a.events.wait_for("reconnected", start=mark)
    ack = entry.acked.result(10)
    assert swallowed and ack["duplicate"] is True          # the first try was stored; the repeat found it
    assert count_sent(running.server.storage, uid(a), "lost-ack") == 1
    assert not kernel.chat.outbox

    # sent while disconnected: waits in the outbox, goes out after the reconnect, once
    mark = a.events.mark()
    cut_connection(kernel, "test: offline for a moment")
    a.events.wait_for("disconnected", start=mark)
    late = kernel.chat.send(uid(b), "typed while offline", client_msg_id="offline-1")
    assert "offline-1" in kernel.chat.outbox
    assert late.acked.result(10)["duplicate"] is False
    assert count_sent(running.server.storage, uid(a), "offline-1") == 1
    b.events.wait_for("chat_message", lambda e: e["message"]["text"] == "typed while offline")
    barrier(b)
    assert received(b, "sent just before the connection broke") == 1
    assert received(b, "typed while offline") == 1


@pytest.fixture
def db_url(backend, tmp_path):
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/crash.db"
        return
    url, drop = make_mysql_database()
    yield url
    drop()


def friends_with_bob_offline(port: int, client_factory):
    """Alice online, Bob her friend and logged out (his id kept): what she sends waits for him."""
    a, b = client_factory(port), client_factory(port)
    a.register_and_login("Alice")
    b.register_and_login("Bob")
    befriend(a, b)
    b_id = uid(b)
    b.kernel.logout()
    return a, b, b_id


def test_no_loss_when_the_server_is_killed_after_the_ack(db_url, tmp_path, client_factory):
    with ServerProcess(db_url, tmp_path / "data") as proc:
        port = proc.start()
        a, b, b_id = friends_with_bob_offline(port, client_factory)
        acks = [a.kernel.chat.send_and_wait(b_id, f"survives SIGKILL {n}") for n in range(5)]

        proc.kill()                                # right after the acks: a crash, no shutdown code
        mark = a.events.mark()
        proc.start()                               # same database, same port
        a.events.wait_for("reconnected", start=mark, timeout=15)

        late = client_factory(port)
        late.phone, late.password = b.phone, b.password
        mark = late.events.mark()
        late.kernel.login(b.phone, b.password)
        late.events.wait_for("unread_loaded", start=mark)
        got = [e["message"] for e in late.events.events if e.kind == "chat_message"]
        assert [m["text"] for m in got] == [f"survives SIGKILL {n}" for n in range(5)]
        assert [m["id"] for m in got] == [x["id"] for x in acks]
        a.events.wait_for("chat_status", lambda e: e["status"] == "delivered" and acks[-1]["id"] in e["ids"])


def test_graceful_stop_with_messages_in_flight_loses_and_doubles_nothing(db_url, tmp_path, client_factory):
    with ServerProcess(db_url, tmp_path / "data") as proc:
        port = proc.start()
        a, b, b_id = friends_with_bob_offline(port, client_factory)
        texts = [f"in flight {n}" for n in range(100)]
        entries = [a.kernel.chat.send(b_id, text) for text in texts]
        assert proc.terminate() == 0               # SIGTERM while the burst is being written
        proc.start()
        acks = [entry.acked.result(20) for entry in entries]
        assert len({x["id"] for x in acks}) == 100 and not a.kernel.chat.outbox

        late = client_factory(port)
        late.kernel.login(b.phone, b.password)
        late.events.wait_for("unread_loaded")
        got = [e["message"]["text"] for e in late.events.events if e.kind == "chat_message"]
        assert got == texts


@pytest.mark.parametrize("returning", [True, False], ids=["insert-returning", "read-back"])
def test_batch_store_semantics(storage, returning):
    """Both ways of storing a batch: INSERT ... RETURNING (SQLite, MariaDB), and the look-up
    before and after the INSERT that MySQL needs."""
    if returning and not storage.db.insert_returning:
        pytest.skip("this database has no INSERT ... RETURNING")
    storage.db.insert_returning = returning
    alice, bob, carol = (storage.create_user(f"1888000000{n}", "x", name, 1).id
                         for n, name in enumerate(("alice", "bob", "carol")))
    storage.add_friendship(alice, bob, 1)
    with storage.db.tx() as cur:
        [(kept, created)] = store_messages_tx(cur, [NewMessage(alice, bob, "early", "kept")], 5)
    assert created
    storage.remove_friendship(alice, bob)
    storage.add_friendship(alice, carol, 1)
    items = [NewMessage(alice, carol, "m1", "one"),
             NewMessage(alice, carol, "m1", "one again"),        # repeated inside the batch
             NewMessage(alice, bob, "m2", "no longer friends"),
             NewMessage(alice, bob, "early", "kept"),            # a re-send from before the removal
             NewMessage(alice, alice, "m3", "to myself"),
             NewMessage(carol, alice, "m1", "same client id, other sender")]
    with storage.db.tx() as cur:
        results = store_messages_tx(cur, items, 7)
    first, repeat, stranger, resend, self_note, other = results
    assert first[1] is True and repeat == (first[0], False)
    assert first[0] == storage.get_message(first[0].id)
    assert stranger is None and self_note is None
    assert resend == (kept, False)
    assert other[1] is True and other[0].id != first[0].id and first[0].id < other[0].id
    with storage.db.tx() as cur:                                 # re-sends between friends, a new one
        again = store_messages_tx(cur, [NewMessage(alice, carol, "m1", "one", known_friends=True),
                                        NewMessage(carol, alice, "m4", "four", known_friends=True),
                                        NewMessage(carol, alice, "m1", "other", known_friends=True)], 9)
    assert again[0] == (first[0], False) and again[2] == (other[0], False)
    assert again[1][1] is True and again[1][0] == storage.get_message(again[1][0].id)
    assert count_sent(storage, alice, "m1") == 1 and count_sent(storage, alice, "m2") == 0


def test_insert_returning_is_read_from_the_server(storage, backend):
    with storage.db.tx() as cur:
        version = cur.one("SELECT sqlite_version()" if backend == "sqlite" else "SELECT VERSION()")[0]
    major, minor = (int(n) for n in version.split(".")[:2])
    expected = (major, minor) >= ((3, 35) if backend == "sqlite" else (10, 5)) and \
        (backend == "sqlite" or "MariaDB" in version)
    assert storage.db.insert_returning is expected
    assert mariadb_version("5.5.5-10.11.6-MariaDB-0+deb12u1") == (10, 11)
    assert mariadb_version("10.4.32-MariaDB-log") == (10, 4)
    assert mariadb_version("8.0.36") == (0, 0)


class InlineReactor:
    def call_soon_threadsafe(self, fn, *args):
        fn(*args)

    def in_reactor_thread(self):
        return False


def test_writer_isolates_a_failing_job(storage):
    done, gate, shared = [], threading.Event(), []

    def store(cur, items):
        gate.wait(5)              # hold the first batch until every job is queued
        if "boom" in items:
            shared.append(len(items))
            raise RuntimeError("a job the database refuses")
        cur.execute("UPDATE meta SET value = value WHERE name = ?", ("schema_version",))
        return [item.upper() for item in items]

    writer = GroupCommitWriter(storage.db, InlineReactor(), {"echo": store}, max_batch=10)
    for item in ("a", "b", "boom", "c"):
        writer.submit(Job("echo", item, lambda result, error, item=item: done.append((item, result, error))))
    gate.set()
    writer.stop()
    assert shared[0] > 1          # the failing job was batched with others, which still went through
    results = {item: (result, error and error.code) for item, result, error in done}
    assert results == {"a": ("A", None), "b": ("B", None), "c": ("C", None),
                       "boom": (None, ErrorCode.INTERNAL)}
    with pytest.raises(ApiError) as refused:
        writer.submit(Job("echo", "late", lambda result, error: None))
    assert refused.value.code == ErrorCode.SHUTTING_DOWN
