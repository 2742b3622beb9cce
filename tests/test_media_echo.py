"""Echo suppression measured on a recorded loop (far-end speech through a room into the microphone)."""
from __future__ import annotations

import numpy as np
import pytest

from client.media.audio_codec import FRAME_SAMPLES
from client.media.echo import DuckingSuppressor, EchoSuppressor, make_echo_suppressor, measure


def test_no_suppression_measures_zero():
    result = measure(EchoSuppressor(), seconds=4.0)
    assert result["erle_db"] == pytest.approx(0, abs=0.1) and result["near_end_gain_db"] == pytest.approx(0, abs=0.5)


def test_ducking_removes_the_echo_when_only_the_far_end_talks():
    result = measure(DuckingSuppressor(), seconds=4.0)
    assert result["erle_db"] >= 20


def test_ducking_leaves_the_microphone_alone_when_nothing_plays():
    ducker = DuckingSuppressor()
    voice = (np.sin(np.arange(FRAME_SAMPLES) / 5) * 8000).astype(np.int16)
    silence = np.zeros(FRAME_SAMPLES, np.int16)
    for _ in range(20):
        out = ducker.process(voice, silence)
    assert np.array_equal(out, voice)


def test_speex_canceller_if_installed():
    speexdsp = pytest.importorskip("speexdsp", reason="speexdsp (needs libspeexdsp) is not installed")
    assert speexdsp
    suppressor = make_echo_suppressor("auto")
    assert suppressor.name == "speexdsp"
    result = measure(suppressor, seconds=6.0)
    assert result["erle_db"] >= 15, result
    assert result["near_end_gain_db"] > measure(DuckingSuppressor(), seconds=6.0)["near_end_gain_db"] + 10, \
        "the canceller keeps far more of a near-end talker in double talk than ducking"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        make_echo_suppressor("magic")
    assert make_echo_suppressor("none").name == "none"
    assert make_echo_suppressor("ducking").name == "ducking"
