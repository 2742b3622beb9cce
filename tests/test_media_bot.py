"""`meeting-client bot` as a user runs it: two bot processes meet and report what they received."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import unique_phone, wait_until


def bot_command(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "client", "bot", "--server", f"127.0.0.1:{port}", "--register",
            "--phone", unique_phone(), "--size", "320x240", "--fps", "10", "--bitrate", "150000", *extra]


def test_two_bot_processes_meet_and_report(server, tmp_path):
    number_file, report_a, report_b = (str(tmp_path / name) for name in ("room", "a.json", "b.json"))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    host = subprocess.Popen(bot_command(server.port, "--nickname", "host", "--create", "--number-file", number_file,
                                        "--duration", "6", "--report", report_a), env=env)
    try:
        def number_written() -> bool:
            if os.path.exists(number_file) and open(number_file).read().strip():
                return True
            assert host.poll() is None, "the first bot exited without creating a meeting"
            return False
        wait_until(number_written, 15, "the first bot creating a meeting")
        number = open(number_file).read().strip()
        guest = subprocess.run(bot_command(server.port, "--nickname", "guest", "--join", number, "--tone", "660",
                                           "--duration", "3", "--report", report_b), env=env, timeout=30)
        assert guest.returncode == 0
        assert host.wait(timeout=30) == 0
    finally:
        if host.poll() is None:
            host.kill()
    a, b = json.load(open(report_a)), json.load(open(report_b))
    assert a["room"] == b["room"] == number
    seen_by_guest = b["received"][str(a["user_id"])]
    assert seen_by_guest["camera"]["decoded"] >= 20, seen_by_guest
    assert seen_by_guest["camera"]["first_picture_s"] < 1.0
    assert seen_by_guest["camera"]["delay_ms"]["p95"] < 200
    assert seen_by_guest["audio"]["decoded"] >= 100
    seen_by_host = a["received"][str(b["user_id"])]
    assert seen_by_host["camera"]["decoded"] >= 20 and seen_by_host["audio"]["decoded"] >= 100
    assert a["sent"]["video"]["sent"] >= 50 and a["sent"]["video"]["keyframes"] >= 1


def test_bot_needs_a_room_and_a_reachable_server(tmp_path):
    no_room = subprocess.run([sys.executable, "-m", "client", "bot", "--register"], capture_output=True, text=True,
                             timeout=30)
    assert no_room.returncode == 2 and "--create" in no_room.stderr
    unreachable = subprocess.run(bot_command(1, "--create", "--duration", "1"), capture_output=True, text=True,
                                 timeout=60)
    assert unreachable.returncode == 1 and "127.0.0.1:1" in unreachable.stderr
