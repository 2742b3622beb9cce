"""Hostile peers are answered or dropped with a logged reason; a client beside them is unharmed."""
from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from common import frame as wire
from common.packets import PacketType
from tests.helpers import HELLO, raw_connect, raw_request, read_until_closed, wait_until


class HeartbeatProbe(threading.Thread):
    """A well-behaved raw client that sends a heartbeat every 20 ms and records each reply time."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = raw_connect(port)
        assert raw_request(self.sock, PacketType.HELLO, HELLO).type == PacketType.RESULT
        self.rtts: list[float] = []
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rid = 100
        try:
            while not self.stop_flag.is_set():
                rid += 1
                started = time.perf_counter()
                reply = raw_request(self.sock, PacketType.HEARTBEAT, {}, request_id=rid, timeout=2)
                assert reply.type == PacketType.RESULT
                self.rtts.append(time.perf_counter() - started)
                self.stop_flag.wait(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def finish(self) -> list[float]:
        self.stop_flag.set()
        self.join(5)
        self.sock.close()
        if self.error:
            raise self.error
        return self.rtts


def random_bytes_peer(port: int) -> str:
    sock = raw_connect(port)
    try:
        payload = os.urandom(10 * 1024 * 1024)
        sock.sendall(payload)
    except (BrokenPipeError, ConnectionResetError):
        pass
    read_until_closed(sock, 5)
    sock.close()
    return "dropped"


def huge_frame_peer(port: int) -> str:
    sock = raw_connect(port)
    sock.sendall(wire.HEADER.pack(wire.MAGIC, PacketType.CHAT_SEND, 0xFFFFFFFF, 1))
    read_until_closed(sock, 5)
    sock.close()
    return "dropped"


def invalid_json_peer(port: int) -> str:
    sock = raw_connect(port)
    body = b"{this is not json"
    sock.sendall(wire.HEADER.pack(wire.MAGIC, PacketType.HELLO, len(body), 9) + body)
    decoder = wire.FrameDecoder()
    sock.settimeout(5)
    while True:
        frames = decoder.feed(sock.recv(4096))
        if frames:
            break
    sock.close()
    assert frames[0].type == PacketType.ERROR and frames[0].json()["name"] == "BAD_REQUEST"
    return "error"


def unknown_type_peer(port: int) -> str:
    sock = raw_connect(port)
    assert raw_request(sock, PacketType.HELLO, HELLO).type == PacketType.RESULT
    try:
        sock.sendall(b"".join(wire.encode_frame(4321, b"{}", i) for i in range(1, 1001)))
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = read_until_closed(sock, 5)
    sock.close()
    errors = [f for f in wire.FrameDecoder().feed(data) if f.type == PacketType.ERROR]
    assert errors and errors[0].json()["name"] in ("UNKNOWN_TYPE", "NOT_AUTHENTICATED")
    return "dropped after errors"


def test_hostile_peers_do_not_disturb_a_good_client(server_factory, caplog):
    caplog.set_level(logging.INFO, logger="server")
    running = server_factory(heartbeat_interval=0.5, heartbeat_timeout=2.0)
    probe = HeartbeatProbe(running.port)
    probe.start()
    stall = raw_connect(running.port)
    stall.sendall(wire.encode_json(PacketType.HELLO, HELLO)[:5])     # half a header, then nothing
    stall_started = time.monotonic()
    results: dict[str, str] = {}
    peers = [random_bytes_peer, huge_frame_peer, invalid_json_peer, unknown_type_peer]
    threads = [threading.Thread(target=lambda p=p: results.__setitem__(p.__name__, p(running.port)))
               for p in peers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert read_until_closed(stall, 6) == b""
    assert time.monotonic() - stall_started < 5.0
    stall.close()
    rtts = probe.finish()
    assert set(results) == {p.__name__ for p in peers}
    assert len(rtts) >= 20
    # The bug this guards against: the reactor held up by a hostile peer (a blocking read of the
    # stalled half header, a whole bad stream handled in one go), which stalls every neighbour
    # for as long: up to the 2 s heartbeat timeout, or until the probe's own 2 s timeout. The
    # slowest reply is held well below that; the median shows the probe is served as usual.
    # (A 100 ms bound on the slowest reply measured the scheduler of a loaded machine: the
    # server shares this process and its GIL with five busy client threads.)
    rtts.sort()
    median, slowest = rtts[len(rtts) // 2], rtts[-1]
    assert median < 0.050 and slowest < 1.0, f"heartbeat replies: median {median * 1000:.1f} ms, slowest {slowest * 1000:.1f} ms"
    # The server logs a close just after closing the socket: the stall's end may be seen first.
    wait_until(lambda: "heartbeat timeout" in caplog.text, 5, "the stalled peer's close logged")
    log = caplog.text
    assert "protocol error: bad magic" in log
    assert "claims 4294967295 bytes" in log
    assert "heartbeat timeout" in log
    assert "too many protocol violations" in log
    assert "invalid JSON body" in log


@pytest.mark.parametrize("max_connections", [3])
def test_connection_cap(server_factory, max_connections):
    running = server_factory(max_connections=max_connections)
    socks = [raw_connect(running.port) for _ in range(max_connections)]
    for sock in socks:
        assert raw_request(sock, PacketType.HELLO, HELLO).type == PacketType.RESULT
    extra = raw_connect(running.port)
    data = read_until_closed(extra, 5)
    assert b"TOO_MANY_CONNECTIONS" in data
    for sock in socks + [extra]:
        sock.close()
