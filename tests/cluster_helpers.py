"""Redis for cluster tests: a fresh key prefix per test so tests never see each other's keys
or channels (the server comes from the ``redis_url`` fixture), and a redis-server of the test's
own to stop and start."""
from __future__ import annotations

import uuid

import pytest


def fresh_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}:"


def drop_prefix(client, prefix: str) -> None:
    keys = list(client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        client.delete(*keys)


class RedisProcess:
    """A redis-server of the test's own on a free port (never the machine's one), to stop and
    start again: it keeps nothing (no RDB, no AOF), as a restarted cache would."""

    def __init__(self, workdir) -> None:
        import shutil
        import socket
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.skip("redis-server is not installed")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.workdir = workdir
        self.process = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import subprocess
        import time
        import redis
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
