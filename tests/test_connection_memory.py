"""What the server holds per connection, measured on the server as its own process (issue 12
item 1): peers that have not logged in flood HEARTBEAT and never read the replies."""
from __future__ import annotations

import multiprocessing
import selectors
import socket
import threading
import time

import psutil

from common import frame as wire
from common.packets import PacketType
from tests.helpers import HELLO, RESULT, raw_connect, raw_request, wait_until
from tests.server_process import ServerProcess

FLOODERS = 64                  # the most unauthenticated connections one address may hold
FLOOD_SECONDS = 8.0


def flood(port: int, seconds: float, report: "multiprocessing.Queue") -> None:
    """In its own process: FLOODERS connections send HELLO, then HEARTBEATs as fast as the
    server takes them, and never read (a tiny receive window, so the replies back up on the
    server's side). Reports each connection's bytes of heartbeats sent."""
    beats = memoryview(b"".join(wire.encode_json(PacketType.HEARTBEAT, {}, n) for n in range(2, 5000)))
    selector = selectors.DefaultSelector()
    sent = {}
    for _ in range(FLOODERS):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(wire.encode_json(PacketType.HELLO, HELLO, 1))
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_WRITE)
        sent[sock] = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in selector.select(0.1):
            sock = key.fileobj
            try:
                sent[sock] += sock.send(beats[sent[sock] % len(beats):])
            except BlockingIOError:
                pass
            except OSError:
                selector.unregister(sock)
        time.sleep(0.005)     # the server reads far slower than this refills: spare the shared cores
    report.put(sorted(sent.values()))
    for sock in sent:
        sock.close()


def heartbeat_rtts(port: int, stop: threading.Event, rtts: list[float]) -> None:
    """A logged-in neighbour: one HEARTBEAT round trip every 20 ms until ``stop``."""
    sock = raw_connect(port)
    raw_request(sock, PacketType.HELLO, HELLO, 1)
    body = {"phone": "13800000001", "password": "neighbour password", "nickname": "neighbour"}
    assert raw_request(sock, PacketType.REGISTER, body, 2, timeout=30).type == RESULT
    assert raw_request(sock, PacketType.LOGIN, {"phone": body["phone"], "password": body["password"]},
                       3, timeout=30).type == RESULT
    request_id = 4
    rtts.append(0.0)          # logged in: the flood may start
    while not stop.is_set():
        started = time.perf_counter()
        assert raw_request(sock, PacketType.HEARTBEAT, {}, request_id, timeout=5).type == RESULT
        rtts.append(time.perf_counter() - started)
        request_id += 1
        stop.wait(0.02)
    sock.close()


def test_unread_replies_of_anonymous_floods_stay_small(tmp_path):
    with ServerProcess(f"sqlite:///{tmp_path}/meeting.db", tmp_path / "data") as server:
        port = server.start()
        process = psutil.Process(server.pid)
        stop = threading.Event()
        rtts: list[float] = []
        neighbour = threading.Thread(target=heartbeat_rtts, args=(port, stop, rtts), daemon=True)
        neighbour.start()
        wait_until(lambda: rtts or not neighbour.is_alive(), 30, "the neighbour logging in")
        rss_before = process.memory_info().rss
        rtts.clear()
        context = multiprocessing.get_context("spawn")
        report = context.Queue()
        flooder = context.Process(target=flood, args=(port, FLOOD_SECONDS, report), daemon=True)
        flooder.start()
        peak = rss_before
        ends = time.monotonic() + FLOOD_SECONDS + 30
        sent = None
        while sent is None:
            assert time.monotonic() < ends, "the flooding process did not report"
            peak = max(peak, process.memory_info().rss)
            try:
                sent = report.get(timeout=0.2)
            except Exception:
                continue
        peak = max(peak, process.memory_info().rss)
        stop.set()
        neighbour.join(10)
        flooder.join(10)

    assert len(sent) == FLOODERS and min(sent) > 64 * 1024, f"not every connection flooded: {sent}"
    grown = (peak - rss_before) / 2 ** 20
    assert grown < 50, f"{FLOODERS} anonymous flooders grew the server by {grown:.0f} MiB"
    # The bug this guards against: the server serving the flooders' backlog before the neighbour
    # (no pre-login read limit): its heartbeats then stall for seconds (a 1.9 s stall, or one
    # unanswered for 5 s) and it manages about 50 round trips instead of 200-400. A p99 under
    # 50 ms asserted the machine instead: on two loaded cores the scheduler alone sets the
    # slowest few of 300 samples (p99 80-130 ms with a median of 8-16 ms, the server being fine).
    assert not neighbour.is_alive() and len(rtts) >= FLOOD_SECONDS / 0.02 / 4, \
        f"the neighbour's heartbeats stalled: {len(rtts)} round trips in {FLOOD_SECONDS:g} s"
    rtts.sort()
    median, slowest = rtts[len(rtts) // 2] * 1000, rtts[-1] * 1000
    assert median < 50 and slowest < 1000, \
        f"the logged-in neighbour's heartbeats during the flood: median {median:.1f} ms, slowest {slowest:.1f} ms"


IDLE_CONNECTIONS = 300
WAVE = 48                      # below the unauthenticated-per-address limit


def log_in_idle(port: int, first_phone: int, count: int) -> list[socket.socket]:
    """``count`` connections that register, log in and then stay idle (replies pipelined)."""
    socks = []
    for n in range(count):
        sock = raw_connect(port, timeout=30)
        phone = str(first_phone + n)
        sock.sendall(wire.encode_json(PacketType.HELLO, HELLO, 1)
                     + wire.encode_json(PacketType.REGISTER, {"phone": phone, "password": "idle password 1",
                                                              "nickname": f"idle {n}"}, 2)
                     + wire.encode_json(PacketType.LOGIN, {"phone": phone, "password": "idle password 1"}, 3))
        socks.append(sock)
    for sock in socks:
        decoder = wire.FrameDecoder()
        replies = {}
        while 3 not in replies:
            data = sock.recv(65536)
            assert data, "the server closed an idle connection while it logged in"
            replies.update((f.request_id, f) for f in decoder.feed(data))
        assert replies[3].type == RESULT, replies[3].json()
    return socks


def test_idle_logged_in_connections_cost_little_memory(tmp_path):
    # 348 accounts from one address: lift the per-address registration limit
    with ServerProcess(f"sqlite:///{tmp_path}/meeting.db", tmp_path / "data",
                       env={"MEETING_REGISTRATIONS_PER_MINUTE_PER_ADDRESS": "0"}) as server:
        port = server.start()
        process = psutil.Process(server.pid)
        warm = log_in_idle(port, 13900000000, WAVE)    # the first logins allocate caches once
        rss_before = process.memory_info().rss
        socks = []
        for wave in range(IDLE_CONNECTIONS // WAVE):
            socks += log_in_idle(port, 13910000000 + wave * WAVE, WAVE)
        rss_after = process.memory_info().rss
        for sock in warm + socks:
            sock.close()
    per_connection = (rss_after - rss_before) / len(socks) / 1024
    assert per_connection < 64, f"{per_connection:.0f} KiB of server memory per idle logged-in connection"
