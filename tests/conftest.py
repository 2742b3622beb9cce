from __future__ import annotations

import gc
import uuid

import pytest

from tests.helpers import TestClient, fresh_storage, make_mysql_database, redis_server_url, start_server, test_config
from tests.notify import NotifySocket


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def notify_socket():
    sock = NotifySocket(f"@rtm-test-{uuid.uuid4().hex}")
    yield sock
    sock.close()


@pytest.fixture
def redis_url() -> str:
    """The URL of a Redis server that answers (skipped locally without one, an error in CI)."""
    return redis_server_url()


@pytest.fixture
def cluster_env() -> dict[str, str]:
    """Settings on top of their own for every node the ``cluster`` fixture (tests/test_cluster.py)
    starts; a test module overrides this fixture to give its nodes more."""
    return {}


@pytest.fixture
def mysql_url():
    """A fresh, empty MySQL database for one test (dropped after it)."""
    url, drop = make_mysql_database()
    yield url
    drop()


@pytest.fixture
def running_servers():
    """Every server a test started; stopped before any storage they use is closed."""
    servers = []
    yield servers
    stop_all(servers)


def stop_all(servers) -> None:
    for srv in servers:
        srv.stop()


@pytest.fixture
def storage(backend, tmp_path, running_servers):
    store, cleanup = fresh_storage(backend, tmp_path)
    yield store
    stop_all(running_servers)   # a server still using this storage must stop first
    cleanup()


@pytest.fixture
def server_factory(tmp_path, running_servers):
    """Start servers (real reactor on an ephemeral port); all stopped at the end."""
    def make(storage=None, **overrides):
        config = test_config(tmp_path, **overrides)
        srv = start_server(config, storage)
        running_servers.append(srv)
        return srv
    yield make
    stop_all(running_servers)


@pytest.fixture
def server(server_factory):
    return server_factory()


@pytest.fixture
def client_factory():
    clients = []

    def make(port: int, **kwargs) -> TestClient:
        client = TestClient(port, **kwargs)
        clients.append(client)
        return client
    yield make
    for client in clients:
        client.close()


def pytest_runtest_logfinish(nodeid: str, location) -> None:
    """After a GUI test has released its fixtures, collect its Tk objects here on the main
    thread. Left to the garbage collector they would be freed by whichever thread runs it next
    (a server's reactor), and Tcl aborts the process when its interpreter dies off its thread."""
    if "/test_gui_" in nodeid:
        gc.collect()


@pytest.fixture
def redis_prefix(redis_url):
    """(client, url, prefix): the real Redis and a key prefix only this test uses (pub/sub
    channels are not per database, hence a prefix rather than a database number)."""
    import redis

    from tests.cluster_helpers import drop_prefix, fresh_prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    prefix = fresh_prefix()
    yield client, redis_url, prefix
    drop_prefix(client, prefix)
    client.close()
