"""sd_notify, the watchdog, SIGHUP and SIGTERM, and the systemd unit."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from server.daemon import Notifier, status_line, watchdog_interval
from tests import helpers
from tests.helpers import HELLO, RESULT, raw_connect, raw_request, start_server, wait_until
from tests.notify import NotifySocket

REPO = Path(__file__).resolve().parent.parent


def test_notifier_speaks_to_path_and_abstract_addresses(tmp_path):
    path_socket = NotifySocket(str(tmp_path / "notify"))
    abstract_socket = NotifySocket(f"@rtm-test-{uuid.uuid4().hex}")
    try:
        for target in (path_socket, abstract_socket):
            notifier = Notifier(target.address)
            assert notifier.ready("up")
            assert notifier.watchdog()
            assert notifier.stopping()
            notifier.close()
            target.wait_for("STOPPING=1")
            assert target.lines() == ["READY=1\nSTATUS=up", "WATCHDOG=1", "STOPPING=1"]
    finally:
        path_socket.close()
        abstract_socket.close()


def test_notifier_without_socket_is_silent_and_a_dead_socket_does_not_raise(tmp_path):
    assert not Notifier(None).ready()
    assert not Notifier(str(tmp_path / "nobody-listens")).watchdog()


def test_watchdog_interval_is_half_the_timeout_and_respects_watchdog_pid():
    assert watchdog_interval({"WATCHDOG_USEC": "20000000"}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}) == 10.0
    assert watchdog_interval({"WATCHDOG_USEC": "20000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


def test_status_line_counts_rooms_whatever_their_shape():
    assert status_line({"connections": 3, "users_online": 2, "rooms": 1}) == \
        "3 connections, 2 users online, 1 rooms"
    assert status_line({"connections": 0, "users_online": 0, "rooms": [{"id": 1}, {"id": 2}]}).endswith("2 rooms")


def test_watchdog_pings_stop_while_the_reactor_is_blocked(tmp_path, monkeypatch, notify_socket):
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    running = start_server(helpers.test_config(tmp_path))
    try:
        ready = notify_socket.wait_for("READY=1")
        first = notify_socket.wait_for("WATCHDOG=1", start=ready)
        notify_socket.wait_for("WATCHDOG=1", start=first + 1)
        blocked = threading.Event()
        block_for = 2.0

        def block_reactor() -> None:
            blocked.set()
            time.sleep(block_for)  # deliberately stuck, as a runaway handler would be
        running.server.reactor.call_soon_threadsafe(block_reactor)
        assert blocked.wait(5)
        began = time.monotonic()
        time.sleep(block_for + 0.6)
        pings = [t for t, text in list(notify_socket.messages) if text == "WATCHDOG=1"]
        # (0.3 s of slack: a ping sent just before the block may be read late on a busy machine)
        during = [t for t in pings if began + 0.3 < t < began + block_for - 0.05]
        after = [t for t in pings if t > began + block_for]
        assert during == [], f"{len(during)} pings while the reactor was stuck"
        assert after, "the pings did not resume once the reactor ran again"
    finally:
        running.stop()
    stopping = notify_socket.wait_for("STOPPING=1")
    assert stopping > ready


def _server_env(tmp_path: Path, notify: NotifySocket, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEETING_", "NOTIFY_", "WATCHDOG_"))}
    env.update({"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000", "MEETING_SCRYPT_N": "1024",
                "PYTHONPATH": str(REPO)}, **extra)
    return env


def _listening_port(notify: NotifySocket) -> int:
    index = notify.wait_for("READY=1")
    text = notify.lines()[index]
    return int(text.rsplit("listening on port ", 1)[1].split()[0])


def test_server_process_notifies_ready_reloading_stopping_in_order(tmp_path, notify_socket):
    ini = tmp_path / "server.ini"
    ini.write_text("[server]\nport = 0\nlog_level = INFO\n")
    log_file = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "server", "--config", str(ini), "--data-dir", str(tmp_path),
                             "--log-file", str(log_file)],
                            env=_server_env(tmp_path, notify_socket), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port = _listening_port(notify_socket)
        sock = raw_connect(port)
        assert raw_request(sock, 1, HELLO).type == RESULT
        notify_socket.wait_for("WATCHDOG=1")
        status = notify_socket.wait_for("STATUS=1 connections", timeout=10)
        assert "users online" in notify_socket.lines()[status]
        # SIGHUP: a new log level from the file, the log reopened after logrotate moved it.
        ini.write_text("[server]\nport = 0\nlog_level = DEBUG\n")
        log_file.rename(tmp_path / "server.log.1")
        mark = len(notify_socket.lines())
        proc.send_signal(signal.SIGHUP)
        reloading = notify_socket.wait_for("RELOADING=1", start=mark)
        assert "MONOTONIC_USEC=" in notify_socket.lines()[reloading]
        notify_socket.wait_for("READY=1", start=reloading + 1)
        wait_until(lambda: log_file.exists() and "log_level=DEBUG" in log_file.read_text(), 10,
                   "the log reopened with the new level")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close() if "sock" in locals() else None
    lines = notify_socket.lines()
    kinds = [line.splitlines()[0].split("=")[0] for line in lines if not line.startswith(("WATCHDOG", "STATUS"))]
    assert kinds == ["READY", "RELOADING", "READY", "STOPPING"]
    assert not (tmp_path / "admin.sock").exists(), "the admin socket was left behind"


def test_bad_config_stops_the_start_naming_the_key(tmp_path, notify_socket):
    ini = tmp_path / "server.ini"
    ini.write_text("[server]\nheartbeat_timout = 40\n")
    proc = subprocess.run([sys.executable, "-m", "server", "--config", str(ini)], env=_server_env(tmp_path, notify_socket),
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "heartbeat_timout" in proc.stderr
    assert not any(line.startswith("READY=1") for line in notify_socket.lines())


@pytest.mark.parametrize("name, lines", [
    ("meeting-server.service", ()),
    ("meeting-server-workers.service", ("KillMode=mixed", "NotifyAccess=main", "--workers auto")),
])
def test_systemd_unit_verifies(tmp_path, name, lines):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here")
    shipped = (REPO / "scripts" / name).read_text()
    installed_binary = "/opt/real-time-meeting/venv/bin/meeting-server"
    assert f"ExecStart={installed_binary} " in shipped
    # verify insists that ExecStart exists: point it at this checkout's entry point, which is
    # what install.sh puts at the installed path; every other line is checked as shipped.
    here = Path(sys.executable).parent / "meeting-server"
    if not here.exists():
        pytest.skip(f"no meeting-server entry point next to {sys.executable}")
    unit = tmp_path / name
    unit.write_text(shipped.replace(installed_binary, str(here)))
    proc = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "User=meeting",
                 "StateDirectory=real-time-meeting", "ProtectSystem=strict", "NoNewPrivileges=yes", *lines):
        assert line in shipped


def test_sigterm_while_clients_chat_and_transfer_loses_no_acknowledged_message(tmp_path):
    """SIGTERM in the middle of a chat flood and a file transfer: the server exits 0 within the
    stop timeout, every client is told GOING_AWAY, every message acknowledged to its sender is
    in the database, and the interrupted transfer is still known after a restart."""
    import asyncio
    import hashlib
    import sqlite3

    from client.loadtest.metrics import Metrics
    from client.loadtest.sim import SimClient
    from common.packets import PacketType
    from tests.helpers import unique_phone
    from tests.server_process import ServerProcess

    db_path = tmp_path / "meeting.db"
    server = ServerProcess(f"sqlite:///{db_path}", tmp_path, env={"MEETING_MESSAGES_PER_MINUTE": "0"})
    metrics = Metrics(time.monotonic())
    acked: dict[str, int] = {}
    file_size = 256 * 1024 * 1024   # far more than can move before the signal

    async def logged_in(port: int, nickname: str, phone: str | None = None) -> SimClient:
        client = SimClient(metrics, phone or unique_phone(), nickname)
        await client.connect("127.0.0.1", port)
        await client.hello()
        await client.register_and_login()
        return client

    async def befriend(a: SimClient, b: SimClient) -> None:
        await a.request(PacketType.FRIEND_REQUEST, {"user_id": b.user["id"]})
        await b.request(PacketType.FRIEND_REQUEST, {"user_id": a.user["id"]})

    async def scenario(port: int) -> tuple[list[SimClient], str]:
        alice, bob, carol, dave = [await logged_in(port, name) for name in ("alice", "bob", "carol", "dave")]
        await befriend(alice, bob)
        await befriend(carol, dave)
        going_away = {c.nickname: asyncio.get_running_loop().create_future() for c in (alice, bob, carol, dave)}
        for client in (alice, bob, carol, dave):
            client.handlers[PacketType.GOING_AWAY] = (
                lambda body, c=client: going_away[c.nickname].done() or going_away[c.nickname].set_result(True))

        async def chat_lane(lane: int) -> None:
            seq = 0
            while alice.connected:
                seq += 1
                key = f"term.{lane}.{seq}"
                try:
                    reply = await alice.request(PacketType.CHAT_SEND, {"to": bob.user["id"], "text": f"m {key}",
                                                                       "client_msg_id": key}, timeout=20)
                except Exception:
                    return          # not acknowledged: the client would re-send it after reconnecting
                acked[key] = reply["id"]

        accepted = asyncio.get_running_loop().create_future()
        dave.handlers[PacketType.FILE_OFFER_EVENT] = lambda offer: asyncio.ensure_future(dave.request(
            PacketType.FILE_ANSWER, {"transfer_id": offer.transfer_id, "accept": True}))
        carol.handlers[PacketType.FILE_ANSWER_EVENT] = lambda body: accepted.done() or accepted.set_result(True)
        confirmed = [0]
        carol.handlers[PacketType.FILE_ACK] = lambda ack: confirmed.__setitem__(0, max(confirmed[0], ack.offset))
        dave_got = [0]

        def on_chunk(body: bytes) -> None:
            dave_got[0] += len(body) - 24
            dave.send(PacketType.FILE_ACK, {"transfer_id": transfer_id, "offset": dave_got[0]})
        dave.handlers[PacketType.FILE_CHUNK] = on_chunk
        chunk = os.urandom(256 * 1024)
        offer = await carol.request(PacketType.FILE_OFFER, {"to": dave.user["id"], "name": "big.bin",
                                                            "size": file_size, "sha256": hashlib.sha256(b"").hexdigest()})
        transfer_id = offer["transfer_id"]
        await asyncio.wait_for(accepted, 10)

        async def send_file() -> None:
            from common import frame as wire
            offset, raw = 0, bytes.fromhex(transfer_id)
            while carol.connected and offset < file_size:
                if offset + len(chunk) - confirmed[0] > offer["window"]:
                    await asyncio.sleep(0.002)
                    continue
                await carol.writable()
                carol.send_frame(wire.encode_frame(PacketType.FILE_CHUNK, raw + offset.to_bytes(8, "big") + chunk))
                offset += len(chunk)

        lanes = [asyncio.create_task(chat_lane(i)) for i in range(4)]
        sender = asyncio.create_task(send_file())
        while len(acked) < 200 or dave_got[0] < 4 * len(chunk):
            await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        server.process.send_signal(signal.SIGTERM)
        code = await loop.run_in_executor(None, server.process.wait, 15)
        await asyncio.wait_for(asyncio.gather(*lanes, sender), 10)
        assert code == 0, server.log_tail()
        for name in ("alice", "bob", "dave"):
            assert going_away[name].done(), f"{name} was not told GOING_AWAY:\n{server.log_tail(60)}"
        # carol is still pushing chunks when the server closes: the unread chunks make the
        # close a reset, and her failing write ends the connection before GOING_AWAY is read.
        assert going_away["carol"].done() or not carol.connected
        assert 0 < dave_got[0] < file_size
        return [alice, bob, carol, dave], transfer_id

    try:
        port = server.start()
        started = time.monotonic()
        clients, transfer_id = asyncio.run(scenario(port))
        assert time.monotonic() - started < 60
        assert "stopped" in server.log
        with sqlite3.connect(db_path) as db:
            stored = dict(db.execute("SELECT client_msg_id, id FROM messages").fetchall())
            assert len(acked) >= 200
            lost = {key for key in acked if stored.get(key) != acked[key]}
            assert not lost, f"{len(lost)} acknowledged messages missing after SIGTERM"

            state = db.execute("SELECT state FROM files WHERE id = ?", (transfer_id,)).fetchone()[0]
        assert state != "done", "a half-sent file was recorded as delivered"

        async def after_restart(port: int) -> dict:
            carol = await logged_in(port, "carol", clients[2].phone)
            reply = await carol.request(PacketType.FILE_RESUME, {"transfer_id": transfer_id})
            carol.close()
            return reply
        port = server.start()
        # A live transfer cut by the restart waits to be resumed: the sender is told to hold
        # on (no offset) until the recipient says how much it has.
        reply = asyncio.run(after_restart(port))
        assert reply["state"] == "sending" and "offset" not in reply
        assert server.terminate() == 0
    finally:
        server.stop()


def test_journal_lines_carry_the_syslog_priority():
    import logging

    from server.logsetup import JournalFormatter
    formatter = JournalFormatter()
    record = logging.LogRecord("server.connection", logging.WARNING, __file__, 1,
                               "peer=%s user=%s closed: %s", ("10.0.0.1:5000", 7, "slow reader"), None)
    assert formatter.format(record) == "<4>WARNING server.connection: peer=10.0.0.1:5000 user=7 closed: slow reader"
    record = logging.LogRecord("server", logging.ERROR, __file__, 1, "two\nlines", (), None)
    assert formatter.format(record) == "<3>ERROR server: two\n<3>lines"


def test_journald_format_only_when_stderr_is_the_journal_stream(tmp_path):
    code = ("import logging, os, sys\n"
            "st = os.fstat(2)\n"
            "os.environ['JOURNAL_STREAM'] = sys.argv[1] or f'{st.st_dev}:{st.st_ino}'\n"
            "from server.logsetup import setup_logging\n"
            "setup_logging('INFO')\n"
            "logging.getLogger('server').warning('hello')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ours = subprocess.run([sys.executable, "-c", code, ""], env=env, capture_output=True, text=True, timeout=30)
    assert ours.stderr == "<4>WARNING server: hello\n"
    inherited = subprocess.run([sys.executable, "-c", code, "1:2"], env=env, capture_output=True, text=True,
                               timeout=30)
    assert inherited.stderr.endswith(" WARNING server: hello\n") and not inherited.stderr.startswith("<")


def test_open_files_limit_is_raised_up_to_the_hard_limit():
    code = ("import resource\n"
            "from server.daemon import raise_fd_limit\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
            "print(raise_fd_limit(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0], hard)\n"
            "print(raise_fd_limit(100))\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=30)
    raised, now, hard = proc.stdout.split("\n")[0].split()
    expected = 1000 if hard == str(-1) or int(hard) >= 1000 else int(hard)
    assert int(raised) == int(now) == expected
    assert proc.stdout.split("\n")[1] == str(expected)   # never lowered
