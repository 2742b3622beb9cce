"""Secrets: passwords and session tokens never reach the logs, error replies or the admin
status; tokens are random, stored only as hashes, expire, and die at logout and at a kick."""
from __future__ import annotations

import hashlib
import json
import logging
import time

import pytest

from common.errors import ErrorCode
from common.packets import PacketType
from server.admin import query_status
from tests.helpers import HELLO, cut_connection, raw_connect, raw_request, unique_phone, wait_until

PASSWORD = "correct horse battery"


@pytest.fixture
def server(storage, server_factory):
    """Every test here runs on SQLite and on MySQL (the ``backend`` fixture)."""
    return server_factory(storage=storage)


class Everything(logging.Handler):
    """Every log record of the process (server and client), fully formatted."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def all_logs():
    handler = Everything()
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


def resume_raw(port: int, token: str) -> dict:
    sock = raw_connect(port)
    try:
        assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
        reply = raw_request(sock, PacketType.RESUME, {"token": token}, 2)
        return {"ok": reply.type == PacketType.RESULT, **reply.json()}
    finally:
        sock.close()


def test_no_password_or_token_in_logs_errors_or_status(server, client_factory, all_logs):
    secrets_seen: set[str] = {PASSWORD}
    wrong_password = "Wrong-Password-7731"
    secrets_seen.add(wrong_password)
    alice = client_factory(server.port)
    alice.register_and_login("alice")
    secrets_seen.add(alice.kernel.token)

    # A bad login: the error the client gets does not echo the password either.
    intruder = client_factory(server.port)
    with pytest.raises(Exception) as info:
        intruder.kernel.login(alice.phone, wrong_password)
    assert wrong_password not in str(info.value)
    assert getattr(info.value, "code", None) == ErrorCode.WRONG_CREDENTIALS
    # An overlong password is refused without being echoed.
    sock = raw_connect(server.port)
    raw_request(sock, PacketType.HELLO, HELLO, 1)
    long_password = "Z" * 200 + "secret-tail"
    secrets_seen.add(long_password)
    reply = raw_request(sock, PacketType.REGISTER, {"phone": unique_phone(), "password": long_password,
                                                    "nickname": "x"}, 2)
    assert reply.type == PacketType.ERROR and "secret-tail" not in reply.body.decode()
    # A bad token is refused without being echoed.
    bogus = "not-a-real-token-" + "q" * 30
    secrets_seen.add(bogus)
    reply = raw_request(sock, PacketType.RESUME, {"token": bogus}, 3)
    assert reply.type == PacketType.ERROR and bogus not in reply.body.decode()
    sock.close()

    # Resume after a dropped link (the kernel uses the token by itself).
    mark = alice.events.mark()
    cut_connection(alice.kernel, "test: cut the link")
    alice.events.wait_for("reconnected", start=mark, timeout=10)
    # A kick: the same account logs in elsewhere.
    second = client_factory(server.port)
    second.kernel.login(alice.phone, PASSWORD)
    secrets_seen.add(second.kernel.token)
    alice.events.wait_for("kicked", timeout=10)
    # The admin status while a session is live.
    status_text = json.dumps(query_status(server.config.admin_socket_path)) if server.server.admin else ""
    status_text += json.dumps(server.server.status(), default=str)
    second.kernel.logout()

    hashes = {hashlib.sha256(s.encode()).hexdigest() for s in secrets_seen}
    logs = "\n".join(all_logs.lines)
    assert "logged in" in logs and "kicked" in logs, "the flows above should have been logged"
    for secret in secrets_seen | hashes:
        assert secret not in logs, f"a secret ({secret[:6]}…) appears in the logs"
        assert secret not in status_text, f"a secret ({secret[:6]}…) appears in the admin status"


def test_passwords_and_tokens_are_stored_only_as_hashes(server, client_factory):
    client = client_factory(server.port)
    client.register_and_login("hashed")
    token = client.kernel.token
    with server.server.storage.db.tx() as cur:
        users = cur.all("SELECT phone, password_hash FROM users")
        sessions = cur.all("SELECT token_hash FROM sessions")
    stored = json.dumps([list(map(str, r)) for r in users + sessions])
    assert PASSWORD not in stored and token not in stored
    assert any(r[1].startswith("scrypt$") for r in users)
    assert hashlib.sha256(token.encode()).hexdigest() in stored


def test_tokens_are_random_and_long(server, client_factory):
    client = client_factory(server.port)
    client.register_and_login("many")
    tokens = {client.kernel.token}
    for _ in range(9):
        other = client_factory(server.port)
        other.kernel.login(client.phone, PASSWORD)
        tokens.add(other.kernel.token)
    assert len(tokens) == 10
    assert all(len(t) >= 43 for t in tokens), "at least 256 bits, URL-safe base64"
    # No two tokens share a long prefix (not a counter or a timestamp).
    prefixes = {t[:8] for t in tokens}
    assert len(prefixes) == 10


def test_token_expires(server_factory, client_factory):
    srv = server_factory(session_ttl=1.0)
    client = client_factory(srv.port)
    client.register_and_login("short-lived")
    token = client.kernel.token
    assert resume_raw(srv.port, token)["ok"]
    time.sleep(1.2)  # the token's lifetime itself is what is tested
    reply = resume_raw(srv.port, token)
    assert not reply["ok"] and reply["code"] == ErrorCode.INVALID_TOKEN


def test_token_dies_at_logout(server, client_factory):
    client = client_factory(server.port)
    client.register_and_login("leaving")
    token = client.kernel.token
    client.kernel.logout()
    reply = resume_raw(server.port, token)
    assert not reply["ok"] and reply["code"] == ErrorCode.INVALID_TOKEN


def test_token_dies_at_a_kick(server, client_factory):
    first = client_factory(server.port)
    first.register_and_login("kicked")
    old_token = first.kernel.token
    second = client_factory(server.port)
    second.kernel.login(first.phone, PASSWORD)
    first.events.wait_for("kicked", timeout=10)
    wait_until(lambda: server.server.storage.session_user(
        hashlib.sha256(old_token.encode()).hexdigest(), int(time.time() * 1000)) is None, 5, "the token to end")
    reply = resume_raw(server.port, old_token)
    assert not reply["ok"] and reply["code"] == ErrorCode.INVALID_TOKEN
    assert resume_raw(server.port, second.kernel.token)["ok"], "the new session lives on"


def test_expired_tokens_are_purged_from_the_database(server_factory, client_factory, monkeypatch):
    from server.handlers import session
    monkeypatch.setattr(session, "SESSION_PURGE_INTERVAL", 0.5)
    srv = server_factory(session_ttl=0.5)
    client = client_factory(srv.port)
    client.register_and_login("forgotten")
    hashed = hashlib.sha256(client.kernel.token.encode()).hexdigest()

    def rows() -> int:
        with srv.server.storage.db.tx() as cur:
            return len(cur.all("SELECT 1 FROM sessions WHERE token_hash = ?", (hashed,)))
    assert rows() == 1
    wait_until(lambda: rows() == 0, 5, "the expired token to be purged")
