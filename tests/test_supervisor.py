"""`meeting-server --workers N`: real worker processes on one port under a supervisor."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from common import frame as wire
from common.packets import PacketType
from server.admin import query_status
from tests.helpers import HELLO, RESULT, raw_connect, raw_request, read_until_closed, wait_until
from tests.server_process import ServerProcess

REPO = Path(__file__).resolve().parent.parent
STARTED = re.compile(r"worker (\d+) \(\S+\) started, pid (\d+)")


class Supervised(ServerProcess):
    """``meeting-server --workers N`` with a node name of its own (test runs sharing one Redis
    never meet) and the fake systemd notify socket."""

    def __init__(self, mysql_url: str, redis_url: str, tmp_path, notify_socket, workers: int = 2,
                 **settings) -> None:
        self.node = f"test{uuid.uuid4().hex[:8]}"
        env = {"NOTIFY_SOCKET": notify_socket.address, "MEETING_NODE_NAME": self.node}
        env.update({f"MEETING_{key.upper()}": str(value) for key, value in settings.items()})
        super().__init__(mysql_url, tmp_path, env=env, args=("--workers", str(workers), "--redis", redis_url))


def worker_states(tmp_path) -> list[dict]:
    return query_status(tmp_path / "admin.sock")["supervisor"]["workers"]


def hello(port: int):
    sock = raw_connect(port)
    assert raw_request(sock, PacketType.HELLO, HELLO).type == RESULT
    return sock


def test_ready_only_once_every_worker_is_ready(mysql_url, redis_url, tmp_path, notify_socket):
    """Worker 3 is held stopped while 1 and 2 come up: no READY=1 until it is ready too; then
    all three serve the one port (the kernel spreads connections over them)."""
    with Supervised(mysql_url, redis_url, tmp_path, notify_socket, workers=3) as proc:
        held = []

        def hold_worker_3() -> None:   # as soon as it is started, long before it can be ready
            line = proc.wait_for_log(rf"worker 3 \({proc.node}\.3\) started", timeout=20)
            held.append(int(STARTED.search(line).group(2)))
            os.kill(held[0], signal.SIGSTOP)
        holder = threading.Thread(target=hold_worker_3)
        holder.start()
        proc.start()
        holder.join(20)
        assert held, proc.log_tail()
        try:
            proc.wait_for_log(rf"worker 1 \({proc.node}\.1, pid \d+\) is ready", timeout=20)
            proc.wait_for_log(rf"worker 2 \({proc.node}\.2, pid \d+\) is ready", timeout=20)
            if re.search(rf"worker 3 \({proc.node}\.3, pid \d+\) is ready", proc.log):
                pytest.fail("worker 3 was ready before it could be held: the test proves nothing")
            # One admin round trip to the supervisor: it has handled what the workers said.
            assert [w["state"] for w in worker_states(tmp_path)] == ["ready", "ready", "starting"]
            assert not any("READY=1" in text for text in notify_socket.lines())
        finally:
            os.kill(held[0], signal.SIGCONT)
        notify_socket.wait_for("READY=1", timeout=20)
        assert [w["state"] for w in worker_states(tmp_path)] == ["ready"] * 3
        sockets = [hello(proc.port) for _ in range(30)]
        per_worker = [query_status(w["admin_socket"])["connections"] for w in worker_states(tmp_path)]
        assert all(count >= 1 for count in per_worker), per_worker
        assert sum(per_worker) == 30
        for sock in sockets:
            sock.close()
        status = notify_socket.wait_for("STATUS=3/3 workers ready", timeout=10)
        assert "users online" in notify_socket.lines()[status]


def test_a_killed_worker_is_restarted_with_a_growing_delay(mysql_url, redis_url, tmp_path, notify_socket):
    with Supervised(mysql_url, redis_url, tmp_path, notify_socket) as proc:
        proc.start()
        notify_socket.wait_for("READY=1", timeout=20)
        first = worker_states(tmp_path)[1]["pid"]
        os.kill(first, signal.SIGKILL)
        proc.wait_for_log(rf"worker 2 \({proc.node}\.2, pid {first}\) was killed by SIGKILL; "
                          r"restarting it in 0\.5 s \(restart 1\)")
        proc.wait_for_log(rf"worker 2 \({proc.node}\.2, pid \d+\) is ready again after restart 1", timeout=20)
        second = worker_states(tmp_path)[1]
        assert second["pid"] not in (None, first) and second["restarts"] == 1 and second["state"] == "ready"
        os.kill(second["pid"], signal.SIGKILL)
        proc.wait_for_log(r"worker 2 .* was killed by SIGKILL; restarting it in 1\.0 s \(restart 2\)")
        proc.wait_for_log(rf"worker 2 \({proc.node}\.2, pid \d+\) is ready again after restart 2", timeout=20)
        # Worker 1 never noticed, and the port serves throughout.
        assert worker_states(tmp_path)[0]["restarts"] == 0
        for _ in range(10):
            hello(proc.port).close()
        assert proc.running


def test_a_stuck_worker_is_killed_by_its_watchdog_and_restarted(mysql_url, redis_url, tmp_path, notify_socket):
    with Supervised(mysql_url, redis_url, tmp_path, notify_socket, worker_watchdog=2) as proc:
        proc.start()
        notify_socket.wait_for("READY=1", timeout=20)
        stuck = worker_states(tmp_path)[0]["pid"]
        os.kill(stuck, signal.SIGSTOP)
        proc.wait_for_log(rf"worker 1 \({proc.node}\.1, pid {stuck}\) sent no watchdog ping for \d+ s: killing it",
                          timeout=10)
        proc.wait_for_log(r"worker 1 .* was killed by SIGKILL; restarting it", timeout=10)
        proc.wait_for_log(rf"worker 1 \({proc.node}\.1, pid \d+\) is ready again after restart 1", timeout=20)


def test_sigterm_drains_every_worker(mysql_url, redis_url, tmp_path, notify_socket):
    with Supervised(mysql_url, redis_url, tmp_path, notify_socket) as proc:
        proc.start()
        notify_socket.wait_for("READY=1", timeout=20)
        sockets = [hello(proc.port) for _ in range(12)]
        per_worker = [query_status(w["admin_socket"])["connections"] for w in worker_states(tmp_path)]
        assert all(count >= 1 for count in per_worker), per_worker
        assert proc.terminate(timeout=30) == 0, proc.log_tail()
        for sock in sockets:
            frames = wire.FrameDecoder().feed(read_until_closed(sock, timeout=10))
            assert [f.type for f in frames] == [PacketType.GOING_AWAY]
            sock.close()
        stopping = notify_socket.wait_for("STOPPING=1")
        assert "draining 2 workers" in notify_socket.lines()[stopping]
        for index in (1, 2):
            assert re.search(rf"worker {index} \({proc.node}\.{index}, pid \d+\) exited with code 0", proc.log)
        assert "supervisor stopped" in proc.log
        assert not (tmp_path / "admin.sock").exists()


def test_a_worker_that_cannot_start_fails_the_start(mysql_url, redis_url, tmp_path, notify_socket):
    """Its database has no schema (and no --init-db): every worker refuses, the start fails
    with their reason, and no READY is sent."""
    env = {**os.environ, "NOTIFY_SOCKET": notify_socket.address, "MEETING_SCRYPT_N": "1024"}
    result = subprocess.run([sys.executable, "-m", "server", "--workers", "2", "--redis", redis_url,
                             "--db", mysql_url, "--port", "0", "--data-dir", str(tmp_path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert re.search(r"worker \d \(\S+, pid \d+\) exited with code 1 before it was ready", result.stderr), result.stderr
    assert "init-db" in result.stderr   # the worker's own reason: the schema is missing
    assert not any("READY=1" in text for text in notify_socket.lines())


@pytest.mark.parametrize("args, message", [
    (("--workers", "2", "--redis", "redis://127.0.0.1:6379"), "workers = 2 needs a shared MySQL database"),
    (("--redis", "redis://127.0.0.1:6379"), "redis needs a shared MySQL database"),
    (("--workers", "2", "--db", "mysql://root@127.0.0.1/test"), "workers = 2 needs redis = redis://"),
])
def test_a_cluster_without_mysql_or_redis_is_refused_at_start(tmp_path, args, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETING_")}
    result = subprocess.run([sys.executable, "-m", "server", "--data-dir", str(tmp_path), *args],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert not (tmp_path / "admin.sock").exists()


def test_status_shows_every_worker_and_the_totals(mysql_url, redis_url, tmp_path, notify_socket):
    with Supervised(mysql_url, redis_url, tmp_path, notify_socket) as proc:
        proc.start()
        notify_socket.wait_for("READY=1", timeout=20)
        sockets = [hello(proc.port) for _ in range(6)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEETING_")}
        command = [sys.executable, "-m", "server", "status", "--data-dir", str(tmp_path)]
        shown = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert re.match(rf"node {proc.node}: 2 workers on port \d+, supervisor pid \d+", lines[0])
        assert worker_lines(proc.node, lines) == [(f"{proc.node}.1", "ready"), (f"{proc.node}.2", "ready")]
        assert re.match(r"total\s+6\s+0\s+0$", lines[-1]), shown.stdout
        as_json = subprocess.run([*command, "--json"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
        workers = json.loads(as_json.stdout)["supervisor"]["workers"]
        assert sum(w["status"]["connections"] for w in workers) == 6
        for sock in sockets:
            sock.close()
        os.kill(workers[0]["pid"], signal.SIGKILL)
        proc.wait_for_log(r"worker 1 .* was killed by SIGKILL")
        after = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=30).stdout
        states = dict(worker_lines(proc.node, after.splitlines()))
        assert states[f"{proc.node}.1"] in ("restarting", "starting", "ready")


def worker_lines(node: str, lines: list[str]) -> list[tuple[str, str]]:
    found = [re.match(rf"({node}\.\d)\s+\S+\s+(\w+)", line) for line in lines]
    return [(m.group(1), m.group(2)) for m in found if m]


def test_sighup_reloads_every_worker(mysql_url, redis_url, tmp_path, notify_socket):
    with Supervised(mysql_url, redis_url, tmp_path, notify_socket) as proc:
        proc.start()
        ready = notify_socket.wait_for("READY=1", timeout=20)
        proc.process.send_signal(signal.SIGHUP)
        reloading = notify_socket.wait_for("RELOADING=1", start=ready + 1)
        for index in (1, 2):
            proc.wait_for_log(rf"\[{proc.node}\.{index}\] server: reloaded: ", timeout=20)
        notify_socket.wait_for("READY=1", start=reloading + 1, timeout=20)
        assert proc.running and [w["state"] for w in worker_states(tmp_path)] == ["ready", "ready"]


def test_clients_of_a_killed_worker_resume_their_sessions(mysql_url, redis_url, tmp_path, notify_socket,
                                                          client_factory):
    with Supervised(mysql_url, redis_url, tmp_path, notify_socket) as proc:
        proc.start()
        notify_socket.wait_for("READY=1", timeout=20)
        client = client_factory(proc.port)
        client.register_and_login("Wes")
        token = client.kernel.token
        holder = next(w for w in worker_states(tmp_path) if query_status(w["admin_socket"])["users_online"] == 1)
        mark = client.events.mark()
        os.kill(holder["pid"], signal.SIGKILL)
        client.events.wait_for("reconnected", timeout=30, start=mark)
        assert client.kernel.state == "online" and client.kernel.token == token
        proc.wait_for_log(rf"worker {holder['index']} \({proc.node}\.{holder['index']}, pid \d+\) is ready again",
                          timeout=20)


def test_a_second_server_on_a_port_in_use_is_refused(mysql_url, redis_url, tmp_path, notify_socket):
    """SO_REUSEPORT would let a second server's workers quietly share the port: refused."""
    with Supervised(mysql_url, redis_url, tmp_path / "first", notify_socket) as first:
        first.start()
        env = {**os.environ, "MEETING_SCRYPT_N": "1024"}
        env.pop("NOTIFY_SOCKET", None)
        second = subprocess.run([sys.executable, "-m", "server", "--workers", "2", "--redis", redis_url, "--db",
                                 mysql_url, "--port", str(first.port), "--data-dir", str(tmp_path / "second")],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"another server already listens on port {first.port}" in second.stderr
        assert "started, pid" not in second.stderr


def test_status_shows_every_node_of_the_cluster(mysql_url, redis_url, tmp_path, notify_socket):
    """With redis set, `meeting-server status` lists the nodes registered in Redis, here the two
    workers of a supervisor and a single-process node, with their figures."""
    prefix = f"test-{uuid.uuid4().hex[:8]}:"
    with Supervised(mysql_url, redis_url, tmp_path / "a", notify_socket, redis_prefix=prefix) as workers, \
            ServerProcess(mysql_url, tmp_path / "b", env={"MEETING_REDIS_PREFIX": prefix},
                          args=("--redis", redis_url, "--node-name", f"{workers.node}-b")) as single:
        workers.start()
        single.start()
        notify_socket.wait_for("READY=1", timeout=20)
        sockets = [hello(single.port) for _ in range(3)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEETING_")}
        command = [sys.executable, "-m", "server", "status", "--data-dir", str(tmp_path / "a"), "--redis", redis_url,
                   "--db", mysql_url, "--set", f"redis_prefix={prefix}"]

        def nodes_shown() -> dict[str, list[str]]:
            shown = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=30)
            assert shown.returncode == 0, shown.stderr
            return {line.split()[0]: line.split() for line in shown.stdout.splitlines()
                    if line.startswith(workers.node)}
        # the node publishes its figures every lease tick
        wait_until(lambda: nodes_shown().get(f"{workers.node}-b", [""] * 5)[4] == "3", 20,
                   "the single node's three connections shown", interval=0.2)
        nodes = nodes_shown()
        assert set(nodes) >= {f"{workers.node}.1", f"{workers.node}.2", f"{workers.node}-b"}
        assert nodes[f"{workers.node}-b"][1] == f"127.0.0.1:{single.port}" and nodes[f"{workers.node}-b"][2] == "alive"
        for sock in sockets:
            sock.close()
