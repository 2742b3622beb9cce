"""Several servers for one client: addresses parsed in the client core, and failover from a
dead or stopping server to a live one, where the session resumes with its token."""
from __future__ import annotations

import socket
import threading

import pytest

from client.kernel import ClientKernel
from client.link import ConnectError
from client.servers import format_address, parse_server, parse_servers
from tests.server_process import ServerProcess
from tests.social import befriend, uid


@pytest.mark.parametrize("text, address", [
    ("example.org", ("example.org", 8600)),
    (" example.org:9000 ", ("example.org", 9000)),
    ("10.0.0.5:1", ("10.0.0.5", 1)),
    ("[::1]:8601", ("::1", 8601)),
    ("[2001:db8::7]", ("2001:db8::7", 8600)),
    ("2001:db8::7", ("2001:db8::7", 8600)),
])
def test_server_addresses(text, address):
    assert parse_server(text) == address


@pytest.mark.parametrize("text, message", [
    ("", "enter the server address"),
    ("example.org:99999", "'99999' is not a port number (1-65535)"),
    ("example.org:0", "'0' is not a port number"),
    ("example.org:http", "'http' is not a port number"),
    ("example.org:", "'' is not a port number"),
    ("[::1", "unclosed ["),
    ("[::1]8600", "expected :port"),
    (":8600", "has no host"),
    ("meet://example.org/x", "is not a server address"),
    ("me@example.org", "is not a server address"),
])
def test_bad_server_addresses_say_why(text, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_server(text)


def test_a_list_of_servers_keeps_its_order_once_each_and_names_the_bad_one():
    assert parse_servers("a:1, [::1]:2,b,a:1") == [("a", 1), ("::1", 2), ("b", 8600)]
    with pytest.raises(ValueError, match="b:70000: '70000' is not a port number"):
        parse_servers("a:1,b:70000")
    with pytest.raises(ValueError, match="enter the server address"):
        parse_servers(" , ")
    assert format_address(("::1", 2)) == "[::1]:2" and format_address(("a", 1)) == "a:1"


def unused_port() -> int:
    """A port nobody listens on (bound then released: connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_connect_names_every_server_when_none_answers():
    dead = ("127.0.0.1", unused_port())
    other = ("127.0.0.1", unused_port())
    kernel = ClientKernel.for_servers([dead, other], reconnect=False, request_timeout=3.0)
    try:
        with pytest.raises(ConnectError) as info:
            kernel.connect()
        assert str(dead[1]) in str(info.value) and str(other[1]) in str(info.value)
    finally:
        kernel.close()


def test_connect_goes_past_a_server_that_hangs_up(server, client_factory):
    """The first server accepts and closes at once (as a full or stopping one does): the
    client logs in on the next."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def hang_up() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            conn.close()
    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        client = client_factory(listener.getsockname()[1], more_servers=[("127.0.0.1", server.port)])
        client.register_and_login("Cleo")
        assert client.kernel.port == server.port and client.kernel.state == "online"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.fixture
def two_nodes(mysql_url, redis_url, tmp_path):
    nodes = [ServerProcess(mysql_url, tmp_path / name, args=("--redis", redis_url, "--node-name", name))
             for name in ("node-a", "node-b")]
    yield nodes
    for node in nodes:
        node.stop()


def test_first_server_dead_at_login_the_next_one_serves(two_nodes, client_factory):
    a, b = two_nodes
    a.start()
    b.start()
    a.kill()
    client = client_factory(a.port, more_servers=[("127.0.0.1", b.port)])
    client.register_and_login("Ann")
    assert (client.kernel.host, client.kernel.port) == ("127.0.0.1", b.port)


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_sessions_move_to_a_live_server_and_resume(two_nodes, client_factory, how):
    """The server in use dies (SIGKILL: it just stops answering) or stops (SIGTERM: GOING_AWAY):
    its clients go to the other server by themselves and resume their sessions there with
    their tokens, and chat between them goes on."""
    a, b = two_nodes
    a.start()
    b.start()
    servers = [("127.0.0.1", a.port), ("127.0.0.1", b.port)]
    ann, bob = (client_factory(a.port, more_servers=servers[1:]) for _ in range(2))
    ann.register_and_login("Ann")
    bob.register_and_login("Bob")
    befriend(ann, bob)
    sessions = {client: (client.kernel.user["id"], client.kernel.token) for client in (ann, bob)}
    marks = {client: client.events.mark() for client in (ann, bob)}
    if how == "killed":
        a.kill()
    else:
        assert a.terminate() == 0
    for client in (ann, bob):
        if how == "stopped":
            client.events.wait_for("going_away", timeout=20, start=marks[client])
        client.events.wait_for("reconnected", timeout=30, start=marks[client])
        assert (client.kernel.host, client.kernel.port) == servers[1]
        assert client.kernel.state == "online"
        # the same session, resumed (not a new login): same user, same token
        assert (client.kernel.user["id"], client.kernel.token) == sessions[client]
    ann.kernel.chat.send_and_wait(uid(bob), "still here", timeout=20)
    message = bob.events.wait_for("chat_message", lambda e: e["message"]["text"] == "still here", timeout=20)
    assert message["message"]["from"] == uid(ann)
