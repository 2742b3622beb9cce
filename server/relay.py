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
selective-forwarding part of routing).

In a cluster (``links`` given: ``server.cluster.peerlink.PeerLinks``) the relay cascades, as
mediasoup pipes a producer to another router and Jitsi's Octo links bridges: a frame published
here crosses once to each other node with members in the room (``RoomMedia.nodes``, from the
room mirror), whatever the number of receivers there, and that node fans it out to its own
members with the policy above. A node is treated like a receiver: while its link has more than
``LINK_VIDEO_SHARE`` video budgets queued, video for it is dropped until a keyframe (audio past
``LINK_AUDIO_SHARE`` audio budgets). Each node keeps the streams of the rooms it serves, remote
ones included, with their latest keyframe, so a member joining on any node gets a picture at
once; a node that starts serving a room is sent the cached keyframes of this node's streams.
Keyframe requests for a stream published elsewhere (a newcomer, a loss report, a resumed
stream) go over the link to the publisher's node, which rate-limits them per stream together
with its own: the publisher gets at most one request per ``KEYFRAME_REQUEST_INTERVAL`` whatever
the number of nodes asking. A stream that every member of a node paused stops crossing to that
node until one of them resumes it. Frames that arrive over a link are never sent on to a third
node.
The link is a direct TCP connection between the two nodes, not the Redis bus: measured, Redis
cost 2.8–3.7 times the CPU per frame and 4–6 times the delay (server/cluster/peerlink.py,
docs/PERFORMANCE.md "Cluster media").
"""
from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.errors import ApiError, ErrorCode
from common.frame import HEADER
from common.media import FLAG_KEYFRAME, MEDIA_HEADER, Codec, MediaKind, forwarded_frame
from common.packets import PacketType

from .rooms import Member, Room, RoomRegistry

if TYPE_CHECKING:
    from .cluster.peerlink import PeerLinks
    from .config import ServerConfig
    from .connection import Connection
    from .reactor import Reactor, Timer
    from .router import Router
    from .stats import Stats

log = logging.getLogger("server.relay")

KEYFRAME_REQUEST_INTERVAL = 0.3   # at most one keyframe request per stream this often (seconds)
KEYFRAME_GIVE_UP_SILENCE = 2.0    # stop asking once the stream has sent nothing this long
VIDEO_KINDS = frozenset({MediaKind.CAMERA, MediaKind.SCREEN})
FRAME_HEADER_SIZE = HEADER.size
KIND_CODEC_FLAGS = struct.Struct("!4xBBB")   # the start of a MEDIA_FRAME body after the user id
MEDIA_KINDS = frozenset(MediaKind)
CODECS = frozenset(Codec)
LINK_VIDEO_SHARE = 8              # a link to a node may hold this many video budgets of media
LINK_AUDIO_SHARE = 8              # ... and this many audio budgets


@dataclass(eq=False)
class Stream:
    """One publisher's stream of one kind in one room."""

    publisher: int
    kind: int
    video: bool
    room_id: int
    remote: bool                       # published on another node: frames come over a media link
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
    key: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.publisher, self.kind)

    def public(self) -> dict[str, Any]:
        return {"user_id": self.publisher, "kind": self.kind, "frames_in": self.frames_in,
                "bytes_in": self.bytes_in, "frames_out": self.frames_out, "dropped": self.dropped,
                "keyframe_requests": self.keyframe_requests}


@dataclass(eq=False)
class MediaReceiver:
    """What one member (or, in a cluster, one other node) receives: paused streams, and video
    streams waiting for a keyframe."""

    paused: set[tuple[int, int]] = field(default_factory=set)
    waiting: set[tuple[int, int]] = field(default_factory=set)
    dropped: int = 0


@dataclass(eq=False)
class RoomMedia:
    streams: dict[tuple[int, int], Stream] = field(default_factory=dict)
    receivers: dict[int, MediaReceiver] = field(default_factory=dict)
    nodes: dict[str, MediaReceiver] = field(default_factory=dict)   # other nodes with members here
    paused_upstream: set[tuple[int, int]] = field(default_factory=set)   # streams from other nodes
    # that every member here paused: their node was told to stop sending them here


class Relay:
    """Reactor thread only."""

    def __init__(self, config: "ServerConfig", stats: "Stats", reactor: "Reactor", router: "Router",
                 rooms: RoomRegistry, links: "PeerLinks | None" = None) -> None:
        """``links``: this node's media links in a cluster (then ``rooms`` is the cluster's
        registry, whose members carry their node). ``config`` is read per frame (a reload
        changes the budgets in place)."""
        self.config = config
        self.stats = stats
        self.reactor = reactor
        self.router = router
        self.rooms = rooms
        self.links = links
        self.media: dict[str, RoomMedia] = {}
        self.ignored = 0          # frames from connections that are not in a room
        self.keyframe_requests = 0
        self.to_nodes = 0         # frames sent over media links (one per node, not per receiver)
        self.from_nodes = 0       # frames received over media links
        self.dropped_for_nodes = 0
        rooms.on_connected.append(self._member_connected)
        rooms.on_gone.append(self._member_gone)
        rooms.on_media_state.append(self._media_state)
        rooms.on_closed.append(self._room_closed)
        if links is not None:
            rooms.on_applied.append(self._room_applied)     # type: ignore[attr-defined]

    def status(self) -> dict[str, Any]:
        figures = {"media_streams": sum(len(m.streams) for m in self.media.values()),
                   "media_frames_ignored": self.ignored, "media_keyframe_requests": self.keyframe_requests}
        if self.links is not None:
            figures.update(media_frames_to_nodes=self.to_nodes, media_frames_from_nodes=self.from_nodes,
                           media_frames_dropped_for_nodes=self.dropped_for_nodes, **self.links.status())
        return figures

    # -- the hot path ------------------------------------------------------------------------------
    def forward(self, conn: "Connection", body: bytes) -> None:
        """Relay one MEDIA_FRAME body from ``conn`` to the other members of its room."""
        if len(body) < MEDIA_HEADER.size:      # the checks of common.media.unpack_media, without building
            raise ApiError(ErrorCode.BAD_REQUEST,  # its header tuple: this runs for every frame
                           f"MEDIA_FRAME body of {len(body)} bytes is shorter than its header")
        kind, codec, flags = KIND_CODEC_FLAGS.unpack_from(body)
        if kind not in MEDIA_KINDS or codec not in CODECS:
            raise ApiError(ErrorCode.BAD_REQUEST, f"MEDIA_FRAME with unknown kind {kind} or codec {codec}")
        publisher = conn.user_id
        room = self.rooms.by_user.get(publisher)          # type: ignore[arg-type]
        if room is None or room.members[publisher].conn is not conn:
            self.ignored += 1
            return
        media = self.media[room.number]
        key = (publisher, kind)
        stream = media.streams.get(key)
        if stream is None or stream.remote:          # new, or its publisher moved here from another node
            self._drop_stream(media, key)
            stream = media.streams[key] = Stream(publisher, kind, kind in VIDEO_KINDS, room.room_id, remote=False)
        data = forwarded_frame(body, publisher)
        keyframe = bool(flags & FLAG_KEYFRAME)
        self._fan_out(room, media, stream, data, keyframe)
        if media.nodes:
            self._cascade(room, media, stream, key, data, keyframe)

    def _fan_out(self, room: Room, media: RoomMedia, stream: Stream, data: bytes, keyframe: bool) -> None:
        """Send one frame (as forwarded) to this node's members of the room."""
        publisher = stream.publisher
        key = stream.key
        stream.frames_in += 1
        stream.bytes_in += len(data) - FRAME_HEADER_SIZE
        stream.last_frame = time.monotonic()
        stats = self.stats
        stats.media_frames_in += 1
        video = stream.video
        if video and keyframe:
            stream.keyframe = data
            stream.wanted = False
        config = self.config
        budget = config.media_video_budget if video else config.media_audio_budget
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

    # -- across nodes (a cluster) -----------------------------------------------------------------------
    def _cascade(self, room: Room, media: RoomMedia, stream: Stream, key: tuple[int, int], data: bytes,
                 keyframe: bool) -> None:
        """Send a frame published here once to each other node with members in the room, with
        the members' policy applied to each node's link (the same rules as in ``_fan_out``)."""
        links = self.links
        assert links is not None
        config = self.config
        video = stream.video
        budget = LINK_VIDEO_SHARE * config.media_video_budget if video else LINK_AUDIO_SHARE * config.media_audio_budget
        for node, target in media.nodes.items():
            if key in target.paused:
                continue
            queued = links.queued(node)
            if video and key in target.waiting:
                if not keyframe or queued > budget:
                    self.dropped_for_nodes += 1
                    if queued <= budget // 2:
                        self.want_keyframe(stream)
                    continue
                target.waiting.discard(key)
            elif queued > budget:
                self.dropped_for_nodes += 1
                if video:
                    target.waiting.add(key)
                    log.debug("media link to node %s congested (%d bytes queued): video of user=%d dropped "
                              "until a keyframe", node, queued, stream.publisher)
                continue
            links.send_media(node, room.room_id, data)
            self.to_nodes += 1

    def link_media(self, room_id: int, data: bytes) -> None:
        """A frame published on another node for one of the rooms this node serves (reactor
        thread, from a media link): to this node's members, never on to another node."""
        self.from_nodes += 1
        number = str(room_id)
        room = self.rooms.rooms.get(number)
        media = self.media.get(number)
        if room is None or media is None or len(data) < HEADER.size + MEDIA_HEADER.size:
            self.ignored += 1
            return
        publisher, kind, _, flags, _, _ = MEDIA_HEADER.unpack_from(data, HEADER.size)
        member = room.members.get(publisher)
        if member is None or member.conn is not None or kind not in MediaKind._value2member_map_:
            self.ignored += 1        # not a member, or one publishing here now (a frame from before a move)
            return
        key = (publisher, kind)
        stream = media.streams.get(key)
        if stream is None or not stream.remote:
            self._drop_stream(media, key)
            stream = media.streams[key] = Stream(publisher, kind, kind in VIDEO_KINDS, room_id, remote=True)
        self._fan_out(room, media, stream, data, bool(flags & FLAG_KEYFRAME))

    def link_keyframe(self, room_id: int, publisher: int, kind: int) -> None:
        """Another node asks for a keyframe of a stream published here (reactor thread)."""
        media = self.media.get(str(room_id))
        stream = media.streams.get((publisher, kind)) if media is not None else None
        if stream is not None and stream.video and not stream.remote:
            self.want_keyframe(stream)

    def link_subscribe(self, node: str, room_id: int, publisher: int, kind: int, paused: bool) -> None:
        """Another node's members all paused a stream published here, or one wants it again
        (then from a fresh keyframe on)."""
        media = self.media.get(str(room_id))
        target = media.nodes.get(node) if media is not None else None
        if target is None:
            return
        key = (publisher, kind)
        if paused:
            target.paused.add(key)
            target.waiting.discard(key)
            return
        target.paused.discard(key)
        stream = media.streams.get(key)                 # type: ignore[union-attr]
        if stream is not None and stream.video and not stream.remote:
            target.waiting.add(key)
            self.want_keyframe(stream)

    def _follow_pauses(self, room: Room, media: RoomMedia) -> None:
        """Tell the nodes of remote publishers which of their streams no member here wants
        (every member connected here paused it), and which are wanted again."""
        links = self.links
        if links is None:
            return
        present = [r for uid, r in media.receivers.items()
                   if (m := room.members.get(uid)) is not None and m.conn is not None]
        for publisher, member in room.members.items():
            node = getattr(member, "node", "")
            if member.conn is not None or not node or node == links.node:
                continue
            for kind in MediaKind:
                key = (publisher, int(kind))
                unwanted = bool(present) and all(key in r.paused for r in present)
                if unwanted != (key in media.paused_upstream):
                    (media.paused_upstream.add if unwanted else media.paused_upstream.discard)(key)
                    links.send_subscribe(node, room.room_id, publisher, int(kind), unwanted)

    def _room_applied(self, room: Room) -> None:
        """The room mirror changed (cluster): follow the set of other nodes with members here;
        a node that starts serving the room gets the cached keyframes of the streams published
        here at once, then the streams from their next keyframe on."""
        media = self.media.get(room.number)
        if media is None:
            media = self.media[room.number] = RoomMedia()
        nodes = self.rooms.remote_nodes(room)      # type: ignore[attr-defined]
        for node in [n for n in media.nodes if n not in nodes]:
            del media.nodes[node]
        links = self.links
        assert links is not None
        for node in nodes:
            if node in media.nodes:
                continue
            target = media.nodes[node] = MediaReceiver()
            budget = LINK_VIDEO_SHARE * self.config.media_video_budget
            for key, stream in media.streams.items():
                if not stream.video or stream.remote:
                    continue
                target.waiting.add(key)
                if stream.keyframe is not None and links.queued(node) <= budget:
                    links.send_media(node, room.room_id, stream.keyframe)
                    self.to_nodes += 1
                self.want_keyframe(stream)

    # -- keyframes -----------------------------------------------------------------------------------
    def want_keyframe(self, stream: Stream) -> None:
        """Ask the publisher for a keyframe now if the rate limit allows, and keep asking."""
        stream.wanted = True
        now = time.monotonic()
        if now - stream.last_request >= KEYFRAME_REQUEST_INTERVAL:
            self._ask(stream, now)
        if stream.retry is None:
            delay = max(0.0, stream.last_request + KEYFRAME_REQUEST_INTERVAL - now)
            stream.retry = self.reactor.call_later(delay, self._retry, stream)

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
        stream.retry = self.reactor.call_later(delay, self._retry, stream)

    def _ask(self, stream: Stream, now: float) -> None:
        stream.last_request = now
        stream.keyframe_requests += 1
        self.keyframe_requests += 1
        if stream.remote:
            self._ask_node(stream)
            return
        self.router.event_to_user(stream.publisher, PacketType.KEYFRAME_REQUEST_EVENT,
                                         {"kind": stream.kind})

    def _ask_node(self, stream: Stream) -> None:
        """A stream published on another node: the request goes to that node's relay."""
        room = self.rooms.rooms.get(str(stream.room_id))
        member = room.members.get(stream.publisher) if room is not None else None
        node = getattr(member, "node", "")
        if self.links is not None and node:
            self.links.send_keyframe_request(node, stream.room_id, stream.publisher, stream.kind)

    def _start_stream(self, target: "Connection", receiver: MediaReceiver, stream: Stream) -> None:
        """Give a receiver a picture of a video stream at once: the cached keyframe, then the
        stream from the next fresh keyframe on (which is asked for)."""
        key = (stream.publisher, stream.kind)
        receiver.waiting.add(key)
        if stream.keyframe is not None and target.out_size <= self.config.media_video_budget:
            target.send(stream.keyframe)
            stream.frames_out += 1
            self.stats.media_frames_out += 1
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
            self._follow_pauses(room, media)
            return
        if key not in receiver.paused:
            return
        receiver.paused.discard(key)
        self._follow_pauses(room, media)
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
            receiver = media.receivers[member.user_id] = MediaReceiver()
        assert member.conn is not None
        if media.paused_upstream:
            self._follow_pauses(room, media)          # a newcomer wants what the others paused
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
        media.paused_upstream = {k for k in media.paused_upstream if k[0] != member.user_id}
        if self.links is not None:
            self._follow_pauses(room, media)          # the members left may all have paused a stream

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
