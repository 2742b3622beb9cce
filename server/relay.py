"""The media relay: a selective forwarding unit on the reactor thread.

Each MEDIA_FRAME is forwarded without decoding to every other member of the sender's room,
with the publisher's user id written into its sub-header. The frame is encoded once and the
same bytes are queued on every receiver's connection.

Per video stream the relay keeps the latest keyframe. A newcomer (or a member coming back, or
one resuming a paused stream) gets it at once, skips the stream's delta frames until a fresh
keyframe arrives, and a fresh one is asked of the publisher. Keyframe requests to a publisher
are rate-limited (one per ``KEYFRAME_REQUEST_INTERVAL`` per stream) and repeated until a
keyframe arrives or the stream falls silent.

Slow receivers: the connection's output queue is shared with control traffic and a queue past
``output_hard_limit`` disconnects the peer, so media is dropped long before that. Once a
receiver has more than ``media_video_budget`` bytes queued, video for it is dropped until the
next keyframe; the keyframe is asked for only when its queue has drained again (so a receiver
that never reads does not make the publisher send keyframes for everyone). Audio flows until
``media_audio_budget`` bytes are queued. Both budgets stay below ``output_high_water``, so
media alone never pauses reading from a member or disconnects one, and a member's queue
holds at most about one budget of media: memory stays bounded, and other receivers are not
affected, because nothing waits on a slow one.

The relay reaches receivers' connections through the room registry's members (it is the
selective-forwarding part of routing; in a multi-process deployment a room's media is pinned
to one process).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common import frame as wire
from common.errors import ApiError, ErrorCode
from common.media import FLAG_KEYFRAME, MediaKind, forwarded_frame, unpack_media
from common.packets import PacketType

from .rooms import Member, Room, RoomRegistry

if TYPE_CHECKING:
    from .app import Server
    from .connection import Connection
    from .reactor import Timer

log = logging.getLogger("server.relay")

KEYFRAME_REQUEST_INTERVAL = 0.3   # at most one keyframe request per stream this often (seconds)
KEYFRAME_GIVE_UP_SILENCE = 2.0    # stop asking once the stream has sent nothing this long
VIDEO_KINDS = frozenset({MediaKind.CAMERA, MediaKind.SCREEN})


@dataclass(eq=False)
class Stream:
    """One publisher's stream of one kind in one room."""

    publisher: int
    kind: int
    video: bool
    keyframe: bytes | None = None      # the latest keyframe, as forwarded (frame header included)
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    keyframe_requests: int = 0
    last_frame: float = 0.0
    last_request: float = float("-inf")
    wanted: bool = False               # a keyframe has been asked for and has not arrived yet
    retry: "Timer | None" = None

    def public(self) -> dict[str, Any]:
        return {"user_id": self.publisher, "kind": self.kind, "frames_in": self.frames_in,
                "bytes_in": self.bytes_in, "frames_out": self.frames_out, "dropped": self.dropped,
                "keyframe_requests": self.keyframe_requests}


@dataclass(eq=False)
class Receiver:
    """What one member receives: paused streams, and video streams waiting for a keyframe."""

    paused: set[tuple[int, int]] = field(default_factory=set)
    waiting: set[tuple[int, int]] = field(default_factory=set)
    dropped: int = 0


@dataclass(eq=False)
class RoomMedia:
    streams: dict[tuple[int, int], Stream] = field(default_factory=dict)
    receivers: dict[int, Receiver] = field(default_factory=dict)


class Relay:
    """Reactor thread only."""

    def __init__(self, server: "Server", rooms: RoomRegistry) -> None:
        self.server = server
        self.rooms = rooms
        self.media: dict[str, RoomMedia] = {}
        self.ignored = 0          # frames from connections that are not in a room
        self.keyframe_requests = 0
        rooms.on_connected.append(self._member_connected)
        rooms.on_gone.append(self._member_gone)
        rooms.on_media_state.append(self._media_state)
        rooms.on_closed.append(self._room_closed)

    def status(self) -> dict[str, Any]:
        return {"media_streams": sum(len(m.streams) for m in self.media.values()),
                "media_frames_ignored": self.ignored, "media_keyframe_requests": self.keyframe_requests}

    # -- the hot path ------------------------------------------------------------------------------
    def forward(self, conn: "Connection", body: bytes) -> None:
        """Relay one MEDIA_FRAME body from ``conn`` to the other members of its room."""
        try:
            header, _ = unpack_media(body)
        except wire.ProtocolError as exc:
            raise ApiError(ErrorCode.BAD_REQUEST, str(exc)) from None
        publisher = conn.user_id
        room = self.rooms.by_user.get(publisher)          # type: ignore[arg-type]
        if room is None or room.members[publisher].conn is not conn:
            self.ignored += 1
            return
        media = self.media[room.number]
        key = (publisher, header.kind)
        stream = media.streams.get(key)
        if stream is None:
            stream = media.streams[key] = Stream(publisher, header.kind, header.kind in VIDEO_KINDS)
        now = time.monotonic()
        stream.frames_in += 1
        stream.bytes_in += len(body)
        stream.last_frame = now
        stats = self.server.stats
        stats.media_frames_in += 1
        data = forwarded_frame(body, publisher)
        keyframe = bool(header.flags & FLAG_KEYFRAME)
        video = stream.video
        if video and keyframe:
            stream.keyframe = data
            stream.wanted = False
        budget = self.server.config.media_video_budget if video else self.server.config.media_audio_budget
        sent = dropped = 0
        receivers = media.receivers
        for member in room.members.values():
            target = member.conn
            if member.user_id == publisher or target is None or target.closed:
                continue
            receiver = receivers[member.user_id]
            if key in receiver.paused:
                continue
            if video and key in receiver.waiting:
                if not keyframe or target.out_size > budget:
                    dropped += 1
                    receiver.dropped += 1
                    if target.out_size <= budget // 2:
                        self.want_keyframe(stream)        # drained: a keyframe can get through now
                    continue
                receiver.waiting.discard(key)
            elif target.out_size > budget:
                dropped += 1
                receiver.dropped += 1
                if video:
                    receiver.waiting.add(key)
                    log.debug("%s congested (%d bytes queued): video of user=%d dropped until a keyframe",
                              target.who, target.out_size, publisher)
                continue
            target.send(data)
            sent += 1
        stream.frames_out += sent
        stream.dropped += dropped
        stats.media_frames_out += sent
        stats.media_frames_dropped += dropped

    # -- keyframes -----------------------------------------------------------------------------------
    def want_keyframe(self, stream: Stream) -> None:
        """Ask the publisher for a keyframe now if the rate limit allows, and keep asking."""
        stream.wanted = True
        now = time.monotonic()
        if now - stream.last_request >= KEYFRAME_REQUEST_INTERVAL:
            self._ask(stream, now)
        if stream.retry is None:
            delay = max(0.0, stream.last_request + KEYFRAME_REQUEST_INTERVAL - now)
            stream.retry = self.server.reactor.call_later(delay, self._retry, stream)

    def _retry(self, stream: Stream) -> None:
        stream.retry = None
        if not stream.wanted:
            return
        now = time.monotonic()
        if now - stream.last_frame > KEYFRAME_GIVE_UP_SILENCE:
            stream.wanted = False          # the publisher stopped sending; a newcomer will ask again
            return
        if now - stream.last_request >= KEYFRAME_REQUEST_INTERVAL:
            self._ask(stream, now)
        delay = max(0.0, stream.last_request + KEYFRAME_REQUEST_INTERVAL - now)
        stream.retry = self.server.reactor.call_later(delay, self._retry, stream)

    def _ask(self, stream: Stream, now: float) -> None:
        stream.last_request = now
        stream.keyframe_requests += 1
        self.keyframe_requests += 1
        self.server.router.event_to_user(stream.publisher, PacketType.KEYFRAME_REQUEST_EVENT,
                                         {"kind": stream.kind})

    def _start_stream(self, target: "Connection", receiver: Receiver, stream: Stream) -> None:
        """Give a receiver a picture of a video stream at once: the cached keyframe, then the
        stream from the next fresh keyframe on (which is asked for)."""
        key = (stream.publisher, stream.kind)
        receiver.waiting.add(key)
        if stream.keyframe is not None and target.out_size <= self.server.config.media_video_budget:
            target.send(stream.keyframe)
            stream.frames_out += 1
            self.server.stats.media_frames_out += 1
        self.want_keyframe(stream)

    # -- receivers' requests -------------------------------------------------------------------------
    def _room_and_stream_key(self, user_id: int, publisher: int, kind: int) -> tuple[Room, tuple[int, int]]:
        room = self.rooms.require_room(user_id)
        if publisher not in room.members or publisher == user_id:
            raise ApiError(ErrorCode.NO_SUCH_MEMBER)
        return room, (publisher, kind)

    def report_loss(self, user_id: int, publisher: int, kind: int) -> None:
        """A receiver lost frames of a stream (or cannot decode it): ask for a keyframe."""
        room, key = self._room_and_stream_key(user_id, publisher, kind)
        stream = self.media[room.number].streams.get(key)
        if stream is not None and stream.video:
            self.want_keyframe(stream)

    def subscribe(self, user_id: int, publisher: int, kind: int, paused: bool) -> None:
        """Pause or resume receiving one stream."""
        room, key = self._room_and_stream_key(user_id, publisher, kind)
        media = self.media[room.number]
        receiver = media.receivers[user_id]
        if paused:
            receiver.paused.add(key)
            receiver.waiting.discard(key)
            return
        if key not in receiver.paused:
            return
        receiver.paused.discard(key)
        stream = media.streams.get(key)
        target = room.members[user_id].conn
        if stream is not None and stream.video and target is not None:
            self._start_stream(target, receiver, stream)

    def stream_stats(self, user_id: int) -> dict[str, Any]:
        room = self.rooms.require_room(user_id)
        media = self.media[room.number]
        return {"number": room.number, "streams": [s.public() for s in media.streams.values()],
                "dropped_for_you": media.receivers[user_id].dropped}

    # -- membership hooks from the room registry -----------------------------------------------------
    def _member_connected(self, room: Room, member: Member) -> None:
        media = self.media.get(room.number)
        if media is None:
            media = self.media[room.number] = RoomMedia()
        receiver = media.receivers.get(member.user_id)
        if receiver is None:
            receiver = media.receivers[member.user_id] = Receiver()
        assert member.conn is not None
        for stream in media.streams.values():
            if stream.video and stream.publisher != member.user_id and (stream.publisher, stream.kind) not in receiver.paused:
                self._start_stream(member.conn, receiver, stream)

    def _member_gone(self, room: Room, member: Member) -> None:
        media = self.media.get(room.number)
        if media is None:
            return
        media.receivers.pop(member.user_id, None)
        for key in [k for k in media.streams if k[0] == member.user_id]:
            self._drop_stream(media, key)
        for receiver in media.receivers.values():
            receiver.paused = {k for k in receiver.paused if k[0] != member.user_id}
            receiver.waiting = {k for k in receiver.waiting if k[0] != member.user_id}

    def _media_state(self, room: Room, member: Member) -> None:
        """A source switched off: forget its stream, so no newcomer gets a stale picture."""
        media = self.media.get(room.number)
        if media is None:
            return
        for kind, on in ((MediaKind.CAMERA, member.camera), (MediaKind.MICROPHONE, member.microphone),
                         (MediaKind.SCREEN, member.screen)):
            if not on:
                self._drop_stream(media, (member.user_id, kind))

    def _room_closed(self, room: Room) -> None:
        media = self.media.pop(room.number, None)
        if media is not None:
            for key in list(media.streams):
                self._drop_stream(media, key)

    @staticmethod
    def _drop_stream(media: RoomMedia, key: tuple[int, int]) -> None:
        stream = media.streams.pop(key, None)
        if stream is not None and stream.retry is not None:
            stream.retry.cancel()
            stream.retry = None
