"""File transfer through a real server: sizes, integrity, decline/cancel, resume, spool, safety."""
from __future__ import annotations

import collections
import errno
import hashlib
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from client import files as client_files
from common.errors import ApiError, ErrorCode
from common.filenames import sanitize_filename
from common.packets import PacketType
from server import spool as server_spool
from server.storage.files import FileRecord
from tests.helpers import TestClient, barrier, logged_in_friends, wait_until

MiB = 1024 * 1024
DiskUsage = collections.namedtuple("DiskUsage", "total used free")
WINDOW = 2 * MiB


# -- helpers ---------------------------------------------------------------------------------------
def make_file(path: Path, size: int) -> str:
    """Write ``size`` pseudo-random bytes quickly; returns their SHA-256."""
    block = os.urandom(MiB)
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for index in range(0, size, MiB):
            piece = (index // MiB).to_bytes(8, "big") + block[8:]
            piece = piece[:min(MiB, size - index)]
            fh.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    return client_files.file_sha256(path)


def user_id(client: TestClient) -> int:
    return client.kernel.user["id"]


def befriend(running, a: TestClient, b: TestClient) -> None:
    running.server.storage.add_friendship(user_id(a), user_id(b), int(time.time() * 1000))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


@pytest.fixture
def pair(server, client_factory, tmp_path):
    """Two logged-in friends and a download folder for the second."""
    alice, bob = logged_in_friends(server, client_factory)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return alice, bob, inbox


def offer_and_accept(alice: TestClient, bob: TestClient, source: Path, inbox: Path, name: str | None = None) -> str:
    mark = bob.events.mark()
    transfer_id = alice.kernel.files.send_file(user_id(bob), source, name=name)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id, start=mark)
    bob.kernel.files.accept(transfer_id, directory=inbox)
    return transfer_id


def wait_done(alice: TestClient, bob: TestClient, transfer_id: str, timeout: float = 30.0) -> Path:
    received = bob.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=timeout)
    alice.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=timeout)
    return Path(received["path"])


def server_figures(running) -> dict:
    return running.server.status()


def slow_down_writes(monkeypatch, delay: float) -> None:
    """Make the receiving client sleep ``delay`` s before each write, so a test can act in the
    middle of a transfer."""
    original = client_files.write_all

    def slow(fd, data):
        time.sleep(delay)
        original(fd, data)
    monkeypatch.setattr(client_files, "write_all", slow)


@pytest.fixture
def slow_writes(monkeypatch):
    slow_down_writes(monkeypatch, 0.004)


# -- sizes and integrity ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, MiB])
def test_files_arrive_bit_exact(pair, server, tmp_path, size):
    alice, bob, inbox = pair
    source = tmp_path / "photo.jpg"
    digest = make_file(source, size)
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    received = wait_done(alice, bob, transfer_id)
    assert received == inbox / "photo.jpg"
    assert received.stat().st_size == size and sha256_of(received) == digest
    assert leftovers(inbox) == []
    assert bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] == size)
    assert server_figures(server)["file_transfers"] == 0


def test_the_smallest_window_still_flows(server_factory, client_factory, tmp_path):
    """With a window of one chunk the recipient must confirm every chunk, or both sides wait
    for each other forever."""
    chunk = client_files.CHUNK
    running = server_factory(file_window=chunk)
    alice, bob = logged_in_friends(running, client_factory)
    source = tmp_path / "a.bin"
    digest = make_file(source, 12 * chunk + 1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    assert sha256_of(wait_done(alice, bob, transfer_id, timeout=20)) == digest
    assert server_figures(running)["file_peak_in_flight"] <= chunk


def test_300_mib_streams_with_bounded_memory_and_fast_heartbeats(pair, server, tmp_path):
    alice, bob, inbox = pair
    size = 300 * MiB
    source = tmp_path / "big.bin"
    digest = make_file(source, size)
    process = psutil.Process()
    rss_before = process.memory_info().rss
    peak_rss = [rss_before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak_rss[0] = max(peak_rss[0], process.memory_info().rss)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] >= size // 4,
                        timeout=60)
    # Heartbeats and other requests on both connections are not stuck behind the file data.
    for client in (alice, bob):
        sent = time.monotonic()
        client.kernel.request(PacketType.HEARTBEAT, {}, timeout=5)
        assert time.monotonic() - sent < 1.0
    received = wait_done(alice, bob, transfer_id, timeout=120)
    elapsed = time.monotonic() - started
    done.set()
    sampler.join()
    assert sha256_of(received) == digest
    figures = server_figures(server)
    assert figures["file_peak_in_flight"] <= WINDOW
    assert figures["file_bytes_relayed"] == size
    # Server and both clients share this process: none of them held the file in memory.
    assert peak_rss[0] - rss_before < 100 * MiB
    progress = [e for e in bob.events.events if e.kind == "file_progress" and e["transfer_id"] == transfer_id]
    assert any(e["rate"] > 0 and e["eta"] is not None for e in progress)
    assert alice.events.count("file_progress", lambda e: e["direction"] == "send") > 0
    print(f"300 MiB in {elapsed:.2f} s ({size / elapsed / MiB:.0f} MiB/s)")


# -- answers and cancelling -------------------------------------------------------------------------------
def test_declined_offer_tells_the_sender(pair, tmp_path):
    alice, bob, inbox = pair
    source = tmp_path / "a.txt"
    make_file(source, 1000)
    transfer_id = alice.kernel.files.send_file(user_id(bob), source)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    bob.kernel.files.decline(transfer_id)
    alice.events.wait_for("file_declined", lambda e: e["transfer_id"] == transfer_id)
    assert list(inbox.iterdir()) == []
    with pytest.raises(ApiError) as info:
        bob.kernel.request(PacketType.FILE_ANSWER, {"transfer_id": transfer_id, "accept": True})
    assert info.value.code == ErrorCode.NO_SUCH_TRANSFER


@pytest.mark.parametrize("who", ["sender", "recipient"])
def test_cancel_midway_tells_the_other_side_and_leaves_nothing(pair, tmp_path, slow_writes, who):
    alice, bob, inbox = pair
    source = tmp_path / "movie.mkv"
    make_file(source, 64 * MiB)
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] > MiB)
    canceller, other = (alice, bob) if who == "sender" else (bob, alice)
    canceller.kernel.files.cancel(transfer_id, reason="changed my mind")
    event = other.events.wait_for("file_cancelled", lambda e: e["transfer_id"] == transfer_id)
    assert event["by"] == user_id(canceller) and event["reason"] == "changed my mind"
    assert canceller.events.count("file_cancelled", lambda e: e["by"] == "me") == 1
    wait_until(lambda: list(inbox.iterdir()) == [], 5, "the writer thread to remove the partial file")
    barrier(bob)
    assert bob.events.count("file_done") == 0


def test_a_stalled_transfer_times_out_on_both_sides(server_factory, client_factory, tmp_path):
    running = server_factory(file_idle_timeout=0.6)
    alice, bob = logged_in_friends(running, client_factory)
    source = tmp_path / "a.bin"
    make_file(source, 1000)
    transfer_id = alice.kernel.files.send_file(user_id(bob), source)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)   # never answered
    for client in (alice, bob):
        failed = client.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id, timeout=5)
        assert failed["error"] == "TIMEOUT"
    assert transfer_id not in bob.kernel.files.offers
    assert running.server.storage.get_file(transfer_id).state == "failed"


# -- resume ---------------------------------------------------------------------------------------------------
def kill_session(running, client: TestClient) -> None:
    conn = running.server.sessions.get(user_id(client))
    running.server.reactor.call_soon_threadsafe(conn.close, "test: connection killed")


@pytest.mark.parametrize("victim", ["recipient", "sender"])
def test_transfer_resumes_after_a_dropped_connection(pair, server, tmp_path, slow_writes, victim):
    alice, bob, inbox = pair
    size = 32 * MiB
    source = tmp_path / "resume.bin"
    digest = make_file(source, size)
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] >= size // 2)
    client = bob if victim == "recipient" else alice
    mark = client.events.mark()
    kill_session(server, client)
    client.events.wait_for("reconnected", start=mark)
    received = wait_done(alice, bob, transfer_id)
    assert sha256_of(received) == digest
    assert leftovers(inbox) == []
    # Resumed from the confirmed offset, not from zero: at most a window or two sent twice.
    assert server_figures(server)["file_bytes_relayed"] <= size + 2 * WINDOW
    after = [e["done"] for e in bob.events.events[mark:] if e.kind == "file_progress"
             and e["direction"] == "receive"]
    assert after and min(after) >= size // 2


def test_a_live_transfer_resumes_after_a_server_restart(server_factory, client_factory, tmp_path, slow_writes):
    running = server_factory()
    alice, bob = logged_in_friends(running, client_factory)
    size = 32 * MiB
    source = tmp_path / "live.bin"
    digest = make_file(source, size)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    bob.events.wait_for("file_progress", lambda e: e["direction"] == "receive" and e["done"] >= size // 2)
    port = running.port
    marks = alice.events.mark(), bob.events.mark()
    running.stop()
    running = server_factory(port=port)              # same database, data dir and port
    for client, mark in zip((alice, bob), marks):
        client.events.wait_for("reconnected", start=mark, timeout=15)
    received = wait_done(alice, bob, transfer_id, timeout=60)
    assert sha256_of(received) == digest
    assert leftovers(inbox) == []
    # Continued from what bob held, not from zero.
    assert server_figures(running)["file_bytes_relayed"] <= size - size // 2 + 2 * WINDOW
    assert running.server.storage.get_file(transfer_id).state == "done"


def test_an_unanswered_offer_can_be_accepted_after_a_server_restart(server_factory, client_factory, tmp_path):
    running = server_factory()
    alice, bob = logged_in_friends(running, client_factory)
    source = tmp_path / "later.txt"
    digest = make_file(source, MiB + 5)
    transfer_id = alice.kernel.files.send_file(user_id(bob), source)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    port = running.port
    marks = alice.events.mark(), bob.events.mark()
    running.stop()
    running = server_factory(port=port)
    for client, mark in zip((alice, bob), marks):
        client.events.wait_for("reconnected", start=mark, timeout=15)
    bob.kernel.files.accept(transfer_id, directory=tmp_path / "inbox")
    assert sha256_of(wait_done(alice, bob, transfer_id)) == digest


def test_a_final_ack_arriving_before_the_restarted_server_took_the_transfer_up(pair, server):
    """The recipient verified the file, the server restarted before the final ack arrived, and
    the resent ack comes before the start-up job has taken the transfer up again."""
    alice, bob, _ = pair
    now = int(time.time() * 1000)
    record = FileRecord("ab" * 16, user_id(alice), user_id(bob), "x.bin", 1000, "0" * 64, "sending", 0, now,
                        now + 60_000)
    server.server.storage.create_file(record)
    assert bob.kernel.request(PacketType.FILE_ACK, {"transfer_id": record.id, "offset": 1000, "complete": True}) == {}
    alice.events.wait_for("file_done", lambda e: e["transfer_id"] == record.id and e["direction"] == "send")
    assert server.server.storage.get_file(record.id).state == "done"


# -- the spool -------------------------------------------------------------------------------------------------------
def spool_files(running) -> list[str]:
    directory = running.config.spool_path
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def offline_friend(running, client_factory, alice: TestClient) -> TestClient:
    bob = client_factory(running.port)
    bob.register_and_login("bob")
    befriend(running, alice, bob)
    bob.kernel.logout()
    return bob


def log_back_in(running, client_factory, old: TestClient) -> TestClient:
    again = client_factory(running.port)
    again.phone = old.phone
    again.kernel.login(old.phone, old.password)
    return again


@pytest.mark.parametrize("restart", [False, True], ids=["same-server", "after-restart"])
def test_offline_recipient_gets_the_spooled_file_at_login(server_factory, client_factory, tmp_path, restart):
    running = server_factory()
    alice = client_factory(running.port)
    alice.register_and_login("alice")
    bob = offline_friend(running, client_factory, alice)
    source = tmp_path / "notes.pdf"
    digest = make_file(source, 3 * MiB + 17)
    transfer_id = alice.kernel.files.send_file(running.server.storage.get_user_by_phone(bob.phone).id, source)
    assert alice.events.wait_for("file_offered")["mode"] == "spool"
    alice.events.wait_for("file_spooled", lambda e: e["transfer_id"] == transfer_id)
    assert spool_files(running) == [transfer_id]
    if restart:
        alice.close()
        running.stop()
        running = server_factory()
    bob = log_back_in(running, client_factory, bob)
    offer = bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    assert offer["spooled"] and offer["name"] == "notes.pdf" and offer["from_nickname"] == "alice"
    inbox = tmp_path / "bob"
    bob.kernel.files.accept(transfer_id, directory=inbox)
    done = bob.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=30)
    assert sha256_of(Path(done["path"])) == digest
    if not restart:
        alice.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id and e["direction"] == "send")
    wait_until(lambda: spool_files(running) == [], 5, "the spooled copy to be removed")
    assert running.server.storage.get_file(transfer_id).state == "done"


def test_spool_delivery_on_both_backends(storage, server_factory, client_factory, tmp_path):
    running = server_factory(storage=storage)
    alice = client_factory(running.port)
    alice.register_and_login("alice")
    bob = offline_friend(running, client_factory, alice)
    source = tmp_path / "backend.bin"
    digest = make_file(source, MiB + 3)
    transfer_id = alice.kernel.files.send_file(storage.get_user_by_phone(bob.phone).id, source)
    alice.events.wait_for("file_spooled", lambda e: e["transfer_id"] == transfer_id)
    bob = log_back_in(running, client_factory, bob)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    bob.kernel.files.accept(transfer_id, directory=tmp_path / "bob")
    done = bob.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id)
    assert sha256_of(Path(done["path"])) == digest
    alice.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id)
    assert storage.get_file(transfer_id).state == "done"


def test_upload_to_the_spool_resumes_after_a_server_restart(server_factory, client_factory, tmp_path,
                                                           monkeypatch):
    running = server_factory()
    alice = client_factory(running.port)
    alice.register_and_login("alice")
    bob = offline_friend(running, client_factory, alice)
    original = server_spool.SpoolWriter.write

    def slow_write(self, data):
        time.sleep(0.003)
        original(self, data)
    monkeypatch.setattr(server_spool.SpoolWriter, "write", slow_write)
    size = 24 * MiB
    source = tmp_path / "upload.bin"
    digest = make_file(source, size)
    transfer_id = alice.kernel.files.send_file(running.server.storage.get_user_by_phone(bob.phone).id, source)
    alice.events.wait_for("file_progress", lambda e: e["direction"] == "send" and e["done"] >= size // 3)
    port = running.port
    running.stop()
    partial = running.config.spool_path / f"{transfer_id}.part"
    kept = partial.stat().st_size
    assert 0 < kept < size
    mark = alice.events.mark()
    running = server_factory(port=port)              # same database, data dir and port
    alice.events.wait_for("reconnected", start=mark, timeout=15)
    alice.events.wait_for("file_spooled", lambda e: e["transfer_id"] == transfer_id, timeout=30)
    progress = [e["done"] for e in alice.events.events[mark:] if e.kind == "file_progress"]
    assert progress and min(progress) >= kept        # continued, not restarted from zero
    bob = log_back_in(running, client_factory, bob)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    bob.kernel.files.accept(transfer_id, directory=tmp_path / "bob")
    done = bob.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id, timeout=30)
    assert sha256_of(Path(done["path"])) == digest


def test_spool_quota_refuses_what_does_not_fit(server_factory, client_factory, tmp_path):
    running = server_factory(spool_quota=MiB)
    alice = client_factory(running.port)
    alice.register_and_login("alice")
    bob = offline_friend(running, client_factory, alice)
    source = tmp_path / "big.bin"
    make_file(source, 2 * MiB)
    bob_id = running.server.storage.get_user_by_phone(bob.phone).id
    with pytest.raises(ApiError) as info:
        alice.kernel.files.send_file(bob_id, source)
    assert info.value.code == ErrorCode.SPOOL_FULL
    assert spool_files(running) == []
    small = tmp_path / "small.bin"
    make_file(small, 1000)
    alice.kernel.files.send_file(bob_id, small)
    alice.events.wait_for("file_spooled")


def test_expired_spool_files_are_removed(server_factory, client_factory, tmp_path):
    running = server_factory(spool_expiry=0.5, spool_sweep_interval=0.2)
    alice = client_factory(running.port)
    alice.register_and_login("alice")
    bob = offline_friend(running, client_factory, alice)
    source = tmp_path / "old.txt"
    make_file(source, 5000)
    transfer_id = alice.kernel.files.send_file(running.server.storage.get_user_by_phone(bob.phone).id, source)
    alice.events.wait_for("file_spooled")
    event = alice.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id, timeout=10)
    assert "in time" in event["message"]
    assert spool_files(running) == []
    assert running.server.storage.get_file(transfer_id).state == "expired"
    bob = log_back_in(running, client_factory, bob)
    barrier(bob)                                     # its FILE_PENDING after the login was answered
    assert bob.events.count("file_offer") == 0


def test_full_server_disk_fails_cleanly(server_factory, client_factory, tmp_path, monkeypatch):
    running = server_factory()
    alice = client_factory(running.port)
    alice.register_and_login("alice")
    bob = offline_friend(running, client_factory, alice)
    original = server_spool.SpoolWriter.write

    def write(self, data):
        if self.size >= MiB:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, data)
    monkeypatch.setattr(server_spool.SpoolWriter, "write", write)
    source = tmp_path / "big.bin"
    make_file(source, 4 * MiB)
    transfer_id = alice.kernel.files.send_file(running.server.storage.get_user_by_phone(bob.phone).id, source)
    event = alice.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id)
    assert event["error"] == "DISK_FULL" and "disk is full" in event["message"]
    wait_until(lambda: spool_files(running) == [], 5, "the partial spool file to be removed")
    assert running.server.storage.get_file(transfer_id).state == "failed"


# -- failures on the receiving side ----------------------------------------------------------------------------
def test_full_client_disk_removes_the_partial_file(pair, tmp_path, monkeypatch):
    alice, bob, inbox = pair
    original = client_files.write_all
    written = [0]

    def write_all(fd, data):
        if written[0] >= MiB:
            raise OSError(errno.ENOSPC, "No space left on device")
        written[0] += len(data)
        original(fd, data)
    monkeypatch.setattr(client_files, "write_all", write_all)
    source = tmp_path / "big.bin"
    make_file(source, 8 * MiB)
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    failed = bob.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id)
    assert failed["error"] == "DISK_FULL" and failed["message"] == "the disk is full"
    assert alice.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id)["error"] == "DISK_FULL"
    wait_until(lambda: list(inbox.iterdir()) == [], 5, "the partial file to be removed")


def test_accept_refuses_when_the_disk_is_too_small(pair, tmp_path, monkeypatch):
    alice, bob, inbox = pair
    source = tmp_path / "a.bin"
    make_file(source, 1000)
    monkeypatch.setattr(client_files.shutil, "disk_usage", lambda path: DiskUsage(10**9, 10**9 - 10, 10))
    transfer_id = alice.kernel.files.send_file(user_id(bob), source)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    with pytest.raises(ApiError) as info:
        bob.kernel.files.accept(transfer_id, directory=inbox)
    assert info.value.code == ErrorCode.DISK_FULL
    assert list(inbox.iterdir()) == []
    assert transfer_id in bob.kernel.files.offers   # still offered: the user may pick another folder


def test_damaged_file_is_reported_and_removed(pair, tmp_path, monkeypatch):
    alice, bob, inbox = pair
    source = tmp_path / "doc.txt"
    make_file(source, 300_000)
    monkeypatch.setattr(client_files, "file_sha256", lambda path: "0" * 64)
    transfer_id = offer_and_accept(alice, bob, source, inbox)
    failed = bob.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id)
    assert failed["error"] == "CHECKSUM_MISMATCH"
    assert alice.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id)["error"] == \
        "CHECKSUM_MISMATCH"
    wait_until(lambda: list(inbox.iterdir()) == [], 5, "the damaged file to be removed")


# -- who may send what -------------------------------------------------------------------------------------------------
def test_file_offers_are_rate_limited_per_user(server_factory, client_factory, tmp_path):
    running = server_factory(file_offers_per_minute=2)
    alice, bob = logged_in_friends(running, client_factory)
    source = tmp_path / "a.txt"
    make_file(source, 10)
    for _ in range(2):
        alice.kernel.files.send_file(user_id(bob), source)
    with pytest.raises(ApiError) as info:
        alice.kernel.files.send_file(user_id(bob), source)
    assert info.value.code == ErrorCode.RATE_LIMITED and info.value.details["limit"] == 2
    assert 25 <= info.value.details["retry_after"] <= 31
    bob.kernel.files.send_file(user_id(alice), source)     # bob has his own allowance
    assert running.server.status()["rate_limited_file_offers"] == 1


def test_only_friends_may_send_and_size_is_limited(server_factory, client_factory, tmp_path):
    running = server_factory(max_file_size=MiB)
    alice = client_factory(running.port)
    alice.register_and_login("alice")
    carol = client_factory(running.port)
    carol.register_and_login("carol")
    source = tmp_path / "a.bin"
    make_file(source, 10)
    with pytest.raises(ApiError) as info:
        alice.kernel.files.send_file(user_id(carol), source)
    assert info.value.code == ErrorCode.NOT_FRIENDS
    befriend(running, alice, carol)
    big = tmp_path / "big.bin"
    make_file(big, MiB + 1)
    with pytest.raises(ApiError) as info:
        alice.kernel.files.send_file(user_id(carol), big)
    assert info.value.code == ErrorCode.FILE_TOO_LARGE
    with pytest.raises(ApiError) as info:
        carol.kernel.request(PacketType.FILE_CANCEL, {"transfer_id": "ab" * 16})
    assert info.value.code == ErrorCode.NO_SUCH_TRANSFER


# -- hostile names --------------------------------------------------------------------------------------------------------
HOSTILE = ["../../etc/passwd", "a/b", "n" * 300 + ".txt", "bad\x00name\n\x1b.txt", "..", "\\..\\x"]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_are_neutralised_by_the_server(pair, tmp_path, hostile):
    alice, bob, inbox = pair
    source = tmp_path / "plain.txt"
    digest = make_file(source, 100)
    transfer_id = offer_and_accept(alice, bob, source, inbox, name=hostile)
    offer = bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id)
    assert offer["name"] == sanitize_filename(hostile)
    received = wait_done(alice, bob, transfer_id)
    assert received.parent == inbox and sha256_of(received) == digest
    assert len(received.name.encode()) <= 200


@pytest.mark.parametrize("hostile", HOSTILE)
def test_the_client_sanitises_names_from_a_hostile_server(pair, tmp_path, hostile):
    _, bob, inbox = pair
    offer = {"transfer_id": "cd" * 16, "from": 1, "from_nickname": "mallory", "name": hostile, "size": 5,
             "sha256": "0" * 64, "spooled": False}
    bob.kernel.files._on_offer(offer)   # as if the server had sent it
    event = bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == offer["transfer_id"])
    assert event["name"] == sanitize_filename(hostile)
    destination = bob.kernel.files.destination_for(offer["transfer_id"], inbox)
    assert destination.parent == inbox and destination.resolve().parent == inbox.resolve()


# -- storage on both backends -----------------------------------------------------------------------------------------------
def test_file_rows_on_both_backends(storage):
    record = FileRecord("ef" * 16, 1, 2, "a.txt", 1000, "0" * 64, "uploading", 0, 10, 20)
    storage.create_file(record)
    storage.create_file(FileRecord("01" * 16, 3, 2, "b.txt", 500, "1" * 64, "offered", 0, 11, 99))
    assert storage.get_file(record.id) == record
    assert storage.spool_reserved_bytes() == 1000
    assert [r.id for r in storage.open_files_of(2)] == [record.id, "01" * 16]
    assert storage.set_file_state(record.id, "spooled", only_from=("uploading",), spooled_bytes=1000)
    assert not storage.set_file_state(record.id, "spooled", only_from=("uploading",))
    assert storage.spool_file_ids() == {record.id}
    assert [r.id for r in storage.expired_spool_files(21)] == [record.id]
    assert [r.id for r in storage.live_files()] == ["01" * 16]
    assert storage.set_file_state("01" * 16, "failed")
    assert storage.live_files() == [] and [r.id for r in storage.open_files_of(3)] == []
