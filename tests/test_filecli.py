"""`meeting-client send` / `receive`: files between two terminals through a real server."""
from __future__ import annotations

import io
import os
import threading
import time

import pytest

from client import cli
from client.files import file_sha256
from client.events import Event
from client.filecli import Terminal, format_progress
from tests.helpers import logged_in_friends, wait_until


@pytest.fixture
def friends(server, client_factory, monkeypatch):
    """Two registered friends (their passwords in ALICE_PASSWORD / BOB_PASSWORD), logged out."""
    alice, bob = logged_in_friends(server, client_factory)
    alice.close()
    bob.close()
    monkeypatch.setenv("ALICE_PASSWORD", alice.password)
    monkeypatch.setenv("BOB_PASSWORD", bob.password)
    return alice.phone, bob.phone, bob.kernel.user["id"]


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    from client.filecli import receive_main, send_main
    status = (send_main if argv[0] == "send" else receive_main)(argv[1:], out)
    return status, out.getvalue()


def test_send_and_receive_from_the_terminal_with_progress(server, friends, tmp_path):
    alice, bob, bob_id = friends
    address = f"127.0.0.1:{server.port}"
    source = tmp_path / "report.pdf"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    inbox = tmp_path / "inbox"
    received: list[tuple[int, str]] = []
    receiver = threading.Thread(target=lambda: received.append(run(
        ["receive", "--server", address, "--phone", bob, "--password-env", "BOB_PASSWORD", "--dir", str(inbox),
         "--count", "1", "--timeout", "30"])))
    receiver.start()
    # The offer goes live only to a recipient already online; otherwise it is spooled.
    wait_until(lambda: server.server.sessions.is_online(bob_id), 10, "the receiver logging in")
    status, sent = run(["send", "--server", address, "--phone", alice, "--password-env", "ALICE_PASSWORD",
                        "--to", bob, "--timeout", "30", str(source)])
    receiver.join(40)
    assert status == 0, sent
    assert received and received[0][0] == 0, received
    assert file_sha256(inbox / "report.pdf") == file_sha256(source)
    for out in (sent, received[0][1]):
        assert "100%" in out and "report.pdf: delivered" in out
    assert f"-> {inbox / 'report.pdf'}" in received[0][1]


def test_an_offline_friend_gets_the_file_later(server, friends, tmp_path):
    alice, bob, _ = friends
    address = f"127.0.0.1:{server.port}"
    source = tmp_path / "later.bin"
    source.write_bytes(b"x" * 1000)
    status, sent = run(["send", "--server", address, "--phone", alice, "--password-env", "ALICE_PASSWORD",
                        "--to", bob, "--timeout", "30", str(source)])
    assert status == 0 and "friend is offline; the server keeps it" in sent
    status, received = run(["receive", "--server", address, "--phone", bob, "--password-env", "BOB_PASSWORD",
                            "--dir", str(tmp_path / "inbox"), "--count", "1", "--timeout", "30"])
    assert status == 0, received
    assert (tmp_path / "inbox" / "later.bin").read_bytes() == b"x" * 1000


def test_clear_errors_and_exit_statuses(server, friends, tmp_path):
    alice, bob, _ = friends
    address = f"127.0.0.1:{server.port}"
    common = ["--server", address, "--phone", alice, "--password-env", "ALICE_PASSWORD"]
    status, out = run(["send", *common, "--to", bob, str(tmp_path / "missing.txt")])
    assert status == 2 and "missing.txt: no such file" in out
    (tmp_path / "a.txt").write_text("hello")
    status, out = run(["send", *common, "--to", "13999999999", str(tmp_path / "a.txt")])
    assert status == 1 and "error:" in out
    status, out = run(["send", "--server", "nowhere:99999", "--phone", alice, "--to", bob, str(tmp_path / "a.txt")])
    assert status == 2 and "--server 'nowhere:99999': '99999' is not a port number" in out
    status, out = run(["receive", *common, "--dir", str(tmp_path), "--timeout", "0.5"])
    assert status == 1 and "nothing happened for 0.5 s" in out


def test_the_entry_point_dispatches_to_the_file_commands(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["send", "--help"])
    assert info.value.code == 0 and "--to" in capsys.readouterr().out


def test_progress_line():
    line = format_progress("a.iso", 512 * 1024 * 1024, 1024 * 1024 * 1024, 100 * 1024 * 1024, 5.2)
    assert line == "a.iso   50%  512.0/1024.0 MiB  100.0 MiB/s  0:05 left"
    assert format_progress("empty", 0, 0, 0, None).endswith("100%  0.0/0.0 MiB  0.0 MiB/s  --:-- left")


def test_the_timeout_counts_from_the_last_file_event():
    """--timeout gives up on silence, not on a long transfer that keeps moving."""
    terminal = Terminal(io.StringIO())
    finished = threading.Event()

    def transfer() -> None:
        for done in range(30):           # 1.5 s of progress, an event every 50 ms
            terminal(Event("file_progress", {"transfer_id": "t", "done": done, "total": 30, "rate": 1, "eta": 1}))
            time.sleep(0.05)
        finished.set()
        terminal(Event("file_done", {"transfer_id": "t"}))
    worker = threading.Thread(target=transfer)
    worker.start()
    terminal.wait(finished.is_set, idle_timeout=1.0)
    worker.join()
    with pytest.raises(TimeoutError, match="nothing happened for 0.2 s"):
        terminal.wait(lambda: False, idle_timeout=0.2)
