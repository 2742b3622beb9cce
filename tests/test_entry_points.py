"""The console entry points a person types."""
from __future__ import annotations

import subprocess
import sys

from server.cli import main as server_main
from server.storage import open_storage
from server.storage.sql import SCHEMA_VERSION


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=60)


def test_python_m_server_and_client_answer_help():
    server = run("-m", "server", "--help")
    assert server.returncode == 0 and "--db" in server.stdout and "init-db" in server.stdout
    client = run("-m", "client", "--help")
    assert client.returncode == 0 and "--server" in client.stdout


def test_init_db_creates_the_schema(tmp_path):
    url = f"sqlite:///{tmp_path}/fresh.db"
    assert server_main(["init-db", "--db", url, "--data-dir", str(tmp_path)]) == 0
    storage = open_storage(url)
    assert storage.db.schema_version() == SCHEMA_VERSION
    storage.close()


def test_a_bad_flag_value_stops_the_start_with_a_message(tmp_path):
    result = run("-m", "server", "--port", "70000", "--data-dir", str(tmp_path))
    assert result.returncode == 2
    assert "port" in result.stderr
