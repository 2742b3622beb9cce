"""A meeting of bots on loopback: three publish and receive for 10 s (one of them also
showing the others lip-synced), a fourth joins late, one leaves and rejoins.

Video is 640x480 at 15 fps, 500 kbit/s (half the default frame rate; 30 fps is measured by
scripts/bench_encode.py): four encoders and twelve decoders share one process and two cores
with other work, and the test should measure the meeting, not the machine. Audio is the real
thing: Opus tones at 50 frames/s from every member, played out by null sinks in real time.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from client.bot import Bot, BotMedia
from client.media.clock import now_us
from common.media import MediaKind
from tests.helpers import unique_phone, wait_until

MEDIA = BotMedia(width=640, height=480, fps=15.0, bitrate=500_000)
MEETING_SECONDS = 10.0
IN_FLIGHT_US = 500_000       # frames captured this close to the end may still be on their way


def camera_stream(receiver_bot: Bot, sender_id: int):
    member = receiver_bot.receiver.members.get(sender_id)
    return member.video.get(MediaKind.CAMERA) if member else None


def sees(receiver_bot: Bot, sender: Bot, at_least: int = 1) -> bool:
    stream = camera_stream(receiver_bot, sender.kernel.user["id"])
    return stream is not None and stream.stats.decoded >= at_least


@pytest.fixture
def bots(server):
    made: list[Bot] = []

    def make(nickname: str, tone: float) -> Bot:
        bot = Bot([("127.0.0.1", server.port)], unique_phone(), "bot password 123", nickname,
                  BotMedia(**{**MEDIA.__dict__, "tone": tone}))
        made.append(bot)
        bot.login(register=True)
        return bot
    yield make
    for bot in made:
        bot.close()


def test_three_bots_meet_a_fourth_joins_late_and_one_rejoins(bots):
    alice, bob, carol = bots("alice", 330.0), bots("bob", 440.0), bots("carol", 550.0)
    number = alice.create(title="bot meeting")
    assert len(number) == 9 and number.isdigit()
    bob.join(number)
    carol.join(number)
    trio = [alice, bob, carol]
    wait_until(lambda: all(sees(r, s) for r in trio for s in trio if r is not s), 10, "everyone sees everyone")

    # the meeting itself: a fixed 10 s of media, during which alice's screen shows bob and
    # carol lip-synced (a picture is taken off the queue when the audio of its moment plays)
    start = now_us()
    skews_ms = []
    while now_us() - start < MEETING_SECONDS * 1e6:
        for sender in (bob, carol):
            member = alice.receiver.members[sender.kernel.user["id"]]
            shown = member.video[MediaKind.CAMERA].video.pop_due()
            offset = member.sync.audio_offset_us
            if shown is not None and offset is not None:
                skews_ms.append(abs(now_us() - shown[1] - offset) / 1000)
        time.sleep(0.005)
    end = now_us()
    time.sleep(IN_FLIGHT_US / 1e6)

    # The bots still publish and decode on their own threads: a loop over one of their live
    # deques fails with "deque mutated during iteration" when a thread appends meanwhile, so
    # every deque is copied first (list() copies it in one step, holding the GIL).
    for sender in trio:
        sid = sender.kernel.user["id"]
        sent = [c for c in list(sender.video.stats.sent_captures) if start <= c < end - IN_FLIGHT_US]
        assert len(sent) >= MEETING_SECONDS * MEDIA.fps * 0.8, f"{sender.nickname} published only {len(sent)}"
        audio_sent = [c for c in list(sender.audio.stats.sent_captures) if start <= c < end - IN_FLIGHT_US]
        for receiver in trio:
            if receiver is sender:
                continue
            stats = camera_stream(receiver, sid).stats
            pairs = [(c, d) for c, d in zip(list(stats.decoded_captures), list(stats.delays_ms))
                     if start <= c < end - IN_FLIGHT_US]
            decoded = {c for c, _ in pairs}
            share = len(decoded & set(sent)) / len(sent)
            assert share >= 0.95, f"{receiver.nickname} decoded {share:.1%} of {sender.nickname}'s video"
            p95 = float(np.percentile([d for _, d in pairs], 95))
            assert p95 < 200, f"{receiver.nickname} <- {sender.nickname}: capture-to-decoded p95 {p95:.0f} ms"
            audio = receiver.receiver.members[sid].audio
            heard = {c for c in list(audio.decoded_captures) if start <= c < end - IN_FLIGHT_US}
            assert len(heard & set(audio_sent)) >= 0.9 * len(audio_sent), \
                f"{receiver.nickname} decoded {len(heard)} of {len(audio_sent)} audio frames of {sender.nickname}"

    assert len(skews_ms) >= MEETING_SECONDS * MEDIA.fps, f"only {len(skews_ms)} pictures shown"
    skew_p95 = float(np.percentile(skews_ms, 95))
    assert skew_p95 < 80, f"audio/video skew p95 {skew_p95:.0f} ms"

    # a late joiner gets a picture of everyone within a second (the relay's cached keyframe)
    dave = bots("dave", 660.0)
    dave.join(number)
    wait_until(lambda: all(sees(dave, s) for s in trio), 5, "dave sees everyone")
    for sender in trio:
        first = dave.first_picture_after_join(sender.kernel.user["id"])
        assert first is not None and first < 1.0, f"dave's first picture of {sender.nickname} after {first} s"
    wait_until(lambda: all(sees(r, dave, 5) for r in trio), 5, "everyone sees dave")
    wait_until(lambda: all(dave.receiver.members[s.kernel.user["id"]].audio.decoded >= 10 for s in trio),
               5, "dave hears everyone")

    # bob leaves: the others drop him; he rejoins and pictures flow both ways again
    bob_id = bob.kernel.user["id"]
    bob.leave()
    assert bob.rooms.room is None
    wait_until(lambda: all(bob_id not in b.receiver.members for b in (alice, carol, dave)), 5, "bob is gone")
    assert not bob.receiver.members
    bob.join(number)
    others = [alice, carol, dave]
    wait_until(lambda: all(sees(b, bob, 5) for b in others), 5, "everyone sees bob again")
    wait_until(lambda: all(sees(bob, s, 5) for s in others), 5, "bob sees everyone again")
    wait_until(lambda: alice.receiver.members[bob_id].audio.decoded >= 10, 5, "alice hears bob again")

    report = alice.report()
    assert set(report["received"]) == {str(b.kernel.user["id"]) for b in (bob, carol, dave)}
    assert report["sent"]["video"]["sent"] > MEETING_SECONDS * MEDIA.fps
