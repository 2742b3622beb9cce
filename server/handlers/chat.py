"""One-to-one chat: send (acknowledged after commit), live delivery, receipts, unread backlog,
history pages and the typing indicator.

Sends and receipts go through the group-commit writer; the sender's RESULT and the live
CHAT_MESSAGE_EVENT leave only after the transaction holding the message committed. The
handlers only validate and queue, on the reactor thread, so the sends of one connection reach
the writer (and get their ids) in the order they were sent.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from common import limits, messages
from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from ..chat_writer import GroupCommitWriter, Job
from ..clock import now_ms
from ..mediator import Request, Routes
from ..storage.messages import NewMessage, mark_delivered_tx, mark_read_tx, store_messages_tx
from .replies import Replies, fit_page
from .views import message_view

if TYPE_CHECKING:
    from ..presence import Presence
    from ..ratelimit import RateLimits
    from ..router import Router
    from ..storage import Storage
    from ..storage.sql import Cursor

log = logging.getLogger("server.chat")

PAGE_ROWS = 200


def write_messages(cur: "Cursor", items: list[NewMessage]) -> list[Any]:
    results: list[Any] = store_messages_tx(cur, items, now_ms())
    if None in results:
        refused = ApiError(ErrorCode.NOT_FRIENDS, "you can only send messages to your friends")
        results = [refused if result is None else result for result in results]
    return results


def write_delivered(cur: "Cursor", items: list[tuple[int, list[int]]]) -> list[Any]:
    at = now_ms()
    return [(at, marked) for marked in mark_delivered_tx(cur, items, at)]


def write_read(cur: "Cursor", items: list[tuple[int, int, int]]) -> list[Any]:
    at = now_ms()
    return [(at, mark_read_tx(cur, reader, peer, up_to, at)) for reader, peer, up_to in items]


# The group-commit writer's kinds of job (server/chat_writer.py), as server.app builds it.
CHAT_WRITES = {"message": write_messages, "delivered": write_delivered, "read": write_read}


class ChatHandler:
    def __init__(self, storage: "Storage", router: "Router", presence: "Presence", rate_limits: "RateLimits",
                 writer: GroupCommitWriter, replies: Replies) -> None:
        self.storage = storage
        self.router = router
        self.presence = presence
        self.rate_limits = rate_limits
        self.writer = writer
        self.replies = replies

    def routes(self) -> Routes:
        return chat_routes(self.storage, self.router, self.presence, self.rate_limits, self.writer, self.replies)


def chat_routes(storage: "Storage", router: "Router", presence: "Presence", rate_limits: "RateLimits",
                writer: GroupCommitWriter, replies: Replies) -> Routes:
    routes = Routes()
    handler = routes.handler

    @handler(PacketType.CHAT_SEND)
    def chat_send(req: Request) -> None:
        body: messages.ChatSend = req.body
        recipient, text, client_msg_id = body.to, body.text, body.client_msg_id
        if len(text.encode("utf-8")) > limits.MAX_CHAT_BYTES:
            raise ApiError(ErrorCode.MESSAGE_TOO_LONG, limit=limits.MAX_CHAT_BYTES)
        if not text.strip():
            raise ApiError(ErrorCode.BAD_REQUEST, "the message is empty")
        rate_limits.message(req.user_id)
        sender, conn, request_id = req.user_id, req.conn, req.request_id
        # The presence cache knows the friends of an online sender: then the batch needs no
        # friendship query for this message.
        item = NewMessage(sender, recipient, client_msg_id, text,
                          known_friends=presence.are_friends(sender, recipient) is True)

        def done(result: Any, error: ApiError | None) -> None:
            if error is not None:
                log.info("%s message to user %d refused: %s", conn.who, recipient, error.code.name)
                replies.send_error(conn, request_id, error)
                return
            message, created = result
            replies.send_result(conn, request_id, messages.ChatSent(id=message.id, time=message.created_at,
                                                                    client_msg_id=message.client_msg_id,
                                                                    duplicate=not created))
            if created or message.delivered_at is None:
                # A repeat may follow a commit whose live delivery never happened; clients
                # drop a message id they already have.
                router.event_to_user(message.recipient_id, PacketType.CHAT_MESSAGE_EVENT,
                                     messages.ChatMessageEvent(message=message_view(message)))
        writer.submit(Job("message", item, done))

    @handler(PacketType.CHAT_DELIVERED)
    def chat_delivered(req: Request) -> None:
        ids = req.body.ids
        reader, conn, request_id = req.user_id, req.conn, req.request_id

        def done(result: Any, error: ApiError | None) -> None:
            if error is not None:
                replies.send_error(conn, request_id, error)
                return
            at, marked = result
            by_sender: dict[int, list[int]] = {}
            for message_id, sender in marked:
                by_sender.setdefault(sender, []).append(message_id)
            for sender, message_ids in by_sender.items():
                router.event_to_user(sender, PacketType.CHAT_STATUS_EVENT,
                                     messages.ChatStatusEvent(status="delivered", peer=reader, ids=message_ids, at=at))
            replies.send_result(conn, request_id, {"delivered": len(marked)})
        writer.submit(Job("delivered", (reader, ids), done))

    @handler(PacketType.CHAT_READ)
    def chat_read(req: Request) -> None:
        peer, up_to = req.body.user_id, req.body.up_to
        reader, conn, request_id = req.user_id, req.conn, req.request_id

        def done(result: Any, error: ApiError | None) -> None:
            if error is not None:
                replies.send_error(conn, request_id, error)
                return
            at, count = result
            if count:
                router.event_to_user(peer, PacketType.CHAT_STATUS_EVENT,
                                     messages.ChatStatusEvent(status="read", peer=reader, up_to=up_to, at=at))
            replies.send_result(conn, request_id, {"read": count, "at": at})
        writer.submit(Job("read", (reader, peer, up_to), done))

    @handler(PacketType.CHAT_UNREAD, blocking=True)
    def chat_unread(req: Request) -> dict:
        after = req.body.after or 0
        rows = storage.unread_page(req.user_id, after, PAGE_ROWS)
        page, cut = fit_page(rows, message_view)
        return {"messages": page, "more": cut or len(rows) == PAGE_ROWS,
                "next": page[-1].id if page else after}

    @handler(PacketType.CHAT_HISTORY, blocking=True)
    def chat_history(req: Request) -> dict:
        body: messages.ChatHistory = req.body
        before, limit = body.before, body.limit or 50
        rows = storage.history_page(req.user_id, body.user_id, before, limit)   # newest first
        page, cut = fit_page(rows, message_view)
        page.reverse()
        return {"messages": page, "more": cut or len(rows) == limit,
                "before": page[0].id if page else before}

    @handler(PacketType.TYPING)
    def typing(req: Request) -> dict:
        rate_limits.typing(req.user_id)
        peer = req.body.to
        is_typing = req.body.typing is not False
        if not presence.are_friends(req.user_id, peer):
            raise ApiError(ErrorCode.NOT_FRIENDS)
        router.event_to_user(peer, PacketType.TYPING_EVENT, messages.TypingEvent(from_id=req.user_id, typing=is_typing))
        return {}

    return routes
