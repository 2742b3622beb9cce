#!/usr/bin/env python3
"""The relay's own code per frame, without sockets: ``Relay.forward`` on a real ``Server``
(not listening) for a 4-member room whose members are stand-in connections that only count
what they are sent. It isolates the Python cost of the hot path (the part a change to
``server/relay.py`` can make slower) from the kernel's, which dominates
``scripts/bench_relay.py`` and makes its figures swing with the machine's load.

Run it from the tree to measure (``PYTHONPATH`` decides which code is timed):

    python scripts/bench_relay_path.py --frames 200000 --repeat 5
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.media import FLAG_KEYFRAME, MEDIA_HEADER, Codec, MediaKind  # noqa: E402
from server.app import Server  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(host="127.0.0.1", port=0, db=f"sqlite:///{tmp}/bench.db", data_dir=tmp)
        server = Server(config)
        server.storage.init_schema()
        conns = [CountingConnection(i + 1) for i in range(MEMBERS)]
        room = server.rooms.create(conns[0], "bench", "")   # type: ignore[arg-type]
        for conn in conns[1:]:
            server.rooms.join(conn, room.number, "")          # type: ignore[arg-type]
        delta = MEDIA_HEADER.pack(0, MediaKind.CAMERA, Codec.H264, 0, 1, 0) + bytes(1864)
        audio = MEDIA_HEADER.pack(0, MediaKind.MICROPHONE, Codec.OPUS, 0, 1, 0) + bytes(100)
        keyframe = MEDIA_HEADER.pack(0, MediaKind.CAMERA, Codec.H264, FLAG_KEYFRAME, 0, 0) + bytes(15000)
        publisher = conns[0]
        server.relay.forward(publisher, keyframe)            # type: ignore[arg-type]
        bodies = [audio, audio, audio, delta] * (args.frames // 4)
        best = float("inf")
        for _ in range(args.repeat):
            started = time.process_time()
            forward = server.relay.forward
            for body in bodies:
                forward(publisher, body)                     # type: ignore[arg-type]
            best = min(best, time.process_time() - started)
        copies = sum(c.frames for c in conns[1:])
        assert copies >= (MEMBERS - 1) * len(bodies) * args.repeat, copies
        print(f"{1e6 * best / len(bodies):.2f} us per frame ({MEMBERS - 1} copies; best of {args.repeat} x "
              f"{len(bodies)} frames, 3 audio : 1 video)")
        server.storage.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
