"""Admin status over the local unix socket, and `meeting-server status`."""
from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from server.admin import AdminError, format_status, print_status, query_status
from tests.helpers import HELLO, RESULT, raw_connect, raw_request, wait_until

REPO = Path(__file__).resolve().parent.parent


def test_status_reports_live_figures(server, client_factory):
    alice = client_factory(server.port)
    alice.register_and_login("alice")
    idle = raw_connect(server.port)
    assert raw_request(idle, 1, HELLO).type == RESULT
    path = server.config.admin_socket_path
    figures = query_status(path)
    assert figures["connections"] == 2
    assert figures["users_online"] == 1
    for key in ("pool_queue", "bytes_in", "bytes_out", "frames_in", "frames_out", "media_frames_dropped"):
        assert isinstance(figures[key], int), key
    assert figures["frames_in"] >= 4  # HELLO, REGISTER, LOGIN from alice + HELLO raw
    idle.close()


def test_socket_is_private_to_the_server_user(server):
    mode = stat.S_IMODE(os.stat(server.config.admin_socket_path).st_mode)
    assert mode == 0o600


def test_status_providers_appear_in_the_output(server):
    server.server.status_providers.append(lambda: {"rooms": 2, "room_members": 5})
    out = io.StringIO()
    assert print_status(server.config, out=out) == 0
    text = out.getvalue()
    assert "rooms:" in text and "room members:" in text and "users online:" in text
    out = io.StringIO()
    assert print_status(server.config, as_json=True, out=out) == 0
    assert json.loads(out.getvalue())["room_members"] == 5


def test_unknown_command_is_answered_with_an_error(server):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(server.config.admin_socket_path))
    sock.sendall(b"shutdown\n")
    answer = json.loads(sock.makefile("rb").readline())
    sock.close()
    assert answer["ok"] is False and "shutdown" in answer["error"]


def test_status_without_a_server_says_so(tmp_path, capsys):
    with pytest.raises(AdminError, match="no admin socket"):
        query_status(tmp_path / "admin.sock")


def test_socket_is_removed_at_shutdown(server):
    path = server.config.admin_socket_path
    assert path.exists()
    server.stop()
    assert not path.exists()


def test_a_second_server_does_not_steal_a_live_socket(server_factory):
    first = server_factory()
    second = server_factory()
    assert second.server.admin is None
    assert query_status(first.config.admin_socket_path)["connections"] == 0
    second.stop()
    assert first.config.admin_socket_path.exists()


def test_stale_socket_file_is_replaced(tmp_path, server_factory):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "admin.sock"))
    stale.close()  # the file stays, nobody listens: what a crash leaves behind
    running = server_factory()
    assert query_status(running.config.admin_socket_path)["connections"] == 0


def test_format_status_renders_nested_domain_figures():
    text = format_status({"connections": 1200, "rooms": [{"id": "123456789", "members": [1, 2]}],
                          "files": {"active": 2}})
    assert "connections:" in text and "1,200" in text
    assert "rooms: 1" in text and "id=123456789" in text and "members=1 2" in text
    assert "files:" in text and "active:" in text


def test_cli_status_command(server):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETING_")}
    env["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "server", "status", "--data-dir", server.config.data_dir]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "connections:" in proc.stdout and "pool queue depth:" in proc.stdout
    proc = subprocess.run(cmd + ["--json"], env=env, capture_output=True, text=True, timeout=30)
    assert json.loads(proc.stdout)["connections"] == 0
    server.stop()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "no admin socket" in proc.stderr


def test_traffic_figures_are_totals_since_the_start(server):
    sock = raw_connect(server.port)
    assert raw_request(sock, 1, HELLO).type == RESULT
    before = query_status(server.config.admin_socket_path)
    sock.close()
    wait_until(lambda: query_status(server.config.admin_socket_path)["connections"] == 0, 5,
               "the closed connection leaving the figures")
    after = query_status(server.config.admin_socket_path)
    assert after["frames_in"] >= before["frames_in"] >= 1
    assert after["bytes_out"] >= before["bytes_out"] > 0
