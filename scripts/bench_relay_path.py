#!/usr/bin/env python3
"""The server's own code per relayed frame, without the kernel: a real ``Server`` (not
listening) and a 4-member room. It isolates the Python cost of the hot path (the part a change
to the server can make slower) from the kernel's, which dominates ``scripts/bench_relay.py``
and makes its figures swing with the machine's load.

Two depths:

* ``--through relay`` (default): ``Relay.forward`` alone, the members stand-in connections that
  only count what they are sent;
* ``--through connection``: the whole path of a frame on the reactor thread, with real
  ``Connection`` objects over sockets whose system calls are replaced by stand-ins (the
  publisher's ``recv_into`` hands over the next frame, the receivers' ``send``/``sendmsg``
  take everything): read, decode, dispatch, relay, queue, and one reactor iteration (its
  ``select`` on idle sockets and the flush of every receiver).

Run it from the tree to measure (``PYTHONPATH`` decides which code is timed):

    python scripts/bench_relay_path.py --frames 200000 --repeat 5
    python scripts/bench_relay_path.py --through connection --frames 100000 --repeat 5
"""
from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.frame import encode_frame  # noqa: E402
from common.media import FLAG_KEYFRAME, MEDIA_HEADER, Codec, MediaKind  # noqa: E402
from common.packets import PacketType  # noqa: E402
from server.app import Server  # noqa: E402
from server.connection import Connection  # noqa: E402
from server.config import ServerConfig  # noqa: E402

MEMBERS = 4


class CountingConnection:
    """What the relay and the room registry touch of a connection."""

    def __init__(self, user_id: int) -> None:
        self.user_id = user_id
        self.id = user_id
        self.nickname = f"m{user_id}"
        self.avatar: dict = {}
        self.closed = False
        self.out_size = 0
        self.frames = 0
        self.who = f"peer=bench user={user_id}"

    def send(self, data: bytes) -> None:
        self.frames += 1


class StandInSocket(socket.socket):
    """A real (idle) socket for the selector, with the data calls replaced: ``recv_into``
    hands over ``incoming`` once, ``send``/``sendmsg`` take everything and count."""

    incoming = b""
    sent = 0

    def recv_into(self, buffer, nbytes: int = 0, flags: int = 0) -> int:   # type: ignore[override]
        data, self.incoming = self.incoming, b""
        if not data:
            raise BlockingIOError
        buffer[:len(data)] = data
        return len(data)

    def send(self, data, flags: int = 0) -> int:   # type: ignore[override]
        self.sent += 1
        return len(data)

    def sendmsg(self, buffers, *args) -> int:   # type: ignore[override]
        self.sent += 1
        return sum(len(b) for b in buffers)


def stand_in_connections(server: Server, count: int) -> tuple[list[Connection], list[socket.socket]]:
    conns, keep = [], []
    for i in range(count):
        a, b = socket.socketpair()
        sock = StandInSocket(a.family, a.type, a.proto, fileno=a.detach())
        sock.setblocking(False)
        conn = Connection(server, sock, ("127.0.0.1", 40000 + i))
        conn.user_id = i + 1
        conn.nickname = f"m{i + 1}"
        conns.append(conn)
        keep.append(b)
    return conns, keep


def through_connection(server: Server, bodies: list[bytes], keyframe: bytes, repeat: int) -> float:
    """Best seconds for ``bodies`` through the publisher's connection (see the module's doc)."""
    conns, _keep = stand_in_connections(server, MEMBERS)
    room = server.rooms.create(conns[0], "bench", "")
    for conn in conns[1:]:
        server.rooms.join(conn, room.number, "")
    publisher, reactor = conns[0], server.reactor
    sock = publisher.sock
    assert isinstance(sock, StandInSocket)
    frames = [encode_frame(PacketType.MEDIA_FRAME, body) for body in bodies]
    sock.incoming = encode_frame(PacketType.MEDIA_FRAME, keyframe)
    publisher.on_readable()
    reactor.run_once()
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        for data in frames:
            sock.incoming = data
            publisher.on_readable()
            reactor.run_once()
        best = min(best, time.process_time() - started)
    sent = [c.sock.sent for c in conns[1:]]   # type: ignore[attr-defined]
    assert min(sent) >= len(frames) * repeat, sent
    return best


def through_relay(server: Server, bodies: list[bytes], keyframe: bytes, repeat: int) -> float:
    """Best seconds for ``bodies`` through ``Relay.forward`` alone."""
    conns = [CountingConnection(i + 1) for i in range(MEMBERS)]
    room = server.rooms.create(conns[0], "bench", "")   # type: ignore[arg-type]
    for conn in conns[1:]:
        server.rooms.join(conn, room.number, "")          # type: ignore[arg-type]
    publisher = conns[0]
    server.relay.forward(publisher, keyframe)            # type: ignore[arg-type]
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        forward = server.relay.forward
        for body in bodies:
            forward(publisher, body)                     # type: ignore[arg-type]
        best = min(best, time.process_time() - started)
    copies = sum(c.frames for c in conns[1:])
    assert copies >= (MEMBERS - 1) * len(bodies) * repeat, copies
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--through", choices=("relay", "connection"), default="relay",
                        help="time Relay.forward alone, or the whole reactor path of a frame")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(host="127.0.0.1", port=0, db=f"sqlite:///{tmp}/bench.db", data_dir=tmp)
        server = Server(config)
        server.storage.init_schema()
        delta = MEDIA_HEADER.pack(0, MediaKind.CAMERA, Codec.H264, 0, 1, 0) + bytes(1864)
        audio = MEDIA_HEADER.pack(0, MediaKind.MICROPHONE, Codec.OPUS, 0, 1, 0) + bytes(100)
        keyframe = MEDIA_HEADER.pack(0, MediaKind.CAMERA, Codec.H264, FLAG_KEYFRAME, 0, 0) + bytes(15000)
        bodies = [audio, audio, audio, delta] * (args.frames // 4)
        run = through_connection if args.through == "connection" else through_relay
        best = run(server, bodies, keyframe, args.repeat)
        print(f"{1e6 * best / len(bodies):.2f} us per frame through {args.through} ({MEMBERS - 1} copies; "
              f"best of {args.repeat} x {len(bodies)} frames, 3 audio : 1 video)")
        server.storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
