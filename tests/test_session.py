"""End-to-end session flows through a real server on an ephemeral port (SQLite and MySQL)."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from client.kernel import ClientKernel
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from tests.helpers import HELLO, raw_connect, raw_request, read_until_closed, unique_phone


@pytest.fixture
def running(server_factory, storage):
    return server_factory(storage=storage)


def test_register_login_and_profile(running, client_factory):
    client = client_factory(running.port)
    user = client.kernel.register(client.phone, client.password, "Alice")
    assert user["nickname"] == "Alice" and user["phone"] == client.phone
    profile = client.kernel.login(client.phone, client.password)
    assert profile["id"] == user["id"]
    assert client.kernel.token and client.kernel.state == "online"
    client.events.wait_for("logged_in")


def test_duplicate_register_is_refused(running, client_factory):
    first = client_factory(running.port)
    first.kernel.register(first.phone, first.password, "A")
    second = client_factory(running.port)
    with pytest.raises(ApiError) as err:
        second.kernel.register(first.phone, "another password", "B")
    assert err.value.code == ErrorCode.PHONE_TAKEN


def test_wrong_password_and_unknown_phone_look_the_same(running, client_factory):
    client = client_factory(running.port)
    client.kernel.register(client.phone, client.password, "A")
    with pytest.raises(ApiError) as wrong:
        client.kernel.login(client.phone, "not the password")
    with pytest.raises(ApiError) as unknown:
        client.kernel.login(unique_phone(), "whatever password")
    assert wrong.value.code == unknown.value.code == ErrorCode.WRONG_CREDENTIALS
    assert wrong.value.message == unknown.value.message


def test_repeated_failures_are_throttled(server_factory, client_factory):
    running = server_factory(login_failures_per_account=3)
    client = client_factory(running.port)
    client.kernel.register(client.phone, client.password, "A")
    for _ in range(3):
        with pytest.raises(ApiError) as err:
            client.kernel.login(client.phone, "wrong password!")
        assert err.value.code == ErrorCode.WRONG_CREDENTIALS
    with pytest.raises(ApiError) as err:
        client.kernel.login(client.phone, client.password)   # even the right password waits
    assert err.value.code == ErrorCode.TOO_MANY_ATTEMPTS
    assert err.value.details["retry_after"] > 0
    assert "try again" in err.value.message


def test_invalid_fields_are_refused_by_the_client_and_the_server(running, client_factory):
    client = client_factory(running.port)
    with pytest.raises(ApiError) as err:
        client.kernel.register("12ab", client.password, "A")
    assert err.value.code == ErrorCode.INVALID_PHONE
    with pytest.raises(ApiError) as err:
        client.kernel.register(client.phone, "short", "A")
    assert err.value.code == ErrorCode.INVALID_PASSWORD
    sock = raw_connect(running.port)
    assert raw_request(sock, PacketType.HELLO, HELLO).type == PacketType.RESULT
    cases = [({"phone": "1", "password": "longenough", "nickname": "x"}, ErrorCode.INVALID_PHONE),
             ({"phone": "12345678", "password": "short", "nickname": "x"}, ErrorCode.INVALID_PASSWORD),
             ({"phone": "12345678", "password": "longenough", "nickname": " "}, ErrorCode.INVALID_NICKNAME),
             ({"phone": "12345678", "password": "longenough", "nickname": "x" * 33}, ErrorCode.INVALID_NICKNAME),
             ({"phone": 12345678, "password": "longenough", "nickname": "x"}, ErrorCode.BAD_REQUEST)]
    for rid, (body, code) in enumerate(cases, start=2):
        reply = raw_request(sock, PacketType.REGISTER, body, request_id=rid)
        assert reply.type == PacketType.ERROR and reply.json()["code"] == code, body
    sock.close()


def test_protocol_order_rules(running):
    sock = raw_connect(running.port)
    reply = raw_request(sock, PacketType.LOGIN, {"phone": "12345678", "password": "x" * 8}, request_id=1)
    assert reply.json()["code"] == ErrorCode.BAD_REQUEST and "HELLO" in reply.json()["message"]
    reply = raw_request(sock, PacketType.FRIEND_LIST, {}, request_id=2)
    assert reply.json()["code"] == ErrorCode.NOT_AUTHENTICATED
    reply = raw_request(sock, PacketType.HELLO, {"version": 99}, request_id=3)
    assert reply.json()["code"] == ErrorCode.UNSUPPORTED_VERSION
    reply = raw_request(sock, PacketType.HELLO, HELLO, request_id=4)
    assert reply.type == PacketType.RESULT and reply.json()["version"] == 1
    reply = raw_request(sock, PacketType.HEARTBEAT, {}, request_id=5)
    assert reply.type == PacketType.RESULT and reply.json()["time"] > 0
    sock.close()


def test_second_login_kicks_the_first(running, client_factory):
    first = client_factory(running.port)
    first.register_and_login("A")
    second = client_factory(running.port)
    second.kernel.login(first.phone, first.password)
    kicked = first.events.wait_for("kicked", timeout=5)
    assert kicked["reason"] == "logged_in_elsewhere" and kicked["address"] == "127.0.0.1" and kicked["time"] > 0
    first.events.wait_for("disconnected", timeout=5)
    assert first.kernel.state == "offline"
    # the new session goes on, and the old one does not fight back by reconnecting
    assert second.kernel.request(PacketType.HEARTBEAT, {})["time"] > 0
    assert first.events.count("reconnected") == 0
    assert running.server.sessions.get(second.kernel.user["id"]) is not None


def test_logout_kills_the_token(running, client_factory):
    client = client_factory(running.port)
    client.register_and_login("A")
    token = client.kernel.token
    client.kernel.logout()
    other = client_factory(running.port)
    other.kernel.connect()
    with pytest.raises(ApiError) as err:
        other.kernel.request(PacketType.RESUME, {"token": token})
    assert err.value.code == ErrorCode.INVALID_TOKEN


def test_resume_with_a_token_instead_of_the_password(running, client_factory):
    client = client_factory(running.port)
    user = client.register_and_login("A")
    other = client_factory(running.port)
    other.kernel.connect()
    reply = other.kernel.request(PacketType.RESUME, {"token": client.kernel.token})
    assert reply["user"]["id"] == user["id"]
    client.events.wait_for("kicked")   # the token's own session was replaced


def test_a_silent_raw_socket_is_dropped_after_the_timeout(server_factory):
    running = server_factory(heartbeat_interval=0.2, heartbeat_timeout=1.0)
    sock = raw_connect(running.port, timeout=5)
    assert raw_request(sock, PacketType.HELLO, HELLO).type == PacketType.RESULT
    started = time.monotonic()
    read_until_closed(sock, 5)
    assert 0.9 <= time.monotonic() - started < 4.0
    sock.close()


def test_an_unauthenticated_connection_must_log_in_in_time(server_factory):
    running = server_factory(login_deadline=0.5)
    sock = raw_connect(running.port, timeout=5)
    assert b"LOGIN_DEADLINE" in read_until_closed(sock, 5)
    sock.close()


def test_client_reconnects_and_resumes_after_a_server_restart(server_factory, client_factory, tmp_path):
    first = server_factory()
    client = client_factory(first.port)
    user = client.register_and_login("A")
    mark = client.events.mark()
    first.stop()
    client.events.wait_for("going_away", start=mark, timeout=5)
    client.events.wait_for("disconnected", start=mark, timeout=5)
    second = server_factory(port=first.port)
    event = client.events.wait_for("reconnected", start=mark, timeout=15)
    assert event["user"]["id"] == user["id"]
    assert client.kernel.request(PacketType.HEARTBEAT, {})["time"] > 0
    assert second.server.sessions.get(user["id"]) is not None


def test_client_notices_a_silent_server_and_reconnects(server_factory, client_factory):
    running = server_factory(heartbeat_interval=0.2, heartbeat_timeout=1.0)
    client = client_factory(running.port)
    client.register_and_login("A")
    mark = client.events.mark()
    running.server.reactor.call_soon_threadsafe(time.sleep, 2.5)   # the server stops answering
    lost = client.events.wait_for("disconnected", start=mark, timeout=10)
    assert "silent" in lost["reason"]
    client.events.wait_for("reconnected", start=mark, timeout=15)


def test_heartbeats_are_answered(running, client_factory):
    client = client_factory(running.port)
    client.register_and_login("A")
    beat = client.events.wait_for("heartbeat", timeout=5)
    assert 0 <= beat["rtt"] < 1.0


def test_connecting_to_nothing_is_a_clear_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    kernel = ClientKernel("127.0.0.1", port, request_timeout=2)
    from client.link import ConnectError
    with pytest.raises(ConnectError, match="cannot reach"):
        kernel.connect()
    kernel.close()


def test_a_request_without_an_answer_times_out(running, client_factory):
    client = client_factory(running.port)
    client.register_and_login("A")
    blocked = threading.Event()
    running.server.reactor.call_soon_threadsafe(lambda: (blocked.set(), time.sleep(1.5)))
    assert blocked.wait(5)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="HEARTBEAT"):
        client.kernel.request(PacketType.HEARTBEAT, {}, timeout=0.3)
    assert time.monotonic() - started < 1.0
