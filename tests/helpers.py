"""Shared test helpers: a real server on an ephemeral port, clients with event recorders."""
from __future__ import annotations

import itertools
import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest

from client.events import EventRecorder
from client.kernel import ClientKernel
from common import frame as wire
from common.packets import PacketType
from server.app import Server
from server.config import ServerConfig
from server.storage import Storage, open_storage
from server.storage.messages import Message, NewMessage, store_messages_tx
from server.storage.sql import Cursor

DEFAULT_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
_phones = itertools.count(int(uuid.uuid4().int % 10**6) * 1000)


def unique_phone() -> str:
    return f"1{next(_phones):010d}"


def test_config(tmp_path, **overrides) -> ServerConfig:
    config = ServerConfig(host="127.0.0.1", port=0, db=f"sqlite:///{tmp_path}/test.db", data_dir=str(tmp_path),
                          pool_threads=4, scrypt_n=2 ** 10, heartbeat_interval=1.0, heartbeat_timeout=5.0,
                          max_unauthenticated_per_address=10_000,
                          # every test client comes from 127.0.0.1: the per-address limits have their own tests
                          registrations_per_minute_per_address=0, room_joins_per_minute_per_address=0)
    for key, value in overrides.items():
        setattr(config, key, value)
    config.validate()
    return config


test_config.__test__ = False  # a helper, not a test


def mysql_server_url() -> str:
    return os.environ.get("MEETING_TEST_MYSQL_URL", DEFAULT_MYSQL_URL)


def make_mysql_database() -> tuple[str, callable]:
    """A fresh database on the MySQL server for one test; returns its URL and a dropper.

    Without a reachable server the test is skipped locally but fails in CI (CI=true)."""
    import pymysql
    from urllib.parse import urlsplit

    base = mysql_server_url()
    parts = urlsplit(base)
    try:
        admin = pymysql.connect(host=parts.hostname, port=parts.port or 3306, user=parts.username or "root",
                                password=parts.password or "", connect_timeout=5, autocommit=True)
    except pymysql.err.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the MySQL server at {base}: {exc}")
        pytest.skip(f"no MySQL server at {base}: {exc}")
    name = f"rtm_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    netloc = parts.netloc
    url = f"mysql://{netloc}/{name}"

    def drop() -> None:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
    return url, drop


def redis_server_url() -> str:
    """The Redis server for cluster tests ($MEETING_TEST_REDIS_URL). Without one answering PING
    the test is skipped locally but fails in CI (CI=true), as with MySQL."""
    import redis

    url = os.environ.get("MEETING_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the Redis server at {url}: {exc}")
        pytest.skip(f"no Redis server at {url}: {exc}")
    finally:
        client.close()
    return url


def fresh_storage(backend: str, tmp_path) -> tuple[Storage, callable]:
    if backend == "sqlite":
        storage = open_storage(f"sqlite:///{tmp_path}/store.db")
        storage.init_schema()
        return storage, storage.close
    url, drop = make_mysql_database()
    storage = open_storage(url)
    storage.init_schema()

    def cleanup() -> None:
        storage.close()
        drop()
    return storage, cleanup


def insert_message_tx(cur: Cursor, sender_id: int, recipient_id: int, client_msg_id: str, body: str,
                      now_ms: int) -> tuple[Message, bool]:
    """Store one message without a friendship check; see store_messages_tx."""
    result = store_messages_tx(cur, [NewMessage(sender_id, recipient_id, client_msg_id, body, True)], now_ms)[0]
    if result is None:
        raise ValueError("a user cannot send a message to itself")
    return result


def count_sent(storage: Storage, sender_id: int, client_msg_id: str) -> int:
    """How many stored messages the sender sent with this client message id (1 after any retries)."""
    with storage.db.tx() as cur:
        row = cur.one("SELECT COUNT(*) FROM messages WHERE sender_id = ? AND client_msg_id = ?",
                      (sender_id, client_msg_id))
    return int(row[0])


@dataclass
class RunningServer:
    server: Server
    config: ServerConfig

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self, timeout: float = 15.0) -> None:
        if not self.server.stopped.is_set():
            self.server.request_shutdown("test finished")
            assert self.server.stopped.wait(timeout), "server did not stop in time"


def start_server(config: ServerConfig, storage: Storage | None = None) -> RunningServer:
    storage = storage or open_storage(config.db)
    if storage.db.schema_version() is None:
        storage.init_schema()
    server = Server(config, storage)
    server.start_in_thread()
    return RunningServer(server, config)


class TestClient:
    """A ClientKernel plus the events it emitted."""

    __test__ = False  # a helper, not a test class

    def __init__(self, port: int, **kwargs) -> None:
        self.kernel = ClientKernel("127.0.0.1", port, request_timeout=10.0, **kwargs)
        self.events = EventRecorder()
        self.kernel.add_listener(self.events)
        self.phone = unique_phone()
        self.password = "correct horse battery"

    def register_and_login(self, nickname: str = "tester") -> dict:
        self.kernel.register(self.phone, self.password, nickname)
        return self.kernel.login(self.phone, self.password)

    def close(self) -> None:
        self.kernel.close()


def logged_in_friends(running: RunningServer, client_factory) -> tuple[TestClient, TestClient]:
    """alice and bob, logged in to ``running`` and made friends directly in its storage."""
    alice = client_factory(running.port)
    alice.register_and_login("alice")
    bob = client_factory(running.port)
    bob.register_and_login("bob")
    running.server.storage.add_friendship(alice.kernel.user["id"], bob.kernel.user["id"], int(time.time() * 1000))
    return alice, bob


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "the condition",
               interval: float = 0.01) -> None:
    """Poll ``predicate`` every ``interval`` s until it holds; fail the test if it does not
    within ``timeout`` s. A costly predicate (a new process, a new database connection) polls
    less often."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(interval)


def barrier(client: TestClient, timeout: float = 10.0) -> None:
    """Let everything already on its way to ``client`` arrive, without sleeping.

    First the work its kernel queued on the task thread (session hooks: the friend list, the
    unread backlog, pending file offers) has run; then one ordered round trip on its connection
    (HEARTBEAT): the server answers the requests of a connection in order and queues the reply
    behind whatever it queued for it before, and the network thread handles the frames in order.
    So once this returns, every event the server had sent to the client has been emitted, and a
    test may assert that something did not arrive."""
    client.kernel.run_task(lambda: None).result(timeout)
    client.kernel.request(PacketType.HEARTBEAT, {}, timeout=timeout)


def raw_barrier(sock: socket.socket, decoder: wire.FrameDecoder, request_id: int,
                timeout: float = 10.0) -> list[wire.Frame]:
    """``barrier`` for a raw connection: a HEARTBEAT request, then every frame up to its reply.
    Returns the frames that came before the reply: all the server had queued for ``sock``."""
    sock.settimeout(timeout)
    sock.sendall(wire.encode_json(PacketType.HEARTBEAT, {}, request_id))
    before: list[wire.Frame] = []
    while True:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("the server closed the connection")
        for frame in decoder.feed(data):
            if frame.request_id == request_id and frame.type in (PacketType.RESULT, PacketType.ERROR):
                return before
            before.append(frame)


def cut_connection(kernel: ClientKernel, reason: str) -> None:
    """Drop the client's connection as a network failure would (the kernel then reconnects)."""
    kernel._link.drop(reason)


def raw_connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return sock


def connect_from(port: int, source: str, timeout: float = 5.0) -> socket.socket:
    """A raw connection from another loopback address (127.0.0.0/8 is all local)."""
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))


def raw_request(sock: socket.socket, ptype: int, body: dict | None = None, request_id: int = 1,
                timeout: float = 5.0) -> wire.Frame:
    """Send one JSON frame on a raw socket and read frames until the reply to it arrives."""
    sock.settimeout(timeout)
    sock.sendall(wire.encode_json(ptype, body or {}, request_id))
    decoder = wire.FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        for frame in decoder.feed(data):
            if frame.request_id == request_id:
                return frame


def raw_register(port: int, phone: str, nickname: str = "raw", source: str = "127.0.0.1") -> wire.Frame:
    """HELLO and REGISTER on a fresh raw connection; the reply (the connection is closed)."""
    sock = connect_from(port, source)
    try:
        assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
        return raw_request(sock, PacketType.REGISTER, {"phone": phone, "password": RAW_PASSWORD,
                                                       "nickname": nickname}, 2)
    finally:
        sock.close()


def raw_login(port: int, phone: str, password: str = "", source: str = "127.0.0.1") -> tuple[socket.socket, wire.Frame]:
    """HELLO and LOGIN on a fresh raw connection: the socket and the LOGIN reply."""
    sock = connect_from(port, source)
    assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
    return sock, raw_request(sock, PacketType.LOGIN, {"phone": phone, "password": password or RAW_PASSWORD},
                             2, timeout=10)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (a timeout fails the test)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return data


HELLO = {"version": 1, "client": "raw-test"}
RAW_PASSWORD = "correct horse battery"
RESULT = PacketType.RESULT
