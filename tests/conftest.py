from __future__ import annotations

import pytest

from tests.helpers import TestClient, fresh_storage, start_server, test_config


@pytest.fixture(params=["sqlite", "mysql"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def storage(backend, tmp_path):
    store, cleanup = fresh_storage(backend, tmp_path)
    yield store
    cleanup()


@pytest.fixture
def server_factory(tmp_path):
    """Start servers (real reactor on an ephemeral port); all stopped at the end."""
    running = []

    def make(storage=None, **overrides):
        config = test_config(tmp_path, **overrides)
        srv = start_server(config, storage)
        running.append(srv)
        return srv
    yield make
    for srv in running:
        srv.stop()


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
