"""Each load-test scenario runs briefly against a real server and reports sane figures."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client.loadtest.cli import main, parse_rate, parse_size
from client.loadtest.metrics import Metrics, percentile, summarize

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
