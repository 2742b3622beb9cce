"""Media packets (types 100-119): MEDIA_FRAME forwarding and the receivers' controls.

MEDIA_FRAME is relayed inline on the reactor thread (pure routing, no decoding) by
server/relay.py. KEYFRAME_REQUEST is usually sent fire-and-forget (request id 0): then it gets
no reply, not even an error, because a loss report about a member who has just left is normal.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from common.packets import PacketType

from ..mediator import Request, Routes

if TYPE_CHECKING:
    from ..relay import Relay


class MediaHandler:
    def __init__(self, relay: "Relay") -> None:
        self.relay = relay

    def routes(self) -> Routes:
        return media_routes(self.relay)


def media_routes(relay: "Relay") -> Routes:
    routes = Routes()
    handler = routes.handler

    @handler(PacketType.MEDIA_FRAME)
    def media_frame(req: Request) -> None:
        relay.forward(req.conn, req.body)

    @handler(PacketType.KEYFRAME_REQUEST)
    def keyframe_request(req: Request) -> dict:
        relay.report_loss(req.user_id, req.body.user_id, req.body.kind)
        return {}

    @handler(PacketType.MEDIA_SUBSCRIBE)
    def subscribe(req: Request) -> dict:
        body = req.body
        relay.subscribe(req.user_id, body.user_id, body.kind, body.paused)
        return {}

    @handler(PacketType.MEDIA_STATS)
    def stats(req: Request) -> dict:
        return relay.stream_stats(req.user_id)

    return routes
