"""TLS: the server's handshake in the reactor, the client's trust (CA file or pin), the
handshake deadline, and plain TCP still working (and saying so in the log)."""
from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest

from client.link import ConnectError
from client.tls import TlsOptions, certificate_fingerprint, normalize_fingerprint
from common import frame as wire
from common.packets import PacketType
from tests.helpers import HELLO

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cert(tmp_path_factory) -> dict:
    """A certificate made by scripts/make-cert.sh, with the fingerprint it printed."""
    out = tmp_path_factory.mktemp("tls")
    done = subprocess.run(["bash", str(ROOT / "scripts" / "make-cert.sh"), str(out)],
                          capture_output=True, text=True, timeout=60, check=True)
    printed = done.stdout.strip().splitlines()[-1]
    return {"cert": str(out / "server.crt"), "key": str(out / "server.key"), "printed": printed}


@pytest.fixture
def other_cert(tmp_path) -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "make-cert.sh"), str(tmp_path / "other")],
                   capture_output=True, timeout=60, check=True)
    return str(tmp_path / "other" / "server.crt")


@pytest.fixture
def tls_server(server_factory, cert):
    return server_factory(tls_cert=cert["cert"], tls_key=cert["key"], tls_handshake_timeout=1.0)


def test_make_cert_prints_the_fingerprint_the_client_pins(cert):
    assert normalize_fingerprint(cert["printed"]) == certificate_fingerprint(cert["cert"])
    assert Path(cert["key"]).stat().st_mode & 0o077 == 0, "the private key must not be readable by others"


def test_pinned_client_logs_in_over_tls(tls_server, cert, client_factory):
    client = client_factory(tls_server.port, tls=TlsOptions(fingerprint=cert["printed"]))
    user = client.register_and_login("pinned")
    assert user["nickname"] == "pinned"
    sock = client.kernel._link._sock
    assert isinstance(sock, ssl.SSLSocket) and sock.version() in ("TLSv1.2", "TLSv1.3")
    conns = list(tls_server.server.connections.values())
    assert conns and all(isinstance(c.sock, ssl.SSLSocket) for c in conns)


def test_client_verifying_against_ca_file_logs_in(tls_server, cert, client_factory):
    client = client_factory(tls_server.port, tls=TlsOptions(ca_file=cert["cert"]))
    assert client.register_and_login("ca-file")["nickname"] == "ca-file"


def test_wrong_pin_is_refused_with_a_clear_message(tls_server, other_cert, client_factory):
    client = client_factory(tls_server.port, tls=TlsOptions(fingerprint=certificate_fingerprint(other_cert)))
    with pytest.raises(ConnectError) as info:
        client.kernel.connect()
    message = str(info.value)
    assert "does not match the pinned fingerprint" in message
    assert certificate_fingerprint(other_cert) in message


def test_certificate_from_another_ca_is_refused(tls_server, other_cert, client_factory):
    client = client_factory(tls_server.port, tls=TlsOptions(ca_file=other_cert))
    with pytest.raises(ConnectError, match="not trusted"):
        client.kernel.connect()


def test_malformed_pin_is_refused_before_connecting():
    with pytest.raises(ValueError, match="SHA-256"):
        TlsOptions(fingerprint="abc").build()


def test_tls_below_1_2_is_refused(tls_server):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        context.set_ciphers("ALL:@SECLEVEL=0")
    except ssl.SSLError:
        pass
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, ConnectionError)):
            with context.wrap_socket(raw) as tls:
                tls.sendall(wire.encode_json(PacketType.HELLO, HELLO, 1))
                tls.recv(100)


def test_plain_client_cannot_talk_to_a_tls_server(tls_server, client_factory):
    client = client_factory(tls_server.port)
    client.kernel.request_timeout = 3.0
    with pytest.raises(Exception) as info:
        client.kernel.connect()
    assert not isinstance(info.value, AssertionError)
    assert tls_server.server.stats.accepted >= 1


def test_plain_tcp_works_and_says_so_in_the_log(server_factory, client_factory, caplog):
    caplog.set_level(logging.INFO, logger="server")
    srv = server_factory()
    assert any("plain TCP" in r.getMessage() and "no encryption" in r.getMessage() for r in caplog.records)
    client = client_factory(srv.port)
    assert client.register_and_login("plain")["nickname"] == "plain"
    assert not isinstance(client.kernel._link._sock, ssl.SSLSocket)


def test_tls_server_logs_that_it_is_tls(server_factory, cert, caplog):
    caplog.set_level(logging.INFO, logger="server")
    server_factory(tls_cert=cert["cert"], tls_key=cert["key"])
    assert any("(TLS)" in r.getMessage() for r in caplog.records)


def test_stalled_handshake_is_dropped_at_the_deadline_and_others_are_served(tls_server, cert, client_factory):
    silent = socket.create_connection(("127.0.0.1", tls_server.port), timeout=5)
    half = socket.create_connection(("127.0.0.1", tls_server.port), timeout=5)
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # the start of a ClientHello
    started = time.monotonic()
    client = client_factory(tls_server.port, tls=TlsOptions(fingerprint=cert["printed"]))
    client.register_and_login("meanwhile")
    for sock in (silent, half):
        sock.settimeout(5)
        assert sock.recv(100) == b"", "the server should close a connection that never finishes TLS"
        sock.close()
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 3.5, f"closed after {elapsed:.1f} s, the deadline is 1 s (swept every second)"
    assert client.kernel.request(PacketType.HEARTBEAT, {})["time"] > 0


def test_many_concurrent_handshakes_complete(tls_server):
    """60 clients shake hands at once with the reactor; every one gets its HELLO answered."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    results: list[object] = []
    barrier = threading.Barrier(60)

    def one() -> None:
        try:
            barrier.wait(10)
            with socket.create_connection(("127.0.0.1", tls_server.port), timeout=15) as raw:
                with context.wrap_socket(raw) as tls:
                    tls.sendall(wire.encode_json(PacketType.HELLO, HELLO, 7))
                    decoder = wire.FrameDecoder()
                    while True:
                        data = tls.recv(65536)
                        if not data:
                            raise ConnectionError("closed")
                        frames = decoder.feed(data)
                        if frames:
                            results.append(frames[0].type)
                            return
        except Exception as exc:  # recorded and asserted below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert results.count(PacketType.RESULT) == 60, [r for r in results if r != PacketType.RESULT][:3]


def test_server_refuses_to_start_with_a_bad_key(tmp_path, cert):
    from server.app import Server
    from tests.helpers import test_config
    bad = tmp_path / "bad.key"
    bad.write_text("not a key")
    config = test_config(tmp_path, tls_cert=cert["cert"], tls_key=str(bad))
    server = Server(config)
    server.storage.init_schema()
    try:
        with pytest.raises(OSError, match="cannot load the TLS certificate"):
            server.listen()
    finally:
        server.storage.close()


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_login_chat_and_meeting_over_each_transport(transport, server_factory, cert, client_factory):
    from common.media import Codec, MediaKind
    from tests.social import befriend, uid
    if transport == "tls":
        srv = server_factory(tls_cert=cert["cert"], tls_key=cert["key"])
        options = {"tls": TlsOptions(fingerprint=cert["printed"])}
    else:
        srv = server_factory()
        options = {}
    alice, bob = client_factory(srv.port, **options), client_factory(srv.port, **options)
    alice.register_and_login("alice")
    bob.register_and_login("bob")
    assert isinstance(alice.kernel._link._sock, ssl.SSLSocket) == (transport == "tls")
    # Chat.
    befriend(alice, bob)
    ack = alice.kernel.chat.send_and_wait(uid(bob), f"hello over {transport}")
    got = bob.events.wait_for("chat_message", lambda e: e["message"]["id"] == ack["id"])
    assert got["message"]["text"] == f"hello over {transport}"
    # A meeting: join, room chat, and a media frame each way.
    room = alice.kernel.rooms.create("over " + transport)
    bob.kernel.rooms.join(room["number"])
    alice.kernel.rooms.chat("can you hear me")
    bob.events.wait_for("room_chat", lambda e: e["text"] == "can you hear me")
    heard = {"alice": threading.Event(), "bob": threading.Event()}
    alice.kernel.rooms.add_media_listener(lambda h, p: heard["alice"].set() if p == b"from bob" else None)
    bob.kernel.rooms.add_media_listener(lambda h, p: heard["bob"].set() if p == b"from alice" else None)
    assert alice.kernel.rooms.publish(MediaKind.MICROPHONE, Codec.OPUS, b"from alice", False, 1)
    assert bob.kernel.rooms.publish(MediaKind.MICROPHONE, Codec.OPUS, b"from bob", False, 1)
    assert heard["alice"].wait(5) and heard["bob"].wait(5)
    bob.kernel.rooms.leave()
    alice.kernel.rooms.leave()


def test_garbage_instead_of_a_client_hello_is_dropped_quietly(tls_server, cert, client_factory, caplog):
    caplog.set_level(logging.DEBUG)
    for junk in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", wire.encode_json(PacketType.HELLO, HELLO, 1),
                 b"\x16\x03\x03\xff\xff" + b"\x01" * 100):
        with socket.create_connection(("127.0.0.1", tls_server.port), timeout=5) as sock:
            sock.sendall(junk)
            sock.settimeout(5)
            try:
                assert sock.recv(4096) is not None
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    client = client_factory(tls_server.port, tls=TlsOptions(fingerprint=cert["printed"]))
    client.register_and_login("unbothered")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)
