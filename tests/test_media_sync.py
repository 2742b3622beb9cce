"""Lip sync: video shown when the audio captured at the same moment plays (within 80 ms)."""
from __future__ import annotations

from client.media.sync import AvSync, SyncedVideo

T0 = 1_700_000_000_000_000


def test_video_waits_for_the_audio_clock():
    sync = AvSync()
    # audio captured at T0 plays 150 ms later (network + jitter buffer)
    sync.audio_played(T0, played_us=T0 + 150_000)
    video = SyncedVideo(sync)
    # a picture captured at T0 + 20 ms is decoded 40 ms after capture: it must wait
    video.push("frame", T0 + 20_000, now_us=T0 + 60_000)
    assert video.pop_due(now_us=T0 + 100_000) is None
    assert video.pop_due(now_us=T0 + 170_000) == ("frame", T0 + 20_000)


def test_newest_due_picture_wins_and_late_ones_show_at_once():
    sync = AvSync()
    sync.audio_played(T0, played_us=T0 + 100_000)
    video = SyncedVideo(sync)
    for i in range(3):
        video.push(i, T0 + i * 33_000, now_us=T0 + 150_000)
    assert video.pop_due(now_us=T0 + 300_000) == (2, T0 + 66_000)
    assert video.pop_due(now_us=T0 + 300_000) is None


def test_without_audio_video_is_not_held():
    sync = AvSync(audio_timeout_ms=1000)
    assert sync.due_us(T0, now_us=T0 + 50_000) == T0 + 50_000
    sync.audio_played(T0, played_us=T0 + 100_000)
    assert sync.due_us(T0 + 40_000, now_us=T0 + 110_000) == T0 + 140_000
    # the member muted: after a second without audio, pictures show as they come
    assert sync.due_us(T0 + 2_000_000, now_us=T0 + 2_100_000) == T0 + 2_100_000


def test_hold_is_capped():
    sync = AvSync(max_hold_ms=400)
    sync.audio_played(T0, played_us=T0 + 2_000_000)    # a huge audio delay
    assert sync.due_us(T0, now_us=T0 + 1_900_000) == T0 + 2_000_000
    assert sync.due_us(T0, now_us=T0 + 100_000) == T0 + 500_000


def test_offset_smooths_scheduling_jitter_but_follows_a_rebuffer():
    sync = AvSync()
    for i in range(50):
        wobble = 8_000 if i % 2 else -8_000
        sync.audio_played(T0 + i * 20_000, played_us=T0 + i * 20_000 + 100_000 + wobble)
    assert abs(sync.audio_offset_us - 100_000) < 3_000
    sync.audio_played(T0 + 50 * 20_000, played_us=T0 + 50 * 20_000 + 400_000)   # re-buffered deeper
    assert sync.audio_offset_us == 400_000
