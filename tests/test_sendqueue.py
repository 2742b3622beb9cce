"""The send queue: many frames leave in one system call, in order, whatever the socket takes."""
from __future__ import annotations

import socket
import sys

from common import frame as wire
from common.packets import PacketType
from common.sendqueue import SendQueue


class CountingSocket:
    """A socket stand-in that takes at most ``take`` bytes per call and counts the calls."""

    def __init__(self, take: int = 1 << 30) -> None:
        self.take = take
        self.calls = 0
        self.data = bytearray()

    def _accept(self, buffers: list) -> int:
        self.calls += 1
        room = self.take
        for buffer in buffers:
            chunk = bytes(buffer)[:room]
            self.data += chunk
            room -= len(chunk)
            if not room:
                break
        if room == self.take:
            raise BlockingIOError
        return self.take - room

    def send(self, buffer) -> int:
        return self._accept([buffer])

    def sendmsg(self, buffers) -> int:
        return self._accept(list(buffers))


def frames(count: int) -> list[bytes]:
    """Small replies, then media-sized frames, then small again: every size class, in order."""
    small = [wire.encode_json(PacketType.RESULT, {"n": n}, n) for n in range(count)]
    large = [wire.encode_frame(PacketType.MEDIA_FRAME, bytes([n % 256]) * (1500 + n), 0) for n in range(count)]
    return small[: count // 2] + large + small[count // 2:]


def test_everything_queued_leaves_in_one_call_in_order():
    queue, sock = SendQueue(), CountingSocket()
    data = frames(600)
    for frame in data:
        queue.append(frame)
    total = sum(map(len, data))
    assert queue.size == total
    assert queue.write(sock) == total
    assert sock.calls == 1 and bytes(sock.data) == b"".join(data)
    assert not queue and queue.size == 0


def test_partial_writes_keep_order_and_count():
    for take in (1, 7, 100, 1499, 4096, 65537):
        queue, sock = SendQueue(), CountingSocket(take)
        data = frames(40)
        for frame in data:
            queue.append(frame)
        while queue:
            before = queue.size
            written = queue.write(sock)
            assert queue.size == before - written
            queue.append(b"")            # appending between partial writes keeps the order too
        assert bytes(sock.data) == b"".join(data), take


def test_small_frames_cost_their_bytes_not_an_object_each():
    queue = SendQueue()
    reply = wire.encode_json(PacketType.RESULT, {}, 1)
    for _ in range(100_000):
        queue.append(reply)
    held = sum(sys.getsizeof(item) for item in queue._items)
    assert queue.size == 100_000 * len(reply)
    assert held < 1.2 * queue.size, f"{held} bytes of objects hold {queue.size} bytes of replies"


def test_recycled_buffers_go_back_once_fully_written():
    given = []
    queue = SendQueue(recycle=given.append)
    chunks = [bytearray(bytes([n]) * 300_000) for n in range(3)]
    for chunk in chunks:
        queue.append(chunk, recycle=True)
    sock = CountingSocket(250_000)
    queue.write(sock)
    assert given == []                                  # the first is only partly written
    queue.write(sock)
    assert [id(b) for b in given] == [id(chunks[0])]
    while queue:
        queue.write(sock)
    assert [id(b) for b in given] == [id(c) for c in chunks]
    assert bytes(sock.data) == b"".join(chunks)


def test_a_real_socket_that_fills_up():
    a, b = socket.socketpair()
    a.setblocking(False)
    queue = SendQueue()
    data = frames(2000) * 4
    for frame in data:
        queue.append(frame)
    received = bytearray()
    while queue:
        queue.write(a)
        while True:
            try:
                chunk = b.recv(1 << 20, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            received += chunk
    a.close()
    while chunk := b.recv(1 << 20):
        received += chunk
    b.close()
    assert bytes(received) == b"".join(data)
