"""Each load-test scenario runs briefly against a real server and reports sane figures."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from client.loadtest.cli import main, parse_rate, parse_size
from client.loadtest.metrics import Metrics, percentile, summarize
from client.loadtest.sim import SWEEP_INTERVAL, RequestTimeout, SimClient
from common import frame as wire
from common.packets import PacketType

REPO = Path(__file__).resolve().parent.parent


def run_loadtest(capsys, server, *argv: str) -> dict:
    code = main([*argv, "--server", f"127.0.0.1:{server.port}", "--json", "--quiet",
                 "--admin-socket", str(server.config.admin_socket_path)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    return result


def test_percentiles_and_merging():
    ordered = [float(v) for v in range(1, 101)]
    assert percentile(ordered, 50) == 50 and percentile(ordered, 99) == 99 and percentile(ordered, 100) == 100
    a, b = Metrics(0.0), Metrics(0.0)
    a.latency("x", 1.0, 1.010)
    b.latency("x", 2.0, 2.030)
    b.error("ERROR RATE_LIMITED")
    a.merge(b.dump())
    row = summarize(a.ms["x"], 1.0)
    assert row["count"] == 2 and round(row["max_ms"]) == 30
    assert a.errors["ERROR RATE_LIMITED"] == 1


def test_size_and_rate_units():
    assert parse_size("4M") == 4 * 1024 * 1024 and parse_size("512k") == 512 * 1024 and parse_size("100") == 100
    assert parse_rate("500k") == 500_000 and parse_rate("2M") == 2_000_000


def test_connect_scenario(server_factory, capsys, tmp_path):
    server = server_factory(heartbeat_interval=1.0, heartbeat_timeout=5.0)
    plot = tmp_path / "latency.png"
    result = run_loadtest(capsys, server, "connect", "--clients", "40", "--processes", "2", "--ramp", "200",
                          "--duration", "2", "--heartbeat", "0.3", "--plot", str(plot))
    assert result["errors"] == {}
    assert result["counters"]["logged_in"] == 40
    assert result["metrics"]["login"]["count"] == 40
    heartbeats = result["metrics"]["heartbeat_rtt"]
    assert heartbeats["count"] >= 40 * 3          # ~6 each over 2 s at 0.3 s
    assert 0 < heartbeats["p50_ms"] <= heartbeats["p99_ms"] <= heartbeats["max_ms"]
    during = result["server"]["during"]
    assert during["connections"] == 40 and during["users_online"] == 40
    assert plot.stat().st_size > 10_000


def test_clients_spread_over_several_servers_with_figures_per_server(server_factory, capsys, tmp_path):
    """--server a,b: the clients go round robin (each server really holds its half, as its own
    admin status says), and the report gives each server's clients, latencies and errors."""
    first = server_factory()
    second = server_factory(data_dir=str(tmp_path / "second"), db=f"sqlite:///{tmp_path}/second.db")
    servers = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    code = main(["connect", "--server", ",".join(servers), "--clients", "30", "--processes", "2", "--ramp", "300",
                 "--duration", "1.5", "--heartbeat", "0.3", "--json", "--quiet",
                 "--admin-socket", str(first.config.admin_socket_path)])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    assert result["counters"]["logged_in"] == 30 and result["errors"] == {}
    assert set(result["servers"]) == set(servers)
    for figures in result["servers"].values():
        assert figures["counters"]["logged_in"] == 15
        assert figures["metrics"]["login"]["count"] == 15 and figures["metrics"]["heartbeat_rtt"]["count"] >= 15
    assert result["server"]["during"]["users_online"] == 15      # the first server's own count

    main(["connect", "--server", ",".join(servers), "-n", "4", "-p", "1", "--duration", "0.3", "--quiet"])
    table = capsys.readouterr().out
    assert f"against {servers[0]}, {servers[1]}" in table
    for server in servers:
        assert f"server {server}: 2 clients logged in, 0 errors" in table


def test_a_bad_server_address_is_refused_with_its_reason(capsys):
    assert main(["connect", "--server", "127.0.0.1:8600,nowhere:99999", "--quiet"]) == 2
    assert "'99999' is not a port number" in capsys.readouterr().err


def test_connect_reports_refusals_by_kind(server_factory, capsys):
    server = server_factory(max_connections=10)
    code = main(["connect", "--server", f"127.0.0.1:{server.port}", "--clients", "15", "--processes", "1",
                 "--ramp", "500", "--duration", "0.5", "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["counters"]["logged_in"] == 10
    assert sum(result["errors"].values()) == 5
    assert any("TOO_MANY_CONNECTIONS" in kind or "connection lost" in kind for kind in result["errors"])


def test_wrapper_script_shows_the_table(server):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "loadtest.py"), "connect", "--server",
                           f"127.0.0.1:{server.port}", "-n", "6", "-p", "1", "--duration", "0.5",
                           "--heartbeat", "0.2", "--admin-socket", str(server.config.admin_socket_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "heartbeat_rtt" in proc.stdout and "p99 ms" in proc.stdout and "errors: none" in proc.stdout
    assert "server (admin status" in proc.stdout
    assert "logged in" in proc.stderr   # the progress bar


def test_chat_scenario_delivers_every_acknowledged_message(server_factory, capsys):
    server = server_factory(messages_per_minute=0)
    result = run_loadtest(capsys, server, "chat", "--pairs", "6", "--processes", "2", "--duration", "1.5",
                          "--window", "4")
    assert result["errors"] == {}
    counters = result["counters"]
    assert counters["chat_sent"] > 100
    assert counters["chat_delivered"] == counters["chat_sent"]
    ack, delivery = result["metrics"]["chat_ack"], result["metrics"]["chat_delivery"]
    assert ack["count"] == counters["chat_sent"] and delivery["count"] == counters["chat_sent"]
    assert result["steady_rates"]["messages/s delivered"] > 0
    assert result["server"]["during"]["users_online"] == 12


def test_chat_scenario_at_a_fixed_rate(server_factory, capsys):
    server = server_factory(messages_per_minute=0)
    result = run_loadtest(capsys, server, "chat", "--pairs", "4", "--processes", "2", "--duration", "2",
                          "--rate", "100")
    sent = result["counters"]["chat_sent"]
    assert 120 <= sent <= 260, sent        # ~100/s over 2 s (plus the last in flight)
    assert result["counters"]["chat_delivered"] == sent


def test_files_scenario_moves_verified_bytes(server_factory, capsys):
    server = server_factory(file_offers_per_minute=0)
    result = run_loadtest(capsys, server, "files", "--pairs", "2", "--processes", "2", "--duration", "1",
                          "--file-size", "1M")
    assert result["errors"] == {}
    assert result["counters"]["files_done"] >= 2
    assert result["counters"]["file_bytes"] == result["counters"]["files_done"] * 1024 * 1024
    assert result["metrics"]["file_transfer"]["count"] == result["counters"]["files_done"]
    assert result["steady_rates"]["MB/s of files"] > 0


def test_room_scenario_relays_every_frame(server_factory, capsys):
    server = server_factory()
    result = run_loadtest(capsys, server, "room", "--rooms", "2", "--members", "3", "--processes", "2",
                          "--duration", "1.5", "--fps", "10", "--bitrate", "200k", "--video-size", "160x120")
    assert result["errors"] == {}
    counters = result["counters"]
    assert counters["rooms_joined"] == 2
    assert counters["video_frames_sent"] >= 6 * 10      # 6 publishers, ~15 frames each
    assert counters["video_frames_received"] == counters["video_frames_expected"]
    assert counters["audio_frames_received"] == counters["audio_frames_expected"] > 0
    assert result["metrics"]["video_latency"]["p50_ms"] < 1000
    during = result["server"]["during"]
    assert during["rooms"] == 2 and during["room_members"] == 6


def test_server_going_away_mid_run_is_reported_by_kind(server_factory, capsys):
    import threading
    server = server_factory()
    stopper = threading.Timer(3.0, server.stop)
    stopper.start()
    try:
        code = main(["connect", "--server", f"127.0.0.1:{server.port}", "--clients", "8", "--processes", "1",
                     "--ramp", "100", "--duration", "30", "--heartbeat", "0.3", "--json", "--quiet"])
    finally:
        stopper.join()
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["counters"]["logged_in"] == 8
    assert result["errors"] == {"connection lost: GOING_AWAY": 8}


def test_connect_over_tls_with_a_pin_or_a_ca_file(server_factory, capsys, tmp_path):
    made = subprocess.run(["bash", str(REPO / "scripts" / "make-cert.sh"), str(tmp_path / "tls")],
                          capture_output=True, text=True, timeout=60, check=True)
    pin = made.stdout.strip().splitlines()[-1]
    cert, key = str(tmp_path / "tls" / "server.crt"), str(tmp_path / "tls" / "server.key")
    server = server_factory(tls_cert=cert, tls_key=key)
    for trust in (["--tls-pin", pin], ["--tls-ca", cert]):
        result = run_loadtest(capsys, server, "connect", "--clients", "6", "--processes", "1", "--duration", "0.6",
                              "--heartbeat", "0.2", *trust)
        assert result["errors"] == {} and result["counters"]["logged_in"] == 6, trust
    wrong = "00" * 32
    code = main(["connect", "--server", f"127.0.0.1:{server.port}", "--clients", "2", "--processes", "1",
                 "--duration", "0.2", "--tls-pin", wrong, "--json", "--quiet"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["errors"] == {"FingerprintMismatch": 2}


@contextlib.contextmanager
def mute_server(mute: set[int]) -> Iterator[int]:
    """A stand-in server on a free port: it answers every request with an empty RESULT (LOGIN
    with a user of its own) except those of the types in ``mute``, which it never answers,
    like a server stalled on them."""
    users = itertools.count(1)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            decoder = wire.FrameDecoder()
            user = {"id": next(users), "phone": "7000", "nickname": "mute"}
            while data := self.request.recv(65536):
                for frame in decoder.feed(data):
                    if frame.request_id and frame.type not in mute:
                        body = {"user": user} if frame.type == PacketType.LOGIN else {}
                        self.request.sendall(wire.encode_json(PacketType.RESULT, body, frame.request_id))

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_an_unanswered_request_times_out_about_when_its_own_timeout_ends():
    """One deadline sweep per client, not a timer per request: a request with no reply fails
    with RequestTimeout no earlier than its timeout and about then (a shorter timeout sent
    after a longer one included), whether awaited or answered by callback; answered requests
    never time out, and nothing is left waiting."""
    async def scenario() -> tuple[float, float, list]:
        client = SimClient(Metrics(time.monotonic()), "70000000001", "mute")
        await client.connect("127.0.0.1", port, timeout=5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        slow = client.request_future(PacketType.HEARTBEAT, {}, timeout=1.2)
        answers: list = []
        client.send_request(PacketType.HEARTBEAT, {},
                            lambda body, error: answers.append((loop.time() - started, body, error)), timeout=0.4)
        await client.hello()                    # answered at once, meanwhile
        with pytest.raises(RequestTimeout):
            await asyncio.wait_for(slow, 10)
        slow_after = loop.time() - started
        await client.hello()
        waiting = len(client.pending) + client.protocol.waiting
        client.close()
        await asyncio.wait_for(client.closed, 5)
        return slow_after, waiting, answers

    with mute_server({PacketType.HEARTBEAT}) as port:
        slow_after, waiting, answers = asyncio.run(scenario())
    late = SWEEP_INTERVAL + 0.5                 # the sweep's step, and a busy machine's scheduling
    assert 1.2 <= slow_after < 1.2 + late
    [(fast_after, body, error)] = answers
    assert isinstance(error, RequestTimeout) and body is None and 0.4 <= fast_after < 0.4 + late
    assert waiting == 0


@pytest.mark.parametrize("pace", [[], ["--rate", "40"]], ids=["flat-out", "paced"])
def test_chat_messages_the_server_never_acknowledges_are_reported_as_timeouts(capsys, pace):
    """Every CHAT_SEND left unanswered counts as one timeout: none is lost, none is counted twice."""
    with mute_server({PacketType.CHAT_SEND}) as port:
        code = main(["chat", "--server", f"127.0.0.1:{port}", "--pairs", "2", "--processes", "1",
                     "--duration", "1", "--timeout", "0.4", "--window", "2", "--json", "--quiet", *pace])
    result = json.loads(capsys.readouterr().out)
    assert code == 0, result
    sent = result["counters"]["chat_sent"]
    assert sent >= 8                            # 4 senders: 2 lanes each, or ~10 messages/s each
    assert result["errors"] == {"timeout CHAT_SEND": sent}
    assert "chat_ack" not in result["metrics"]
