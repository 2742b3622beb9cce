"""`room`: meetings whose members all publish pre-encoded media."""
from __future__ import annotations

import asyncio
import time

from common import messages
from common.media import FLAG_KEYFRAME, Codec, MediaHeader, MediaKind, media_frame, unpack_media
from common.packets import PacketType

from ..sim import SimClient, error_kind
from ..worker import Worker


async def room(w: Worker) -> None:
    """K meetings of M members; every member publishes the pre-encoded H.264 clip at the
    given fps (and Opus audio every 20 ms). Measures capture-to-receive latency per kind and
    counts frames sent, received and missing (dropped by the relay or late)."""
    s = w.settings
    clip = s.clip
    my_rooms = [r for r in range(s.rooms) if r % s.processes == w.index]
    w.target = len(my_rooms) * s.members
    w.phase = "logging in"
    clients = await w.login_many(w.target, lambda i: f"room{w.index}-{i}")
    meetings: list[list[SimClient]] = []
    for k in range(len(my_rooms)):
        members = [c for c in clients[k * s.members:(k + 1) * s.members] if c is not None]
        if len(members) < 2:
            continue
        try:
            created = await members[0].request(PacketType.ROOM_CREATE, {"title": f"load {k}"}, s.timeout)
            number = created["room"]["number"]
            for member in members[1:]:
                await member.request(PacketType.ROOM_JOIN, {"number": number}, s.timeout)
            for member in members:
                await member.request(PacketType.MEDIA_STATE, {"camera": True, "microphone": s.audio,
                                                              "screen": False}, s.timeout)
        except Exception as exc:
            w.metrics.error(error_kind(exc))
            continue
        meetings.append(members)
    w.metrics.count("rooms_joined", len(meetings))

    def on_media(body: bytes) -> None:
        header, _ = unpack_media(body)
        delay = (time.time_ns() // 1000 - header.capture_us) / 1e6   # same machine, same clock
        counter, latency = (("video_frames_received", "video_latency") if header.kind == MediaKind.CAMERA
                            else ("audio_frames_received", "audio_latency"))
        w.metrics.count(counter)
        now = time.monotonic()
        w.metrics.latency(latency, now - delay, now)

    def publish(member: SimClient, kind: MediaKind, fanout: int) -> None:
        video = kind == MediaKind.CAMERA
        packets = clip.video if video else [(p, False) for p in clip.audio]
        codec = Codec.H264 if video else Codec.OPUS
        name = "video" if video else "audio"
        sent, expected, skipped = (f"{name}_frames_sent", f"{name}_frames_expected",
                                   f"{name}_frames_skipped_by_generator")
        position = 0
        seq = 0

        def on_keyframe_request(event: messages.KeyframeRequestEvent) -> None:
            nonlocal position
            if event.kind == MediaKind.CAMERA:
                position = 0       # the clip starts with a keyframe
                w.metrics.count("keyframe_requests")
        if video:
            member.handlers[PacketType.KEYFRAME_REQUEST_EVENT] = on_keyframe_request

        def send() -> None:
            nonlocal position, seq
            payload, keyframe = packets[position % len(packets)]
            position += 1
            seq = (seq + 1) & 0xFFFFFFFF
            header = MediaHeader(0, kind, codec, FLAG_KEYFRAME if keyframe else 0, seq, time.time_ns() // 1000)
            member.send_frame(media_frame(header, payload))
            w.metrics.count(sent)
            w.metrics.count(expected, fanout)
        w.pace(1.0 / s.fps if video else 0.02, send, lambda: member.connected,
               on_behind=lambda: w.metrics.count(skipped))     # an overloaded generator does not burst

    w.phase = "publishing"
    for members in meetings:
        for member in members:
            member.handlers[PacketType.MEDIA_FRAME] = on_media
            publish(member, MediaKind.CAMERA, len(members) - 1)
            if s.audio and clip.audio:
                publish(member, MediaKind.MICROPHONE, len(members) - 1)
    await w.hold(s.duration)
    await asyncio.sleep(0.5)   # frames still on the wire
    for name in ("video", "audio"):
        missing = w.metrics.counters[f"{name}_frames_expected"] - w.metrics.counters[f"{name}_frames_received"]
        if missing > 0:
            w.metrics.count(f"{name}_frames_missing", missing)
