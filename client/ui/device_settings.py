"""Audio and video settings with live checks: a camera preview, a microphone level meter and a
speaker test tone. "Apply" saves the choice and hands it to the running meeting.

Capture runs on one thread per device (a source is read, and closed, only by its own thread);
the Tk thread only pastes the newest picture and moves the meter, a few times a second.
"""
from __future__ import annotations

import logging
import threading
import tkinter as tk
from pathlib import Path
from tkinter import ttk
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageTk

from client.media.audio_codec import FRAME_SAMPLES, SAMPLE_RATE
from client.media.audio_io import AudioSink

from . import devices
from .meeting_dialogs import action_row
from .settings import Settings
from .video import FrameSlot, fit
from .widgets import COLORS, FONT

log = logging.getLogger("client.ui")

PREVIEW_SIZE = (320, 240)
REFRESH_MS = 66
TEST_TONE_SECONDS = 1.0
TEST_TONE_HZ = 660.0

ApplyFn = Callable[[str, str, str], None]


class DeviceCheck:
    """One device read on its own thread (``_run``) until ``stop``."""

    name = "device-check"

    def __init__(self, choice: str) -> None:
        self._stop = threading.Event()
        threading.Thread(target=self._run, args=(choice,), name=self.name, daemon=True).start()

    def _run(self, choice: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()


class CameraPreview(DeviceCheck):
    """Reads the chosen camera on its own thread; the newest picture waits in ``slot``."""

    name = "camera-preview"

    def __init__(self, choice: str) -> None:
        self.slot = FrameSlot()
        self.slot.size = PREVIEW_SIZE
        self.frames = 0
        super().__init__(choice)

    def _run(self, choice: str) -> None:
        try:
            source = devices.open_camera_choice(choice, "preview", fps=15.0)
        except Exception as exc:
            log.warning("camera preview: %s", exc)
            return
        try:
            while not self._stop.is_set():
                if not source.paced and self._stop.wait(1 / 15):
                    break
                picture = source.read()
                if picture is None:
                    break
                small = cv2.resize(picture.image, fit(picture.image.shape[1], picture.image.shape[0], self.slot.size))
                self.slot.put(Image.fromarray(cv2.cvtColor(small, cv2.COLOR_BGR2RGB)))
                self.frames += 1
        finally:
            source.close()


class MicrophoneMeter(DeviceCheck):
    """Reads the chosen microphone on its own thread; ``level`` is the loudness 0..1 (dBFS
    from -60 to 0) of the last 20 ms."""

    name = "microphone-meter"

    def __init__(self, choice: str) -> None:
        self.level = 0.0
        super().__init__(choice)

    def _run(self, choice: str) -> None:
        try:
            source = devices.open_microphone_choice(choice)
        except Exception as exc:
            log.warning("microphone meter: %s", exc)
            return
        try:
            while not self._stop.is_set():
                pcm = source.read()
                if pcm is None:
                    break
                rms = float(np.sqrt(np.mean(pcm.astype(np.float32) ** 2))) / 32768.0
                self.level = min(1.0, max(0.0, (20 * np.log10(max(rms, 1e-6)) + 60) / 60))
        finally:
            source.close()


class TestTone:
    """Plays a short tone on the chosen speakers (then closes them on its own thread)."""

    __test__ = False    # not a pytest test class despite its name

    def __init__(self, choice: str) -> None:
        self.frames_played = 0
        self.done = threading.Event()
        self._phase = 0
        self._frames = int(TEST_TONE_SECONDS * SAMPLE_RATE / FRAME_SAMPLES)
        threading.Thread(target=self._run, args=(choice,), name="speaker-test", daemon=True).start()

    def _pull(self) -> np.ndarray:
        if self.frames_played >= self._frames:
            self.done.set()
            return np.zeros(FRAME_SAMPLES, np.int16)
        t = np.arange(self._phase, self._phase + FRAME_SAMPLES)
        self._phase += FRAME_SAMPLES
        self.frames_played += 1
        fade = min(1.0, (self._frames - self.frames_played) / 5)     # no click at the end
        return (np.sin(2 * np.pi * TEST_TONE_HZ * t / SAMPLE_RATE) * 0.3 * fade * 32767).astype(np.int16)

    def _run(self, choice: str) -> None:
        sink: AudioSink | None = None
        try:
            sink = devices.open_speakers_choice(choice)
            sink.start(self._pull)
            self.done.wait(TEST_TONE_SECONDS + 5)
        except Exception as exc:
            log.warning("speaker test: %s", exc)
        finally:
            self.done.set()
            if sink is not None:
                sink.close()


class DeviceSettings(tk.Toplevel):
    def __init__(self, parent: tk.Misc, settings: Settings, settings_path: Path | None = None,
                 on_apply: ApplyFn | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.settings_path = settings_path
        self.on_apply = on_apply
        self.title("Audio and video")
        self.configure(background=COLORS["bg"])
        self.transient(parent.winfo_toplevel())
        self.resizable(False, False)
        body = ttk.Frame(self, padding=18)
        body.pack(fill="both", expand=True)
        self.boxes: dict[str, tuple[ttk.Combobox, list[tuple[str, str]]]] = {}
        self.preview_label = tk.Label(body, background=COLORS["video_bg"], width=PREVIEW_SIZE[0],
                                      height=PREVIEW_SIZE[1])
        self.meter = ttk.Progressbar(body, length=320, maximum=1.0, mode="determinate")
        self.tone_button = ttk.Button(body, text="Test speakers", command=self.test_speakers)
        self.tone_label = ttk.Label(body, text="", style="Muted.TLabel")
        for key, label, options, extra in (
                ("camera", "Camera", devices.cameras(), (self.preview_label,)),
                ("microphone", "Microphone", devices.microphones(), (self.meter,)),
                ("speakers", "Speakers", devices.speakers(), (self.tone_button, self.tone_label))):
            ttk.Label(body, text=label.upper(), style="Section.TLabel").pack(anchor="w", pady=(10, 2))
            box = ttk.Combobox(body, state="readonly", width=44, values=[name for _v, name in options])
            current = getattr(settings, key)
            box.current(next((i for i, (value, _n) in enumerate(options) if value == current), 0))
            box.pack(anchor="w")
            box.bind("<<ComboboxSelected>>", lambda e, k=key: self._restart(k))
            self.boxes[key] = (box, options)
            for widget in extra:
                widget.pack(anchor="w", pady=(6, 0))
        self.preview_label.pack_propagate(False)
        self.apply_button = action_row(self, body, "Apply", self.apply)
        self.camera: CameraPreview | None = None
        self.microphone: MicrophoneMeter | None = None
        self.tone: TestTone | None = None
        self._photo: ImageTk.PhotoImage | None = None
        self._restart("camera")
        self._restart("microphone")
        self.bind("<Destroy>", lambda e: e.widget is self and self._stop(), add="+")
        self._after = self.after(REFRESH_MS, self._refresh)

    def choice(self, key: str) -> str:
        box, options = self.boxes[key]
        return options[max(0, box.current())][0]

    def _restart(self, key: str) -> None:
        if key == "camera":
            if self.camera is not None:
                self.camera.stop()
            self.camera = CameraPreview(self.choice("camera"))
        elif key == "microphone":
            if self.microphone is not None:
                self.microphone.stop()
            self.microphone = MicrophoneMeter(self.choice("microphone"))

    def _refresh(self) -> None:
        image = self.camera.slot.take() if self.camera is not None else None
        if image is not None:
            if self._photo is None or (self._photo.width(), self._photo.height()) != image.size:
                self._photo = ImageTk.PhotoImage(image, master=self)
                self.preview_label.configure(image=self._photo, width=image.size[0], height=image.size[1])
            else:
                self._photo.paste(image)
        if self.microphone is not None:
            self.meter.configure(value=self.microphone.level)
        if self.tone is not None and self.tone.done.is_set():
            self.tone_label.configure(text=f"Played a {TEST_TONE_SECONDS:g} s test tone: did you hear it?")
            self.tone_button.configure(state="normal")
            self.tone = None
        self._after = self.after(REFRESH_MS, self._refresh)

    def test_speakers(self) -> None:
        if self.tone is None:
            self.tone_button.configure(state="disabled")
            self.tone_label.configure(text="Playing a test tone…")
            self.tone = TestTone(self.choice("speakers"))

    def apply(self) -> None:
        camera, microphone, speakers = self.choice("camera"), self.choice("microphone"), self.choice("speakers")
        self.settings.camera, self.settings.microphone, self.settings.speakers = camera, microphone, speakers
        self.settings.save(self.settings_path)
        if self.on_apply is not None:
            self.on_apply(camera, microphone, speakers)
        self.destroy()

    def _stop(self) -> None:
        try:
            self.after_cancel(self._after)
        except tk.TclError:
            pass
        for worker in (self.camera, self.microphone):
            if worker is not None:
                worker.stop()
