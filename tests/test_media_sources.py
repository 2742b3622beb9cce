"""Video sources: the synthetic test pattern, the X11 screen under a private Xvfb, a video file."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import av
import numpy as np
import pytest

from client.media.sources import (FileSource, ScreenSource, TestPatternSource, open_camera, open_screen,
                                  read_barcode)
from client.media.video_codec import CAMERA_VGA, H264Decoder, H264Encoder, VideoProfile


def test_test_pattern_moves_and_carries_counter_and_time():
    source = TestPatternSource(320, 240, 15, label="bot")
    first, second = source.read(), source.read()
    assert first.image.shape == (240, 320, 3) and first.image.dtype == np.uint8
    assert (first.index, second.index) == (0, 1)
    assert abs(first.capture_us - time.time_ns() // 1000) < 1_000_000
    assert second.capture_us >= first.capture_us
    assert not np.array_equal(first.image, second.image), "the pattern must move"
    assert read_barcode(first.image) == 0 and read_barcode(second.image) == 1


def test_barcode_survives_h264_round_trip():
    source = TestPatternSource(640, 480, 30)
    encoder = H264Encoder(CAMERA_VGA)
    decoder = H264Decoder()
    for _ in range(40):
        picture = source.read()
        for unit in encoder.encode(picture.image):
            (frame,) = decoder.decode(unit.payload)
            assert read_barcode(frame.to_ndarray(format="bgr24")) == picture.index


def test_no_camera_falls_back_to_the_test_pattern():
    assert not os.path.exists("/dev/video7")
    source = open_camera(7, 320, 240, 10)
    assert isinstance(source, TestPatternSource)
    assert source.read().image.shape == (240, 320, 3)


def test_screen_without_display_falls_back(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    source = open_screen(fps=5)
    assert isinstance(source, TestPatternSource) and (source.width, source.height) == (1280, 720)


def _free_display() -> int:
    for number in range(140, 200):
        if not os.path.exists(f"/tmp/.X11-unix/X{number}") and not os.path.exists(f"/tmp/.X{number}-lock"):
            return number
    pytest.skip("no free X display number")


@pytest.fixture
def xvfb():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed: X11 screen capture cannot be tested here")
    number = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "800x600x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{number}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("Xvfb did not start")
        time.sleep(0.05)
    yield f":{number}"
    proc.terminate()
    proc.wait(timeout=10)


def test_screen_capture_under_xvfb_encodes_at_screen_size(xvfb):
    source = ScreenSource(xvfb, fps=5)
    try:
        assert (source.width, source.height) == (800, 600)
        picture = source.read()
        assert picture is not None and picture.image.shape == (600, 800, 3)
        encoder = H264Encoder(VideoProfile(source.width, source.height, source.fps, 800_000, preset="veryfast"))
        (unit,) = encoder.encode(picture.image)
        assert unit.keyframe
        (frame,) = H264Decoder().decode(unit.payload)
        assert (frame.width, frame.height) == (800, 600)
    finally:
        source.close()


def test_file_source_scales_and_loops(tmp_path):
    path = str(tmp_path / "clip.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((120, 160, 3), i * 40, np.uint8), format="bgr24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    source = FileSource(path, 320, 240)
    assert source.fps == pytest.approx(10)
    pictures = [source.read() for _ in range(12)]
    assert all(p is not None and p.image.shape == (240, 320, 3) for p in pictures)
    assert [p.index for p in pictures] == list(range(12))
    levels = [int(p.image.mean()) for p in pictures]
    assert levels[5] == pytest.approx(levels[0], abs=8), "the file loops back to its first frame"
    source.close()
    assert FileSource(path, loop=False).read() is not None
