"""Audio in and out: sounddevice when there is a sound card, a tone/silence and a null sink when not.

Sources give 20 ms frames of int16 at 48 kHz mono from ``read()``, blocking until the frame
is due (a microphone is paced by its hardware, a tone by a ``Pacer``). Sinks take the same
frames from a ``pull`` callback at the playout rate: the speakers through a sounddevice
callback, the null sink through its own clock thread, so a headless bot plays out in real
time too (the jitter buffers and the A/V sync depend on it).
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

import numpy as np

from .audio_codec import FRAME_SAMPLES, SAMPLE_RATE
from .clock import Pacer

log = logging.getLogger("client.media.audio")

PullFn = Callable[[], np.ndarray]


def _sounddevice():
    """The sounddevice module, or None if PortAudio is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        log.info("sounddevice is not usable: %s", exc)
        return None
    return sounddevice


def _has_device(kind: str) -> bool:
    sd = _sounddevice()
    if sd is None:
        return False
    try:
        sd.query_devices(kind=kind)
    except (sd.PortAudioError, ValueError):
        return False
    return True


class AudioSource:
    name = "audio source"
    capture_lag_us = 0      # how long before ``read`` returned the frame's first sample was taken

    def read(self) -> np.ndarray | None:
        """The next 20 ms frame (960 int16 samples), or None when stopped."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class ToneSource(AudioSource):
    """A sine tone, paced in real time; each bot gets its own pitch so mixes can be told apart."""

    def __init__(self, frequency: float = 440.0, amplitude: float = 0.2, paced: bool = True) -> None:
        self.name = f"tone {frequency:g} Hz"
        self.frequency = frequency
        self.amplitude = amplitude
        self._phase = 0
        self._pacer = Pacer(1000 / 20) if paced else None
        self._stop = threading.Event()

    def read(self) -> np.ndarray | None:
        if self._pacer is not None and not self._pacer.wait(self._stop):
            return None
        t = np.arange(self._phase, self._phase + FRAME_SAMPLES)
        self._phase += FRAME_SAMPLES
        wave = np.sin(2 * np.pi * self.frequency * t / SAMPLE_RATE) * self.amplitude * 32767
        return wave.astype(np.int16)

    def close(self) -> None:
        self._stop.set()


class SilenceSource(ToneSource):
    def __init__(self, paced: bool = True) -> None:
        super().__init__(0.0, 0.0, paced)
        self.name = "silence"


class MicrophoneSource(AudioSource):
    """The default (or given) input device; PortAudio's callback only enqueues."""

    capture_lag_us = FRAME_SAMPLES * 1_000_000 // SAMPLE_RATE   # a block is handed over once recorded

    def __init__(self, device: int | str | None = None) -> None:
        sd = _sounddevice()
        if sd is None:
            raise OSError("no PortAudio")
        self.name = f"microphone {device if device is not None else 'default'}"
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=50)

        def callback(indata, _frames, _time, status) -> None:
            if status:
                log.debug("microphone status: %s", status)
            try:
                self._queue.put_nowait(indata[:, 0].copy())
            except queue.Full:
                pass   # the encoder is behind: drop the oldest-to-be rather than block PortAudio

        try:
            self._stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16",
                                          blocksize=FRAME_SAMPLES, device=device, callback=callback)
            self._stream.start()
        except sd.PortAudioError as exc:
            raise OSError(f"cannot open the microphone: {exc}") from None

    def read(self) -> np.ndarray | None:
        return self._queue.get()

    def close(self) -> None:
        self._stream.close()
        self._queue.put(None)


def open_microphone(device: int | str | None = None, tone: float = 440.0) -> AudioSource:
    """The microphone if there is one, else a tone (``tone=0`` for silence)."""
    if _has_device("input"):
        try:
            return MicrophoneSource(device)
        except OSError as exc:
            log.info("%s; using a %s", exc, "tone" if tone else "silence")
    return ToneSource(tone) if tone else SilenceSource()


class AudioSink:
    name = "audio sink"

    def start(self, pull: PullFn) -> None:
        """Begin playout: ``pull()`` is called once per 20 ms and returns the frame to play."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class NullSink(AudioSink):
    """Plays into nothing at the real-time rate (its own clock thread)."""

    name = "null sink"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_played = 0

    def start(self, pull: PullFn) -> None:
        def run() -> None:
            pacer = Pacer(1000 / 20)
            while pacer.wait(self._stop):
                pull()
                self.frames_played += 1
        self._thread = threading.Thread(target=run, name="audio-null-sink", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)


class SpeakerSink(AudioSink):
    def __init__(self, device: int | str | None = None) -> None:
        self._sd = _sounddevice()
        if self._sd is None:
            raise OSError("no PortAudio")
        self.device = device
        self.name = f"speakers {device if device is not None else 'default'}"
        self._stream = None

    def start(self, pull: PullFn) -> None:
        def callback(outdata, frames, _time, status) -> None:
            if status:
                log.debug("speaker status: %s", status)
            frame = pull()
            outdata[:, 0] = frame[:frames] if len(frame) >= frames else np.pad(frame, (0, frames - len(frame)))

        try:
            self._stream = self._sd.OutputStream(samplerate=SAMPLE_RATE, channels=1, dtype="int16",
                                                 blocksize=FRAME_SAMPLES, device=self.device,
                                                 callback=callback)
            self._stream.start()
        except self._sd.PortAudioError as exc:
            raise OSError(f"cannot open the speakers: {exc}") from None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()


def open_speakers(device: int | str | None = None) -> AudioSink:
    """The speakers if there are some, else the null sink."""
    if _has_device("output"):
        try:
            return SpeakerSink(device)
        except OSError as exc:
            log.info("%s; playing into the null sink", exc)
    return NullSink()
