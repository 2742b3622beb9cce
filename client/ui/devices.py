"""The capture and playback devices offered in the settings, with their synthetic twins.

A choice is stored as a short string in the settings file: "" (automatic: the real device if
present, else the synthetic one), "test" / "tone" / "silence" / "null" (synthetic), or a
device number. ``open_*`` turn a choice into a media source or sink.
"""
from __future__ import annotations

import glob
import logging
import re

from client.media.audio_io import AudioSink, AudioSource, NullSink, SilenceSource, ToneSource, open_microphone, open_speakers
from client.media.sources import TestPatternSource, VideoSource, open_camera

log = logging.getLogger("client.ui")


def _audio_devices(direction: str) -> list[tuple[str, str]]:
    try:
        import sounddevice
        devices = sounddevice.query_devices()
    except Exception as exc:            # no PortAudio, no server: only the synthetic twins
        log.info("no sound devices: %s", exc)
        return []
    key = "max_input_channels" if direction == "input" else "max_output_channels"
    return [(str(i), d["name"]) for i, d in enumerate(devices) if d.get(key, 0) > 0]


def cameras() -> list[tuple[str, str]]:
    found = sorted(glob.glob("/dev/video*"), key=lambda p: int(re.sub(r"\D", "", p) or 0))
    return ([("", "Automatic")] + [(re.sub(r"\D", "", p), f"Camera {p}") for p in found]
            + [("test", "Test pattern (synthetic)")])


def microphones() -> list[tuple[str, str]]:
    return ([("", "Automatic")] + _audio_devices("input")
            + [("tone", "Tone (synthetic)"), ("silence", "Silence (synthetic)")])


def speakers() -> list[tuple[str, str]]:
    return [("", "Automatic")] + _audio_devices("output") + [("null", "No sound (synthetic)")]


def open_camera_choice(choice: str, label: str = "", width: int = 640, height: int = 480,
                       fps: float = 30.0) -> VideoSource:
    if choice == "test":
        return TestPatternSource(width, height, fps, label)
    return open_camera(int(choice) if choice.isdigit() else 0, width, height, fps, label)


def open_microphone_choice(choice: str) -> AudioSource:
    if choice == "tone":
        return ToneSource()
    if choice == "silence":
        return SilenceSource()
    return open_microphone(int(choice) if choice.isdigit() else None, tone=0)


def open_speakers_choice(choice: str) -> AudioSink:
    if choice == "null":
        return NullSink()
    return open_speakers(int(choice) if choice.isdigit() else None)
