"""Chat events Redis lost, caught up from the database.

While Redis is down, or restarted empty and not yet told again where each session is, events
to users on other nodes are dropped (the bus cannot publish them, or finds no node for the
recipient). A chat message is stored before its event is sent (the sender's acknowledgement
means it is in the database), so nothing is lost, but a recipient who stays connected would
see it only at the next login. So when this node's subscriber is back and again when the node
registered its sessions again, it looks up the messages to its users that were never
delivered and were sent since shortly before the outage began, and sends their
CHAT_MESSAGE_EVENT again. Clients drop a message id they already have, so a message that did
arrive live is harmless; the client acknowledges the others (CHAT_DELIVERED) as usual.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING

from common import messages
from common.packets import PacketType

from ..handlers.views import message_view

if TYPE_CHECKING:
    from ..reactor import Reactor
    from ..router import Router
    from ..sessions import Sessions
    from ..storage import Storage
    from ..storage.messages import Message
    from .node import ClusterNode

log = logging.getLogger("server.cluster.catchup")

MARGIN = 10.0          # seconds before the outage began: events already in a broken connection
MAX_PER_USERS = 1000   # messages per 500 users at most (the rest comes with the next login)


class ChatCatchUp:
    def __init__(self, reactor: "Reactor", pool: Executor, storage: "Storage", sessions: "Sessions",
                 router: "Router", cluster: "ClusterNode") -> None:
        self.reactor = reactor
        self.pool = pool
        self.storage = storage
        self.sessions = sessions
        self.router = router
        self.cluster = cluster
        self.sent = 0
        cluster.redis_back.append(self.catch_up)
        cluster.registered_again.append(lambda: self.catch_up(cluster.bus.lost_at))

    def catch_up(self, outage_began: float) -> None:
        """Reactor thread: look up (on the pool) and send what this node's users may have missed."""
        users = [user_id for user_id, _ in self.sessions.snapshot()]
        if not users or not outage_began:
            return
        since_ms = int((outage_began - MARGIN) * 1000)
        future = self.pool.submit(self.storage.undelivered_since, users, since_ms, MAX_PER_USERS)
        future.add_done_callback(lambda fut: self.reactor.call_soon_threadsafe(self._send, fut))

    def _send(self, future: "Future[list[Message]]") -> None:
        error = future.exception()
        if error is not None:
            log.error("cannot catch this node's users up on chat after the Redis outage: %s", error)
            return
        missed = future.result()
        for message in missed:
            if self.sessions.get(message.recipient_id) is not None:
                self.router.event_to_user(message.recipient_id, PacketType.CHAT_MESSAGE_EVENT,
                                          messages.ChatMessageEvent(message=message_view(message)))
        self.sent += len(missed)
        if missed:
            log.warning("sent again %d chat messages never delivered since the Redis outage began (%s)",
                        len(missed), time.strftime("%H:%M:%S", time.localtime(self.cluster.bus.lost_at)))

    def status(self) -> dict[str, int]:
        return {"cluster_chat_caught_up": self.sent}
