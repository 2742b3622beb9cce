"""Files across the nodes of a cluster: real server processes sharing MySQL, Redis and one
spool directory; the clients are the client core (``client/files.py``) in this process.

A live transfer whose sender and recipient are on two nodes, a spooled file fetched through
another node than the one that stored it, the spool quotas counted for the whole cluster, and
a node killed in the middle of a transfer (its user resumes on a third node)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from client import files as client_files
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from server.admin import query_status
from server.storage import open_storage
from tests.helpers import TestClient, cut_connection, wait_until
from tests.server_process import ServerProcess
from tests.social import befriend, uid
from tests.test_cluster import HEARTBEAT_TIMEOUT, cluster, same_user_on, user_on  # noqa: F401  (the fixture)
from tests.test_files import make_file, offer_and_accept, sha256_of, slow_down_writes, wait_done

MiB = 1024 * 1024
WINDOW = 2 * MiB


@pytest.fixture
def spool_dir(tmp_path) -> Path:
    return tmp_path / "shared-spool"


@pytest.fixture
def cluster_env(spool_dir) -> dict[str, str]:
    """The nodes of the ``cluster`` fixture share one spool directory."""
    return {"MEETING_SPOOL_DIR": str(spool_dir)}


def figures(node: ServerProcess) -> dict:
    """The node's live figures, from its admin socket."""
    return query_status(node.data_dir / "admin.sock")


def log_in_on(client_factory, node: ServerProcess, old: TestClient) -> TestClient:
    client = same_user_on(client_factory, node, old)
    client.kernel.login(old.phone, old.password)
    return client


def offline_friend(client_factory, node: ServerProcess, *friends: TestClient) -> tuple[TestClient, int]:
    """A user (and its id) who became friends with ``friends`` and logged out."""
    client = user_on(client_factory, node, "Offline")
    for friend in friends:
        befriend(friend, client)
    user_id = uid(client)
    client.kernel.logout()
    return client, user_id


def spool_files(directory: Path) -> list[str]:
    """The files in the spool (not the nodes' marks)."""
    return sorted(p.name for p in directory.iterdir() if p.is_file()) if directory.exists() else []


@pytest.fixture
def slow_writes(monkeypatch):
    slow_down_writes(monkeypatch, 0.01)


def test_a_64_mib_file_goes_live_from_one_node_to_another(cluster, client_factory, tmp_path):
    n1, n2 = cluster("n1"), cluster("n2")
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
    befriend(alice, bob)
    size = 64 * MiB
    source = tmp_path / "film.mkv"
    digest = make_file(source, size)
    inbox = tmp_path / "inbox"
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] >= size // 4,
                        timeout=60)
    for client in (alice, bob):     # chat and heartbeats are not stuck behind the file on either node
        sent = time.monotonic()
        client.kernel.request(PacketType.HEARTBEAT, {}, timeout=5)
        assert time.monotonic() - sent < 1.0
    received = wait_done(alice, bob, transfer_id, timeout=120)
    assert received == inbox / "film.mkv" and sha256_of(received) == digest
    sender_node, recipient_node = figures(n1), figures(n2)
    assert sender_node["file_bytes_relayed"] == size
    assert sender_node["file_chunks_across_nodes"] == size // client_files.CHUNK
    assert sender_node["file_peak_in_flight"] <= WINDOW, "the window bounds what crosses between the nodes"
    assert recipient_node["file_chunks_dropped"] == 0
    wait_until(lambda: figures(n1)["file_transfers"] == 0 and figures(n2)["file_deliveries"] == 0, 5,
               "both halves of the transfer forgotten")


def test_a_spooled_file_is_fetched_through_another_node(cluster, client_factory, tmp_path, spool_dir):
    n1, n2 = cluster("n1"), cluster("n2")
    alice = user_on(client_factory, n1, "Alice")
    bob, bob_id = offline_friend(client_factory, n2, alice)
    source = tmp_path / "notes.pdf"
    digest = make_file(source, 5 * MiB + 17)
    transfer_id = alice.kernel.files.send_file(bob_id, source)
    assert alice.events.wait_for("file_offered")["mode"] == "spool"
    alice.events.wait_for("file_spooled", lambda e: e["transfer_id"] == transfer_id)
    assert spool_files(spool_dir) == [transfer_id]

    bob = log_in_on(client_factory, n2, bob)         # n1 stored it; bob comes back on n2
    offer = bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    assert offer["spooled"] and offer["name"] == "notes.pdf" and offer["from_nickname"] == "Alice"
    bob.kernel.files.accept(transfer_id, directory=tmp_path / "bob")
    done = bob.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=30)
    assert sha256_of(Path(done["path"])) == digest
    alice.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id and e["direction"] == "send")
    wait_until(lambda: spool_files(spool_dir) == [], 5, "the spooled copy deleted")


def test_an_upload_to_the_spool_continues_on_the_node_the_sender_comes_back_to(cluster, client_factory, tmp_path,
                                                                             spool_dir):
    n1, n2 = cluster("n1"), cluster("n2")
    alice = user_on(client_factory, n1, "Alice", n2)
    bob, bob_id = offline_friend(client_factory, n2, alice)
    size = 48 * MiB
    source = tmp_path / "upload.bin"
    digest = make_file(source, size)
    transfer_id = alice.kernel.files.send_file(bob_id, source)
    alice.events.wait_for("file_progress", lambda e: e["direction"] == "send" and e["done"] >= MiB, timeout=30)
    mark = alice.events.mark()
    n1.kill()
    alice.events.wait_for("reconnected", start=mark, timeout=15)
    alice.events.wait_for("file_spooled", lambda e: e["transfer_id"] == transfer_id, timeout=60)
    progress = [e["done"] for e in alice.events.events[mark:] if e.kind == "file_progress"]
    assert progress and min(progress) >= MiB, "continued from what the spool held, not from zero"
    bob = log_in_on(client_factory, n2, bob)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    bob.kernel.files.accept(transfer_id, directory=tmp_path / "bob")
    done = bob.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=60)
    assert sha256_of(Path(done["path"])) == digest


def test_a_node_whose_spool_is_not_shared_says_so(cluster, tmp_path):
    n1 = cluster("n1")
    n2 = cluster("n2", MEETING_SPOOL_DIR=str(tmp_path / "n2-own-spool"))
    line = n2.wait_for_log("is not shared with node", timeout=10)
    assert "n1" in line and "n2-own-spool" in line
    assert "is not shared" not in n1.log


def test_the_per_user_spool_quota_counts_the_files_spooled_through_every_node(cluster, client_factory, tmp_path):
    quota = {"MEETING_SPOOL_QUOTA_PER_USER": str(3 * MiB)}
    n1, n2 = cluster("n1", **quota), cluster("n2", **quota)
    alice = user_on(client_factory, n1, "Alice")
    bob, bob_id = offline_friend(client_factory, n1, alice)
    source = tmp_path / "two.bin"
    make_file(source, 2 * MiB)
    first = alice.kernel.files.send_file(bob_id, source)
    alice.events.wait_for("file_spooled", lambda e: e["transfer_id"] == first)
    alice.kernel.logout()

    moved = log_in_on(client_factory, n2, alice)
    with pytest.raises(ApiError) as refused:
        moved.kernel.files.send_file(bob_id, source)
    assert refused.value.code == ErrorCode.SPOOL_FULL
    assert refused.value.details == {"reserved": 2 * MiB, "limit": 3 * MiB}
    small = tmp_path / "small.bin"
    make_file(small, MiB)
    moved.kernel.files.send_file(bob_id, small)          # what is left of the quota still fits
    moved.events.wait_for("file_spooled")


def test_the_spool_quota_holds_when_two_nodes_reserve_the_last_room_at_once(cluster, client_factory, tmp_path):
    quota = {"MEETING_SPOOL_QUOTA": str(3 * MiB)}
    n1, n2 = cluster("n1", **quota), cluster("n2", **quota)
    alice, carol = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Carol")
    bob, bob_id = offline_friend(client_factory, n1, alice, carol)
    source = tmp_path / "two.bin"
    make_file(source, 2 * MiB)
    for round_ in range(8):
        barrier = threading.Barrier(2)
        results: dict[str, object] = {}

        def offer(name: str, client: TestClient) -> None:
            barrier.wait()
            try:
                results[name] = client.kernel.files.send_file(bob_id, source)
            except ApiError as exc:
                results[name] = exc.code
        threads = [threading.Thread(target=offer, args=(name, client))
                   for name, client in (("alice", alice), ("carol", carol))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        refused = [name for name, result in results.items() if result == ErrorCode.SPOOL_FULL]
        assert len(results) == 2 and len(refused) == 1, f"round {round_}: {results}"
        winner = "carol" if refused == ["alice"] else "alice"
        sender = carol if winner == "carol" else alice
        sender.events.wait_for("file_spooled", lambda e: e["transfer_id"] == results[winner])
        sender.kernel.files.cancel(str(results[winner]))      # room for the next round


@pytest.mark.parametrize("victim", ["recipient", "sender"])
def test_a_transfer_resumes_on_a_third_node_when_a_node_is_killed(cluster, client_factory, tmp_path, slow_writes,
                                                                  victim):
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    alice = user_on(client_factory, n1, "Alice", n3)
    bob = user_on(client_factory, n2, "Bob", n3)
    befriend(alice, bob)
    size = 24 * MiB
    source = tmp_path / "resume.bin"
    digest = make_file(source, size)
    transfer_id = offer_and_accept(alice, bob, source, tmp_path / "inbox")
    bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] >= size // 3,
                        timeout=60)
    client, node = (bob, n2) if victim == "recipient" else (alice, n1)
    mark, bob_mark = client.events.mark(), bob.events.mark()
    node.kill()
    client.events.wait_for("reconnected", start=mark, timeout=15)
    assert client.kernel.port == n3.port
    received = wait_done(alice, bob, transfer_id, timeout=90)
    assert sha256_of(received) == digest
    after = [e["done"] for e in bob.events.events[bob_mark:] if e.kind == "file_progress"
             and e["direction"] == "receive"]
    assert after and min(after) >= size // 3, "resumed from what bob held, not from zero"


def move(client: TestClient) -> None:
    """The client's connection breaks and it reconnects to the next server it knows (as when a
    path breaks and a load balancer or SO_REUSEPORT lands it on another node); returns once
    the session is resumed there."""
    mark = client.events.mark()
    client.kernel._next_server()
    cut_connection(client.kernel, "test: the path to this node broke")
    client.events.wait_for("reconnected", start=mark, timeout=15)


def test_a_live_transfer_goes_on_while_its_users_move_between_live_nodes(cluster, client_factory, tmp_path,
                                                                         slow_writes):
    """Each move leaves chunks of the node left behind in flight: they must not interleave
    with those of the node the user moved to (the delivery's epoch), and no half may stay
    behind on the node left (it would time the transfer out)."""
    n1, n2, n3 = cluster("n1"), cluster("n2"), cluster("n3")
    alice = user_on(client_factory, n1, "Alice", n2)
    bob = user_on(client_factory, n3, "Bob", n2)
    befriend(alice, bob)
    size = 48 * MiB
    source = tmp_path / "moving.bin"
    digest = make_file(source, size)
    transfer_id = offer_and_accept(alice, bob, source, tmp_path / "inbox")
    for step, client in enumerate([alice, bob, alice, bob, alice, bob]):
        bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and
                            e["done"] >= (step + 1) * size // 8, timeout=60)
        move(client)
    assert (alice.kernel.port, bob.kernel.port) == (n2.port, n2.port)
    received = wait_done(alice, bob, transfer_id, timeout=90)
    assert sha256_of(received) == digest
    wait_until(lambda: all(figures(n)["file_transfers"] == 0 and figures(n)["file_deliveries"] == 0
                           for n in (n1, n2, n3)), 5, "no half of the transfer left on any node")


@pytest.fixture
def own_redis(tmp_path):
    from tests.cluster_helpers import RedisProcess
    server = RedisProcess(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_transfer_between_nodes_continues_by_itself_after_redis_restarts(own_redis, mysql_url, tmp_path,
                                                                          client_factory, spool_dir, slow_writes):
    """Chunks and acks in flight are lost with Redis; neither user reconnects (their nodes
    stay up), so the recipient's node notices the starved delivery and pulls the sender."""
    env = {"MEETING_REDIS": own_redis.url, "MEETING_HEARTBEAT_INTERVAL": "1",
           "MEETING_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT), "MEETING_SPOOL_DIR": str(spool_dir)}
    n1 = ServerProcess(mysql_url, tmp_path / "n1", env={**env, "MEETING_NODE_NAME": "n1"})
    n2 = ServerProcess(mysql_url, tmp_path / "n2", env={**env, "MEETING_NODE_NAME": "n2"})
    try:
        n1.start()
        n2.start()
        alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
        befriend(alice, bob)
        size = 48 * MiB
        source = tmp_path / "through-an-outage.bin"
        digest = make_file(source, size)
        transfer_id = offer_and_accept(alice, bob, source, tmp_path / "inbox")
        bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] >= size // 4,
                            timeout=60)
        own_redis.stop()
        own_redis.start()                                   # empty: the nodes register again
        for node in (n1, n2):
            node.wait_for_log("registered again with Redis", timeout=15)
        received = wait_done(alice, bob, transfer_id, timeout=90)
        assert sha256_of(received) == digest
        assert alice.events.count("reconnected") == bob.events.count("reconnected") == 0
    finally:
        n1.stop()
        n2.stop()


def test_a_transfer_whose_recipient_node_dies_for_good_fails_clearly_for_the_sender(cluster, client_factory,
                                                                                   tmp_path, slow_writes):
    timeout = {"MEETING_FILE_IDLE_TIMEOUT": "2"}
    n1, n2 = cluster("n1", **timeout), cluster("n2", **timeout)
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
    befriend(alice, bob)
    source = tmp_path / "doomed.bin"
    make_file(source, 16 * MiB)
    transfer_id = offer_and_accept(alice, bob, source, tmp_path / "inbox")
    bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] >= MiB, timeout=30)
    bob.close()                         # bob's machine is gone with his node
    n2.kill()
    failed = alice.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id, timeout=20)
    assert failed["error"] == "TIMEOUT"


def test_a_live_offer_whose_users_both_left_expires(cluster, client_factory, tmp_path, mysql_url):
    """No node takes up a live transfer nobody resumes: the sweep ends it at its expiry."""
    expiry = {"MEETING_SPOOL_EXPIRY": "1", "MEETING_SPOOL_SWEEP_INTERVAL": "0.2"}
    n1, n2 = cluster("n1", **expiry), cluster("n2", **expiry)
    alice, bob = user_on(client_factory, n1, "Alice"), user_on(client_factory, n2, "Bob")
    befriend(alice, bob)
    source = tmp_path / "left.bin"
    make_file(source, MiB)
    transfer_id = alice.kernel.files.send_file(uid(bob), source)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    alice.close()
    bob.close()
    storage = open_storage(mysql_url)
    try:
        wait_until(lambda: storage.get_file(transfer_id).state == "expired", 10, "the offer expired")
    finally:
        storage.close()
    back = log_in_on(client_factory, n1, bob)
    assert back.kernel.request(PacketType.FILE_PENDING, {})["transfers"] == []
