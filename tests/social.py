"""Helpers shared by the friends, profile, presence and chat tests."""
from __future__ import annotations

import pytest

from tests.helpers import TestClient


def uid(client: TestClient) -> int:
    return client.kernel.user["id"]


def befriend(a: TestClient, b: TestClient) -> None:
    """A asks, B accepts, both saw FRIEND_ADDED_EVENT."""
    mark_a, mark_b = a.events.mark(), b.events.mark()
    reply = a.kernel.friends.add(user_id=uid(b))
    if reply["status"] == "pending":
        b.kernel.friends.answer(reply["request"]["id"], True)
    a.events.wait_for("friend_added", lambda e: e["friend"]["id"] == uid(b), start=mark_a)
    b.events.wait_for("friend_added", lambda e: e["friend"]["id"] == uid(a), start=mark_b)


def wait_session_ready(client: TestClient, timeout: float = 10.0, start: int = 0) -> None:
    """After a login or resume: the friend list and the unread backlog were fetched."""
    client.events.wait_for("friends_changed", timeout=timeout, start=start)
    client.events.wait_for("unread_loaded", timeout=timeout, start=start)


@pytest.fixture
def trio(storage, server_factory, client_factory):
    """A real server on the test's backend with three logged-in clients A, B, C (fixture order
    matters: the server stops before the storage is dropped)."""
    running = server_factory(storage=storage)
    clients = []
    for name in ("Alice", "Bob", "Carol"):
        client = client_factory(running.port)
        client.register_and_login(name)
        wait_session_ready(client)
        clients.append(client)
    return running, clients
