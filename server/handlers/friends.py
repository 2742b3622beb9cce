"""Finding users, friend requests and answers, friend lists, removing friends; presence.

Replies that carry presence (``online`` flags) are finished on the reactor thread, where the
presence state lives, so a list and the FRIEND_ONLINE/OFFLINE events around it agree.
"""
from __future__ import annotations

import logging
import unicodedata
from typing import TYPE_CHECKING

from common import messages
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from common.validation import normalize_phone

from ..clock import now_ms
from ..mediator import Request, Routes
from ..storage import User
from ..storage.friends import FriendRefusal
from .replies import Replies, fit_page
from .views import friend_view, request_view, user_view

if TYPE_CHECKING:
    from ..presence import Presence
    from ..ratelimit import RateLimits
    from ..router import Router
    from ..storage import Storage

log = logging.getLogger("server.friends")

GREETING_MAX = 100
PAGE_ROWS = 200
_REFUSALS = {"already_friends": ErrorCode.ALREADY_FRIENDS, "pending": ErrorCode.REQUEST_PENDING,
             "no_such_request": ErrorCode.NO_SUCH_REQUEST, "not_friends": ErrorCode.NOT_FRIENDS}


def normalize_greeting(raw: str) -> str:
    greeting = raw.strip()
    if len(greeting) > GREETING_MAX:
        raise ApiError(ErrorCode.BAD_REQUEST, f"the greeting must be at most {GREETING_MAX} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in greeting.replace("\n", "")):
        raise ApiError(ErrorCode.BAD_REQUEST, "the greeting contains control characters")
    return greeting


class FriendsHandler:
    def __init__(self, storage: "Storage", router: "Router", presence: "Presence", rate_limits: "RateLimits",
                 replies: Replies) -> None:
        self.storage = storage
        self.router = router
        self.presence = presence
        self.rate_limits = rate_limits
        self.replies = replies

    def routes(self) -> Routes:
        return friends_routes(self.storage, self.router, self.presence, self.rate_limits, self.replies)


def friends_routes(storage: "Storage", router: "Router", presence: "Presence", rate_limits: "RateLimits",
                   replies: Replies) -> Routes:
    routes = Routes()
    handler = routes.handler

    def find_target(req: Request) -> User:
        body: messages.FriendRequest = req.body
        if body.user_id is not None:
            user = storage.get_user(body.user_id)
        elif body.phone is not None:
            user = storage.get_user_by_phone(normalize_phone(body.phone))
        else:
            raise ApiError(ErrorCode.BAD_REQUEST, "give user_id or phone")
        if user is None:
            raise ApiError(ErrorCode.USER_NOT_FOUND)
        return user

    def became_friends(a: User, b: User, elsewhere: set[int]) -> set[int]:
        """Reactor thread: both sides get FRIEND_ADDED_EVENT with the other's presence
        (``elsewhere``: ``presence.elsewhere`` of both, from the worker); returns who is online."""
        presence.friendship_added(a.id, b.id)
        online = presence.online_among((a.id, b.id), elsewhere)
        router.event_to_user(a.id, PacketType.FRIEND_ADDED_EVENT,
                             messages.FriendAddedEvent(friend=friend_view(b, b.id in online)))
        router.event_to_user(b.id, PacketType.FRIEND_ADDED_EVENT,
                             messages.FriendAddedEvent(friend=friend_view(a, a.id in online)))
        return online

    @handler(PacketType.USER_SEARCH, blocking=True)
    def user_search(req: Request) -> dict:
        rate_limits.user_search(req.user_id)
        phone = normalize_phone(req.body.phone)
        user = storage.get_user_by_phone(phone)
        if user is None:
            raise ApiError(ErrorCode.USER_NOT_FOUND)
        return {"user": user_view(user), "friend": storage.are_friends(req.user_id, user.id)}

    @handler(PacketType.FRIEND_REQUEST, blocking=True)
    def friend_request(req: Request) -> None:
        rate_limits.friend_request(req.user_id)
        greeting = normalize_greeting(req.body.greeting or "")
        target = find_target(req)
        if target.id == req.user_id:
            raise ApiError(ErrorCode.CANNOT_ADD_SELF)
        me = storage.get_user(req.user_id)
        try:
            outcome = storage.request_friend(req.user_id, target.id, greeting, now_ms())
        except FriendRefusal as exc:
            raise ApiError(_REFUSALS[exc.reason]) from None
        elsewhere = presence.elsewhere((me.id, target.id)) if outcome.status == "friends" else set()

        def finish() -> None:
            if outcome.status == "friends":
                log.info("%s and user %d asked each other: now friends", req.conn.who, target.id)
                online = became_friends(me, target, elsewhere)
                replies.send_result(req.conn, req.request_id, {
                    "status": "friends", "friend": friend_view(target, target.id in online)})
                return
            log.info("%s asked user %d for friendship (request %d)", req.conn.who, target.id, outcome.request.id)
            router.event_to_user(target.id, PacketType.FRIEND_REQUEST_EVENT,
                                 messages.FriendRequestEvent(request=request_view(outcome.request, me)))
            replies.send_result(req.conn, req.request_id,
                                {"status": "pending", "request": request_view(outcome.request, target)})
        req.on_reactor(finish)

    @handler(PacketType.FRIEND_ANSWER, blocking=True)
    def friend_answer(req: Request) -> None:
        request_id = req.body.request_id
        accept = req.body.accept
        try:
            request = storage.answer_friend_request(request_id, req.user_id, accept, now_ms())
        except FriendRefusal as exc:
            raise ApiError(_REFUSALS[exc.reason]) from None
        me, asker = storage.get_user(req.user_id), storage.get_user(request.from_id)
        elsewhere = presence.elsewhere((me.id, asker.id)) if accept and asker is not None else set()

        def finish() -> None:
            log.info("%s %s the friend request %d of user %d", req.conn.who,
                     "accepted" if accept else "refused", request_id, request.from_id)
            router.event_to_user(request.from_id, PacketType.FRIEND_ANSWER_EVENT,
                                 messages.FriendAnswerEvent(request_id=request_id, accepted=accept, user=user_view(me)))
            body: dict = {"request_id": request_id, "accepted": accept}
            if accept and asker is not None:
                online = became_friends(me, asker, elsewhere)
                body["friend"] = friend_view(asker, asker.id in online)
            replies.send_result(req.conn, req.request_id, body)
        req.on_reactor(finish)

    @handler(PacketType.FRIEND_REMOVE, blocking=True)
    def friend_remove(req: Request) -> None:
        other = req.body.user_id
        if not storage.remove_friendship(req.user_id, other):
            raise ApiError(ErrorCode.NOT_FRIENDS)

        def finish() -> None:
            log.info("%s removed friend %d", req.conn.who, other)
            presence.friendship_removed(req.user_id, other)
            router.event_to_user(req.user_id, PacketType.FRIEND_REMOVED_EVENT, messages.UserRef(user_id=other))
            router.event_to_user(other, PacketType.FRIEND_REMOVED_EVENT, messages.UserRef(user_id=req.user_id))
            replies.send_result(req.conn, req.request_id, {"user_id": other})
        req.on_reactor(finish)

    @handler(PacketType.FRIEND_LIST, blocking=True)
    def friend_list(req: Request) -> None:
        after = req.body.after or 0
        users = storage.friends_page(req.user_id, after, PAGE_ROWS)
        elsewhere = presence.elsewhere(u.id for u in users)     # Redis in a cluster: here, not on the reactor

        def finish() -> None:
            # "online": false is the longest form, so the page fits whatever the flags are
            page, cut = fit_page(users, lambda u: friend_view(u, False))
            online = presence.online_among((entry.id for entry in page), elsewhere)
            for entry in page:
                entry.online = entry.id in online
            more = cut or len(users) == PAGE_ROWS
            replies.send_result(req.conn, req.request_id, {"friends": page, "more": more,
                                                           "next": page[-1].id if page else after})
        req.on_reactor(finish)

    @handler(PacketType.FRIEND_REQUESTS, blocking=True)
    def friend_requests(req: Request) -> dict:
        body: messages.FriendRequests = req.body
        after = body.after or 0
        rows = storage.friend_requests_page(req.user_id, body.direction != "outgoing", after, PAGE_ROWS)
        page, cut = fit_page(rows, lambda row: request_view(*row))
        return {"requests": page, "more": cut or len(rows) == PAGE_ROWS,
                "next": page[-1].id if page else after}

    return routes
