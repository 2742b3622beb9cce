"""Video sources: camera (OpenCV), X11 screen, video file and a synthetic test pattern.

Every source hands out ``Picture``s (a BGR image plus its capture time) from ``read()``.
A *paced* source blocks until its next frame is due (a camera, the X11 grabber); the
others return at once and the publisher paces them. ``open_camera`` and ``open_screen``
fall back to the test pattern when the device is missing, so a machine without a camera
or a display still publishes a moving picture.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Callable

import av
import cv2
import numpy as np

from .clock import now_us

log = logging.getLogger("client.media.sources")

BARCODE_BITS = 24


@dataclass
class Picture:
    image: np.ndarray      # height x width x 3, uint8, BGR
    capture_us: int        # wall-clock microseconds when the picture was taken
    index: int             # frame number within this source


class VideoSource:
    width: int
    height: int
    fps: float
    paced: bool = False
    name: str = "source"

    def read(self) -> Picture | None:
        """The next picture, or None when the source has ended or failed."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class TestPatternSource(VideoSource):
    """Colour bars scrolling sideways, a bouncing box, the frame counter and the capture time.

    The frame counter is also drawn as a 24-bit barcode along the bottom edge; blocks this
    large survive H.264 at any sane bitrate, so ``read_barcode`` on a decoded picture tells
    which frame it was (the tests use it to check pictures, not just byte counts).
    """

    name = "test pattern"
    __test__ = False    # not a pytest test class despite its name

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0, label: str = "") -> None:
        if width % 2 or height % 2 or width < 2 * BARCODE_BITS or height < 64:
            raise ValueError(f"test pattern size {width}x{height} must be even and at least {2 * BARCODE_BITS}x64")
        self.width, self.height, self.fps, self.label = width, height, fps, label
        self._index = 0
        colours = np.array([[255, 255, 255], [0, 255, 255], [255, 255, 0], [0, 255, 0],
                            [255, 0, 255], [0, 0, 255], [255, 0, 0], [40, 40, 40]], np.uint8)
        bars = np.repeat(colours, (width + 7) // 8, axis=0)[:width]
        self._bars = np.ascontiguousarray(np.broadcast_to(bars, (height, width, 3)))
        self._box = max(16, height // 8)
        self._font_scale = max(0.4, height / 480)

    def read(self) -> Picture:
        index = self._index
        self._index += 1
        capture = now_us()
        image = np.roll(self._bars, (index * 4) % self.width, axis=1)
        span_x, span_y = self.width - self._box, self.height - self._box - self.height // 10
        x = abs((index * 6) % (2 * span_x) - span_x)
        y = abs((index * 4) % (2 * span_y) - span_y)
        image[y:y + self._box, x:x + self._box] = (0, 0, 0)
        stamp = time.strftime("%H:%M:%S", time.localtime(capture / 1e6)) + f".{capture // 1000 % 1000:03d}"
        text = f"{self.label} #{index} {stamp}".strip()
        cv2.putText(image, text, (8, int(30 * self._font_scale)), cv2.FONT_HERSHEY_SIMPLEX,
                    self._font_scale, (0, 0, 0), max(1, int(2 * self._font_scale)), cv2.LINE_AA)
        draw_barcode(image, index)
        return Picture(image, capture, index)


def _barcode_geometry(image: np.ndarray) -> tuple[int, int, int]:
    height, width = image.shape[:2]
    block = width // BARCODE_BITS
    bar_height = max(8, height // 16)
    return block, bar_height, height - bar_height


def draw_barcode(image: np.ndarray, value: int) -> None:
    block, bar_height, top = _barcode_geometry(image)
    for bit in range(BARCODE_BITS):
        level = 255 if value >> (BARCODE_BITS - 1 - bit) & 1 else 0
        image[top:top + bar_height, bit * block:(bit + 1) * block] = level


def read_barcode(image: np.ndarray) -> int:
    """The frame counter drawn by ``draw_barcode`` (reads the centre of each block)."""
    block, bar_height, top = _barcode_geometry(image)
    gray = image[top + bar_height // 4: top + 3 * bar_height // 4].mean(axis=2)
    value = 0
    for bit in range(BARCODE_BITS):
        centre = gray[:, bit * block + block // 4: (bit + 1) * block - block // 4].mean()
        value = value << 1 | (1 if centre > 127 else 0)
    return value


class CameraSource(VideoSource):
    """A camera through OpenCV; ``read`` blocks until the camera delivers a frame."""

    paced = True

    def __init__(self, index: int = 0, width: int = 640, height: int = 480, fps: float = 30.0) -> None:
        self.name = f"camera {index}"
        self._capture = cv2.VideoCapture(index)
        if not self._capture.isOpened():
            self._capture.release()
            raise OSError(f"camera {index} cannot be opened")
        self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._capture.set(cv2.CAP_PROP_FPS, fps)
        self.width, self.height, self.fps = width, height, fps
        self._index = 0

    def read(self) -> Picture | None:
        ok, image = self._capture.read()
        if not ok:
            return None
        capture = now_us()
        if image.shape[1] != self.width or image.shape[0] != self.height:
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        self._index += 1
        return Picture(image, capture, self._index - 1)

    def close(self) -> None:
        self._capture.release()


def open_camera(index: int = 0, width: int = 640, height: int = 480, fps: float = 30.0,
                label: str = "") -> VideoSource:
    """The camera if there is one, else the moving test pattern (no hardware needed)."""
    if os.path.exists(f"/dev/video{index}"):
        try:
            return CameraSource(index, width, height, fps)
        except OSError as exc:
            log.info("%s; using the test pattern", exc)
    else:
        log.info("no camera at /dev/video%d; using the test pattern", index)
    return TestPatternSource(width, height, fps, label)


Region = tuple[int, int, int, int]          # x, y, width, height in screen pixels
HIDDEN_FILL = (51, 38, 32)                  # BGR: the dark grey painted over hidden regions


@dataclass(frozen=True)
class ShareTarget:
    """What to share: the whole screen (``window_id`` None) or one window."""
    title: str
    window_id: int | None = None


SCREEN = ShareTarget("your screen")
XWININFO_LINE = re.compile(r'^\s+(0x[0-9a-f]+) "(.*)": \((.*)\)\s+(\d+)x(\d+)\+-?\d+\+-?\d+\s+\+(-?\d+)\+(-?\d+)')


def list_windows(display: str | None = None, exclude: frozenset[int] = frozenset(),
                 min_size: int = 64) -> list[ShareTarget]:
    """The named application windows on the X display (``xwininfo -root -tree``), largest
    first; an empty list without X or xwininfo. Blocks briefly: call it off the Tk thread."""
    env = {**os.environ, "DISPLAY": display} if display else None
    for attempt in range(3):
        try:
            out = subprocess.run(["xwininfo", "-root", "-tree"], capture_output=True, text=True, timeout=5,
                                 env=env, check=True).stdout
            break
        except subprocess.CalledProcessError as exc:     # a window closed during the walk: again
            log.info("listing the windows failed (%s); attempt %d of 3", exc.stderr.strip(), attempt + 1)
        except (OSError, subprocess.SubprocessError) as exc:
            log.info("cannot list the windows: %s", exc)
            return []
    else:
        return []
    found = []
    for line in out.splitlines():
        match = XWININFO_LINE.match(line)
        if not match or not match.group(3).strip():      # a client window has a WM_CLASS
            continue
        window_id, title = int(match.group(1), 16), match.group(2)
        width, height = int(match.group(4)), int(match.group(5))
        if window_id in exclude or width < min_size or height < min_size or not title.strip():
            continue
        found.append((width * height, ShareTarget(f'the window "{title}"', window_id)))
    return [target for _, target in sorted(found, key=lambda f: -f[0])]


class ScreenSource(VideoSource):
    """The X11 screen, or one window of it, through FFmpeg's x11grab at its own size
    (even-rounded).

    ``max_width`` scales a large screen down keeping its aspect ratio; x11grab paces the
    frames at ``fps`` itself. ``hidden()`` gives the screen regions never to send (the
    meeting's own windows: no hall of mirrors); they are painted over in every picture.
    """

    paced = True

    def __init__(self, display: str | None = None, fps: float = 5.0, max_width: int = 1920,
                 window_id: int | None = None, hidden: Callable[[], list[Region]] | None = None) -> None:
        display = display or os.environ.get("DISPLAY", "")
        if not display:
            raise OSError("no X display (DISPLAY is not set)")
        self.name = f"screen {display}" if window_id is None else f"window {window_id:#x} on {display}"
        options = {"framerate": f"{fps:g}", "draw_mouse": "1"}
        if window_id is not None:
            options["window_id"] = str(window_id)
        try:
            self._container = av.open(display, format="x11grab", options=options)
        except av.error.FFmpegError as exc:
            raise OSError(f"cannot capture {self.name}: {exc}") from None
        stream = self._container.streams.video[0]
        screen_w, screen_h = stream.codec_context.width, stream.codec_context.height
        self._scale = min(1.0, max_width / screen_w)
        self.width = int(screen_w * self._scale) // 2 * 2
        self.height = int(screen_h * self._scale) // 2 * 2
        self.fps = fps
        self._origin = window_origin(display, window_id) if window_id is not None and hidden else (0, 0)
        self._hidden = hidden
        self._frames = self._container.decode(stream)
        self._index = 0

    def read(self) -> Picture | None:
        try:
            frame = next(self._frames)
        except (StopIteration, av.error.FFmpegError):
            return None
        capture = now_us()
        image = frame.to_ndarray(format="bgr24", width=self.width, height=self.height)
        if self._hidden is not None:
            self._paint_over(image, self._hidden())
        self._index += 1
        return Picture(image, capture, self._index - 1)

    def _paint_over(self, image: np.ndarray, regions: list[Region]) -> None:
        ox, oy = self._origin
        for x, y, w, h in regions:
            x0, y0 = max(0, int((x - ox) * self._scale)), max(0, int((y - oy) * self._scale))
            x1, y1 = int((x - ox + w) * self._scale), int((y - oy + h) * self._scale)
            if x1 > x0 and y1 > y0:
                image[y0:y1, x0:x1] = HIDDEN_FILL

    def close(self) -> None:
        self._container.close()


def window_origin(display: str, window_id: int) -> tuple[int, int]:
    """Where a window's top-left corner is on the screen (for painting over regions)."""
    try:
        out = subprocess.run(["xwininfo", "-id", str(window_id)], capture_output=True, text=True, timeout=5,
                             env={**os.environ, "DISPLAY": display}, check=True).stdout
        x = int(re.search(r"Absolute upper-left X:\s+(-?\d+)", out).group(1))
        y = int(re.search(r"Absolute upper-left Y:\s+(-?\d+)", out).group(1))
        return x, y
    except (OSError, subprocess.SubprocessError, AttributeError) as exc:
        log.info("cannot find where window %#x is: %s", window_id, exc)
        return 0, 0


def open_screen(display: str | None = None, fps: float = 5.0, max_width: int = 1920,
                target: ShareTarget = SCREEN, hidden: Callable[[], list[Region]] | None = None) -> VideoSource:
    """The X11 screen (or the chosen window) if there is one, else a 1280x720 test pattern
    labelled as a screen."""
    try:
        return ScreenSource(display, fps, max_width, target.window_id, hidden)
    except OSError as exc:
        log.info("%s; sharing the test pattern instead", exc)
        return TestPatternSource(1280, 720, fps, "screen")


class FileSource(VideoSource):
    """A video file, scaled to ``width`` x ``height`` and looped; paced by the publisher."""

    def __init__(self, path: str, width: int | None = None, height: int | None = None,
                 loop: bool = True) -> None:
        self.name = f"file {os.path.basename(path)}"
        try:
            self._container = av.open(path)
        except av.error.FFmpegError as exc:
            raise OSError(f"cannot open video file {path}: {exc}") from None
        if not self._container.streams.video:
            self._container.close()
            raise OSError(f"{path} has no video stream")
        self._stream = self._container.streams.video[0]
        self.width = (width or self._stream.codec_context.width) // 2 * 2
        self.height = (height or self._stream.codec_context.height) // 2 * 2
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 25.0
        self.loop = loop
        self._frames = self._container.decode(self._stream)
        self._index = 0

    def read(self) -> Picture | None:
        for _attempt in range(2):
            try:
                frame = next(self._frames)
                break
            except StopIteration:
                if not self.loop:
                    return None
                self._container.seek(0)
                self._frames = self._container.decode(self._stream)
        else:
            return None
        image = frame.to_ndarray(format="bgr24", width=self.width, height=self.height)
        self._index += 1
        return Picture(image, now_us(), self._index - 1)

    def close(self) -> None:
        self._container.close()
