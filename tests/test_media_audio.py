"""Opus, the tone/silence sources, the null sink, mixing and voice activity."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from client.media.audio_codec import FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder
from client.media.audio_io import NullSink, SilenceSource, ToneSource, open_microphone, open_speakers
from client.media.mixer import mix
from client.media.vad import ActiveSpeaker, VoiceActivity, level_dbfs


def dominant_hz(pcm: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(pcm))


def test_opus_round_trip_keeps_the_tone():
    source = ToneSource(440.0, paced=False)
    encoder, decoder = OpusEncoder(), OpusDecoder()
    out = []
    for _ in range(50):
        packet = encoder.encode(source.read())
        assert 10 < len(packet) < 400, "one small Opus packet per 20 ms frame"
        pcm = decoder.decode(packet)
        assert pcm.shape == (FRAME_SAMPLES,) and pcm.dtype == np.int16
        out.append(pcm)
    tail = np.concatenate(out[10:])
    assert dominant_hz(tail) == pytest.approx(440, abs=5)
    assert level_dbfs(tail) == pytest.approx(level_dbfs(ToneSource(440.0, paced=False).read()), abs=2)


def test_encoder_refuses_wrong_frame_size():
    with pytest.raises(ValueError):
        OpusEncoder().encode(np.zeros(480, np.int16))


def test_tone_is_paced_in_real_time_and_silence_is_silent():
    source = ToneSource(300.0)
    started = time.monotonic()
    frames = [source.read() for _ in range(10)]
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 1.0, f"10 frames of 20 ms took {elapsed:.3f} s"
    assert all(f.shape == (FRAME_SAMPLES,) for f in frames)
    assert dominant_hz(np.concatenate(frames)) == pytest.approx(300, abs=5)
    assert not SilenceSource(paced=False).read().any()
    source.close()
    assert source.read() is None


def test_without_sound_devices_we_get_a_tone_and_a_null_sink():
    mic = open_microphone(tone=523.0)
    speakers = open_speakers()
    assert isinstance(mic, ToneSource) and mic.frequency == 523.0
    assert isinstance(speakers, NullSink)
    mic.close()


def test_null_sink_pulls_at_the_playout_rate():
    sink = NullSink()
    pulls = []
    done = threading.Event()

    def pull() -> np.ndarray:
        pulls.append(time.monotonic())
        if len(pulls) == 26:
            done.set()
        return np.zeros(FRAME_SAMPLES, np.int16)
    sink.start(pull)
    assert done.wait(5)
    sink.close()
    rate = 25 / (pulls[25] - pulls[0])
    assert 35 <= rate <= 60, f"null sink pulled {rate:.1f} frames/s instead of 50"


def test_mix_sums_voices_and_clips():
    a = ToneSource(440.0, 0.2, paced=False).read()
    b = ToneSource(660.0, 0.2, paced=False).read()
    mixed = mix([a, b])
    spectrum = np.abs(np.fft.rfft(mixed.astype(np.float64)))
    peaks = sorted(np.argsort(spectrum)[-2:] * SAMPLE_RATE / FRAME_SAMPLES)
    assert peaks == pytest.approx([440, 660], abs=60)
    loud = np.full(FRAME_SAMPLES, 30000, np.int16)
    assert mix([loud, loud]).max() == 32767
    assert not mix([]).any()
    assert mix([a], gains=[0.0]).max() == 0


def test_voice_activity_ignores_steady_noise_and_hears_a_talker():
    rng = np.random.default_rng(1)
    vad = VoiceActivity()
    noise = [(rng.standard_normal(FRAME_SAMPLES) * 300).astype(np.int16) for _ in range(200)]
    for frame in noise:
        vad.update(frame)
    assert not vad.active, "steady background noise is not speech"
    voice = ToneSource(200.0, 0.3, paced=False)
    assert any(vad.update(voice.read() + noise[i]) for i in range(3))
    for frame in noise[:30]:
        vad.update(frame)
    assert not vad.active, "the hangover ends"


def test_active_speaker_follows_the_loudest_talker_without_flicker():
    chooser = ActiveSpeaker(hold_frames=5)
    assert chooser.update({1: (True, -20.0), 2: (False, -60.0)}) == 1
    assert chooser.update({1: (True, -20.0), 2: (True, -15.0)}) == 1, "held for a moment"
    for _ in range(5):
        current = chooser.update({1: (True, -20.0), 2: (True, -15.0)})
    assert current == 2
    assert chooser.update({1: (True, -25.0), 2: (False, -70.0)}) == 1, "the speaker stopped: switch at once"
    for _ in range(6):
        current = chooser.update({1: (False, -70.0), 2: (False, -70.0)})
    assert current is None
