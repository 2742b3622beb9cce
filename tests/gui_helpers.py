"""GUI test helpers: a private Xvfb display, pumping the Tk loop, screenshots.

Xvfb picks a free display number itself (``-displayfd``) and is stopped by its PID.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
import tkinter as tk
from typing import Callable

import pytest


class Xvfb:
    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.width, self.height = width, height
        self.proc: subprocess.Popen | None = None
        self.display = ""

    def start(self, timeout: float = 10.0) -> str:
        read_fd, write_fd = os.pipe()
        self.proc = subprocess.Popen(
            ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", f"{self.width}x{self.height}x24",
             "-nolisten", "tcp", "-noreset"],
            pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(write_fd)
        deadline = time.monotonic() + timeout
        data = b""
        try:
            while not data.endswith(b"\n"):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("Xvfb did not start")
                chunk = os.read(read_fd, 16)
                if not chunk:
                    raise RuntimeError("Xvfb exited before telling its display number")
                data += chunk
        finally:
            os.close(read_fd)
        self.display = f":{int(data.strip())}"
        return self.display

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture(scope="session")
def xdisplay():
    """A private X display for the whole GUI session; DISPLAY points at it."""
    if shutil.which("Xvfb") is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Xvfb for the GUI tests")
        pytest.skip("Xvfb is not installed")
    xvfb = Xvfb()
    display = xvfb.start()
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    yield display
    xvfb.stop()
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


def pump(root: tk.Misc, seconds: float) -> None:
    """Run the Tk loop for a while (the test thread is the Tk thread)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        root.update()
        time.sleep(0.005)


def pump_until(root: tk.Misc, predicate: Callable[[], object], timeout: float = 10.0,
               what: str = "condition") -> object:
    """Run the Tk loop until ``predicate()`` is truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        root.update()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def screenshot(widget: tk.Misc):
    """What the X server shows where ``widget`` is (a PIL image), via ImageMagick's import."""
    from PIL import Image
    widget.update()
    x, y = widget.winfo_rootx(), widget.winfo_rooty()
    w, h = widget.winfo_width(), widget.winfo_height()
    png = subprocess.run(["import", "-display", os.environ["DISPLAY"], "-window", "root",
                          "-crop", f"{w}x{h}+{x}+{y}", "png:-"], check=True, capture_output=True,
                         timeout=20).stdout
    return Image.open(io.BytesIO(png)).convert("RGB")


def find_toplevels(root: tk.Misc, cls: type) -> list:
    return [w for w in root.winfo_children() if isinstance(w, cls)]


def label_texts(widget: tk.Misc) -> list[str]:
    """Every label/button text under ``widget`` (what a user can read)."""
    texts = []
    stack = [widget]
    while stack:
        w = stack.pop()
        try:
            text = w.cget("text")
            if text:
                texts.append(str(text))
        except tk.TclError:
            pass
        stack.extend(w.winfo_children())
    return texts


def wait_event(root: tk.Misc, recorder, kind: str, predicate: Callable = lambda e: True,
               timeout: float = 10.0):
    """Wait for a bot's event while keeping the window's loop running."""
    def found():
        try:
            return recorder.wait_for(kind, predicate, timeout=0.0)
        except TimeoutError:
            return None
    return pump_until(root, found, timeout, f"a '{kind}' event")


def press_key(widget: tk.Misc, key: str, state: int = 0) -> None:
    """Type one key into ``widget`` as the user would (focus it first: Tk sends key events to
    the focused window)."""
    widget.focus_force()
    widget.update()
    widget.event_generate(f"<KeyPress-{key}>", state=state) if state else widget.event_generate(f"<{key}>")
    widget.update()


def register_in_window(app, nickname: str, phone: str | None = None,
                       password: str = "correct horse battery", timeout: float = 20.0):
    """Fill the login view in register mode and submit; returns the main window once shown."""
    from client.ui.main_window import MainWindow
    from tests.helpers import unique_phone

    view = app.login_view
    view.set_mode("register")
    for name, value in (("phone", phone or unique_phone()), ("password", password), ("nickname", nickname)):
        view.fields[name].delete(0, "end")
        view.fields[name].insert(0, value)
    view.submit()
    return pump_until(app.root, lambda: isinstance(app.main_window, MainWindow) and app.main_window,
                      timeout, "the main window")


@pytest.fixture
def gui_app(xdisplay, tmp_path, monkeypatch, server):
    """The real app, registered and logged in as Alice on the test server (main window shown)."""
    from client.ui.app import App

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    root = tk.Tk()
    app = App(root, server=f"127.0.0.1:{server.port}")
    register_in_window(app, "Alice")
    yield app
    try:
        app.quit()
    except tk.TclError:
        pass
