"""Session correctness under attack: a kicked token dies before KICKED, the login throttle
counts attempts before hashing and cannot lock the owner out, LOGOUT is answered, and a
plain client facing a TLS server is told why it was dropped."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from client.kernel import ConnectionLost
from common import frame as wire
from common.errors import ErrorCode
from common.packets import PacketType
from server.handlers import session as session_handlers
from tests.helpers import (HELLO, connect_from, raw_connect, raw_login, raw_register, raw_request, read_until_closed,
                           unique_phone)

def hello(sock: socket.socket) -> None:
    assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT


def register(port: int, phone: str) -> None:
    assert raw_register(port, phone).type == PacketType.RESULT


def read_frames_until(sock: socket.socket, packet_type: int, timeout: float = 5.0) -> wire.Frame:
    sock.settimeout(timeout)
    decoder = wire.FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before {PacketType(packet_type).name}")
        for frame in decoder.feed(data):
            if frame.type == packet_type:
                return frame


def test_a_kicked_token_is_dead_before_kicked_is_sent(storage, server_factory, monkeypatch):
    """The old session reacts to KICKED by resuming with its token at once: refused, every time,
    and the new session is never kicked by it. The database is made slow to delete tokens (as
    a loaded MySQL is), which is what opened the window."""
    server = server_factory(storage=storage)
    real_delete = storage.delete_session

    def slow_delete(token_hash: str) -> None:
        time.sleep(0.03)
        real_delete(token_hash)
    monkeypatch.setattr(storage, "delete_session", slow_delete)
    phone = unique_phone()
    register(server.port, phone)
    for attempt in range(100):
        old, reply = raw_login(server.port, phone)
        assert reply.type == PacketType.RESULT, f"try {attempt}: {reply.json()}"
        token = reply.json()["token"]
        thief = connect_from(server.port, f"127.0.2.{attempt + 1}")   # refused resumes count per address
        hello(thief)
        new, reply = raw_login(server.port, phone)
        assert reply.type == PacketType.RESULT
        read_frames_until(old, PacketType.KICKED)
        answer = raw_request(thief, PacketType.RESUME, {"token": token}, 2)
        assert answer.type == PacketType.ERROR and answer.json()["code"] == ErrorCode.INVALID_TOKEN, \
            f"try {attempt}: the kicked token still worked"
        assert raw_request(new, PacketType.HEARTBEAT, {}, 3).type == PacketType.RESULT, f"try {attempt}"
        for sock in (old, new, thief):
            sock.close()


def test_concurrent_wrong_passwords_get_at_most_the_allowed_checks(storage, server_factory, monkeypatch):
    """60 wrong passwords at once from 60 addresses: the attempt is counted before the hash, so
    only login_failures_per_account of them reach a password check."""
    running = server_factory(storage=storage, login_failures_per_account=5, login_failures_per_address=100)
    phone = unique_phone()
    register(running.port, phone)
    checks = []
    real_verify = session_handlers.verify_password

    def counting_verify(password: str, stored: str) -> bool:
        checks.append(password)
        return real_verify(password, stored)
    monkeypatch.setattr(session_handlers, "verify_password", counting_verify)
    answers: list[int] = []
    start = threading.Barrier(60)

    def guess(n: int) -> None:
        sock = connect_from(running.port, f"127.0.1.{n + 1}")
        hello(sock)
        start.wait(10)
        answers.append(raw_request(sock, PacketType.LOGIN, {"phone": phone, "password": f"guess {n}"}, 2,
                                   timeout=30).json()["code"])
        sock.close()
    threads = [threading.Thread(target=guess, args=(n,)) for n in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == 60
    assert len(checks) <= 5, f"{len(checks)} real password checks"
    assert answers.count(ErrorCode.WRONG_CREDENTIALS) == len(checks)
    assert answers.count(ErrorCode.TOO_MANY_ATTEMPTS) == 60 - len(checks)


def test_strangers_cannot_lock_the_owner_out(storage, server_factory):
    """Five wrong passwords from elsewhere throttle the account for strangers, but the owner's
    usual address (where it logged in before) still gets in."""
    running = server_factory(storage=storage, login_failures_per_account=5)
    phone = unique_phone()
    register(running.port, phone)
    owner, reply = raw_login(running.port, phone, source="127.0.0.1")
    assert reply.type == PacketType.RESULT
    assert raw_request(owner, PacketType.LOGOUT, {}, 3).type == PacketType.RESULT
    owner.close()
    for n in range(5):
        sock, reply = raw_login(running.port, phone, "wrong password", source="127.0.0.2")
        assert reply.json()["code"] == ErrorCode.WRONG_CREDENTIALS
        sock.close()
    for source in ("127.0.0.2", "127.0.0.3"):     # the attacker, and any other new address
        sock, reply = raw_login(running.port, phone, source=source)
        assert reply.json()["code"] == ErrorCode.TOO_MANY_ATTEMPTS, source
        sock.close()
    owner, reply = raw_login(running.port, phone, source="127.0.0.1")
    assert reply.type == PacketType.RESULT, reply.json()
    owner.close()


def test_the_owner_address_has_its_own_throttle(server_factory):
    """A known address is still throttled: five wrong passwords from it lock it, not others."""
    running = server_factory(login_failures_per_account=5)
    phone = unique_phone()
    register(running.port, phone)
    sock, reply = raw_login(running.port, phone, source="127.0.0.4")
    assert reply.type == PacketType.RESULT
    sock.close()
    for n in range(5):
        sock, reply = raw_login(running.port, phone, "wrong password", source="127.0.0.4")
        assert reply.json()["code"] == ErrorCode.WRONG_CREDENTIALS
        sock.close()
    sock, reply = raw_login(running.port, phone, source="127.0.0.4")
    assert reply.json()["code"] == ErrorCode.TOO_MANY_ATTEMPTS
    sock.close()


def test_logout_is_answered_then_the_connection_closes(server):
    phone = unique_phone()
    register(server.port, phone)
    sock, reply = raw_login(server.port, phone)
    token = reply.json()["token"]
    sock.sendall(wire.encode_json(PacketType.LOGOUT, {}, 7))
    frames = wire.FrameDecoder().feed(read_until_closed(sock, 5))
    assert [(f.type, f.request_id, f.json()) for f in frames] == [(PacketType.RESULT, 7, {})]
    sock.close()
    again = raw_connect(server.port)
    hello(again)
    assert raw_request(again, PacketType.RESUME, {"token": token}, 2).json()["code"] == ErrorCode.INVALID_TOKEN
    again.close()


def test_a_plain_client_is_told_the_server_may_require_tls(server_factory, client_factory, tmp_path):
    from tests.test_tls import ROOT
    import subprocess
    subprocess.run(["bash", str(ROOT / "scripts" / "make-cert.sh"), str(tmp_path / "tls")],
                   capture_output=True, timeout=60, check=True)
    running = server_factory(tls_cert=str(tmp_path / "tls" / "server.crt"), tls_key=str(tmp_path / "tls" / "server.key"))
    client = client_factory(running.port)
    with pytest.raises(ConnectionLost) as info:
        client.kernel.connect()
    assert "may require TLS" in str(info.value)
