"""The audio jitter buffer: reordering, loss, late and duplicate packets, adaptive depth, restarts."""
from __future__ import annotations

import random

from client.media.jitter import SEQ_MOD, JitterBuffer, seq_diff

FRAME = 20_000


def feed(buffer: JitterBuffer, seqs, base_us: int = 1_000_000_000, delay_us=lambda seq: 30_000) -> None:
    for seq in seqs:
        capture = base_us + seq * FRAME
        buffer.put(seq % SEQ_MOD, capture, f"p{seq}".encode(), arrival_us=capture + delay_us(seq))


def drain(buffer: JitterBuffer, ticks: int) -> list:
    return [buffer.pop() for _ in range(ticks)]


def test_seq_diff_wraps():
    assert seq_diff(5, 3) == 2 and seq_diff(3, 5) == -2
    assert seq_diff(0, SEQ_MOD - 1) == 1 and seq_diff(SEQ_MOD - 1, 0) == -1


def test_reorders_and_waits_for_its_depth_first():
    buffer = JitterBuffer(min_delay_ms=40)
    feed(buffer, [1])
    assert buffer.pop().status == "wait", "playout waits until 40 ms are buffered"
    feed(buffer, [0, 3, 2])
    out = drain(buffer, 2)
    feed(buffer, [4])
    out += drain(buffer, 3)
    assert [(o.status, o.seq) for o in out] == [("play", 0), ("play", 1), ("play", 2), ("play", 3), ("play", 4)]
    assert out[2].payload == b"p2"
    assert buffer.pop().status == "wait" and buffer.stats.underruns == 1


def test_a_missing_frame_is_reported_lost_then_the_late_copy_dropped():
    buffer = JitterBuffer(min_delay_ms=40)
    feed(buffer, [0, 1, 3])
    out = drain(buffer, 1)
    feed(buffer, [4])
    out += drain(buffer, 1)
    feed(buffer, [5])
    out += drain(buffer, 3)
    assert [o.status for o in out] == ["play", "play", "lost", "play", "play"]
    assert out[2].seq == 2 and out[2].capture_us == out[1].capture_us + FRAME
    feed(buffer, [2])
    assert buffer.stats.lost == 1 and buffer.stats.late == 1 and buffer.stats.duplicate == 0
    feed(buffer, [5])
    assert buffer.stats.duplicate == 1
    assert buffer.pop().seq == 5


def test_depth_adapts_to_jitter_and_back():
    rng = random.Random(3)
    calm = JitterBuffer(min_delay_ms=20, max_delay_ms=400)
    feed(calm, range(100), delay_us=lambda seq: 30_000 + rng.randint(0, 2_000))
    assert calm.target_delay_us <= 40_000
    jittery = JitterBuffer(min_delay_ms=20, max_delay_ms=400)
    feed(jittery, range(100), delay_us=lambda seq: 30_000 + rng.choice([0, 0, 0, 120_000]))
    assert 120_000 <= jittery.target_delay_us <= 160_000
    feed(jittery, range(100, 250), delay_us=lambda seq: 30_000)
    assert jittery.target_delay_us <= 40_000, "the window forgets old jitter"
    assert JitterBuffer(max_delay_ms=100).target_delay_us <= 100_000


def test_over_full_buffer_drops_frames_to_catch_up():
    buffer = JitterBuffer(min_delay_ms=40)
    feed(buffer, range(30))                      # a burst: 600 ms queued with a 40 ms target
    first = buffer.pop()
    assert first.status == "play" and first.seq > 20
    assert buffer.stats.dropped_to_catch_up == first.seq
    assert buffer.depth_ms() <= 100


def test_continuous_playout_across_sequence_wrap():
    buffer = JitterBuffer(min_delay_ms=40)
    start = SEQ_MOD - 3
    played = []
    for n in range(8):
        feed(buffer, [start + n], base_us=0)
        item = buffer.pop()
        if item.status != "wait":
            played.append(item.seq)
    assert played == [(start + n) % SEQ_MOD for n in range(len(played))] and len(played) >= 5


def test_sender_restart_resets_the_buffer():
    buffer = JitterBuffer(min_delay_ms=40)
    feed(buffer, range(200, 260))
    drain(buffer, 60)
    feed(buffer, range(0, 5), base_us=2_000_000_000)   # the member rejoined: numbering restarts
    out = [item for item in drain(buffer, 5) if item.status == "play"]
    assert out and out[0].seq == 0 and buffer.stats.late == 0


def test_receiver_conceals_losses_and_fades_to_silence():
    from client.media.audio_codec import OpusEncoder
    from client.media.audio_io import ToneSource
    from client.media.pipeline import CONCEAL_MAX, AudioStreamReceiver
    from client.media.sync import AvSync
    from client.media.vad import level_dbfs

    tone, encoder = ToneSource(440.0, 0.3, paced=False), OpusEncoder()
    packets = [encoder.encode(tone.read()) for _ in range(16)]
    lost = {6, 9, 10, 11, 12, 13}
    stream = AudioStreamReceiver(7, AvSync())
    stream.jitter = JitterBuffer(min_delay_ms=300)     # everything fits: one pop per sequence number
    base = 1_000_000_000
    for seq in range(16):
        if seq not in lost:
            stream.jitter.put(seq, base + seq * FRAME, packets[seq], arrival_us=base + seq * FRAME + 10_000)
    out = [stream.next_frame(base + 400_000 + n * FRAME) for n in range(16)]
    assert all(frame is not None for frame in out)
    assert stream.concealed == len(lost) and stream.decoded == 16 - len(lost)
    levels = [level_dbfs(frame) for frame in out]
    assert levels[5] - 9 < levels[6] < levels[5] - 4, "a single gap: the last frame repeated softer, no click"
    assert levels[9] > levels[10] > levels[11] > -100, "a longer gap fades..."
    assert levels[9 + CONCEAL_MAX] == levels[13] == -100.0, "...to silence after CONCEAL_MAX frames"
    assert levels[14] > levels[11], "and the voice comes back"
