"""Avatar uploads cost bounded memory: eight users upload a 5000x5000 PNG at once to a server
running as its own process; its peak RSS stays under 300 MB and, once idle, it is back under
120 MB (read from /proc: VmHWM is the peak, VmRSS the present).

Run alone to print the figures for docs/PERFORMANCE.md:
    .venv-test/bin/python -m pytest -p no:cacheprovider -s tests/test_avatar_memory.py
"""
from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from common import frame as wire
from common import limits
from common.packets import PacketType
from tests.helpers import raw_login, raw_register, unique_phone
from tests.server_process import ServerProcess

UPLOADERS = 8
SIDE = 5000
PEAK_LIMIT_MB = 300
IDLE_LIMIT_MB = 120


def big_png() -> bytes:
    """A legal 5000x5000 PNG (under the 2 MB upload limit): a gradient with shapes on it."""
    image = Image.linear_gradient("L").resize((SIDE, SIDE)).convert("RGB")
    draw = ImageDraw.Draw(image)
    for n in range(40):
        draw.ellipse((n * 120, n * 100, n * 120 + 600, n * 100 + 400), fill=(n * 6, 120, 255 - n * 6))
    out = io.BytesIO()
    image.save(out, "PNG")
    data = out.getvalue()
    assert len(data) <= limits.MAX_AVATAR_BYTES, len(data)
    return data


def rss_mb(pid: int) -> dict[str, float]:
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) / 1024
    return figures


def upload(port: int, phone: str, png: bytes, results: list) -> None:
    sock, reply = raw_login(port, phone)
    assert reply.type == PacketType.RESULT, reply.json()
    sock.sendall(wire.encode_frame(PacketType.AVATAR_UPLOAD, png, 9))
    sock.settimeout(120)
    decoder = wire.FrameDecoder()
    while True:
        data = sock.recv(65536)
        if not data:
            results.append("closed")
            return
        for frame in decoder.feed(data):
            if frame.request_id == 9:
                results.append(frame.type)
                sock.close()
                return


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RSS from /proc")
def test_concurrent_big_avatar_uploads_keep_memory_bounded(tmp_path):
    png = big_png()
    with ServerProcess(f"sqlite:///{tmp_path}/memory.db", tmp_path / "data") as server:
        port = server.start()
        phones = [unique_phone() for _ in range(UPLOADERS)]
        for phone in phones:
            assert raw_register(port, phone).type == PacketType.RESULT
        before = rss_mb(server.pid)
        results: list = []
        threads = [threading.Thread(target=upload, args=(port, phone, png, results)) for phone in phones]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        elapsed = time.monotonic() - started
        assert results == [PacketType.RESULT] * UPLOADERS
        time.sleep(1.0)     # idle: nothing is being decoded
        after = rss_mb(server.pid)
    print(f"\navatar memory: {UPLOADERS} concurrent uploads of a {SIDE}x{SIDE} PNG ({len(png)} bytes) "
          f"in {elapsed:.1f} s; RSS before {before['VmRSS']:.0f} MB, peak {after['VmHWM']:.0f} MB, "
          f"idle after {after['VmRSS']:.0f} MB")
    assert after["VmHWM"] < PEAK_LIMIT_MB, f"peak RSS {after['VmHWM']:.0f} MB"
    assert after["VmRSS"] < IDLE_LIMIT_MB, f"idle RSS {after['VmRSS']:.0f} MB"
