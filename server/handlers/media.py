"""Media packets (types 100-119): MEDIA_FRAME forwarding and the receivers' controls.

MEDIA_FRAME is relayed inline on the reactor thread (pure routing, no decoding) by
server/relay.py. KEYFRAME_REQUEST is usually sent fire-and-forget (request id 0): then it gets
no reply, not even an error, because a loss report about a member who has just left is normal.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from common.fields import get_bool, get_int
from common.media import MediaKind
from common.packets import PacketType

from ..mediator import Request
from ..relay import Relay

if TYPE_CHECKING:
    from ..app import Server

USER_ID_MAX = 2 ** 31 - 1


def stream_key(body: dict) -> tuple[int, int]:
    return (get_int(body, "user_id", hi=USER_ID_MAX),
            get_int(body, "kind", lo=min(MediaKind), hi=max(MediaKind)))


def install(server: "Server") -> None:
    relay = Relay(server, server.rooms)   # type: ignore[attr-defined]  # set by handlers.rooms
    server.relay = relay                  # type: ignore[attr-defined]
    handler = server.mediator.handler

    @handler(PacketType.MEDIA_FRAME)
    def media_frame(req: Request) -> None:
        relay.forward(req.conn, req.body)

    @handler(PacketType.KEYFRAME_REQUEST)
    def keyframe_request(req: Request) -> dict:
        publisher, kind = stream_key(req.body)
        relay.report_loss(req.user_id, publisher, kind)
        return {}

    @handler(PacketType.MEDIA_SUBSCRIBE)
    def subscribe(req: Request) -> dict:
        publisher, kind = stream_key(req.body)
        relay.subscribe(req.user_id, publisher, kind, get_bool(req.body, "paused"))
        return {}

    @handler(PacketType.MEDIA_STATS)
    def stats(req: Request) -> dict:
        return relay.stream_stats(req.user_id)
