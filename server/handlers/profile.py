"""Profile: nickname, signature, built-in or uploaded avatar; friends see changes live."""
from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING

from common import messages
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from common.validation import normalize_nickname, normalize_signature

from ..avatars import normalize_avatar
from ..mediator import Request, Routes
from ..storage import User
from .views import avatar_view, user_view

if TYPE_CHECKING:
    from ..ratelimit import RateLimits
    from ..router import Router
    from ..storage import Storage

log = logging.getLogger("server.profile")


class ProfileHandler:
    def __init__(self, storage: "Storage", router: "Router", rate_limits: "RateLimits") -> None:
        self.storage = storage
        self.router = router
        self.rate_limits = rate_limits

    def routes(self) -> Routes:
        return profile_routes(self.storage, self.router, self.rate_limits)


def profile_routes(storage: "Storage", router: "Router", rate_limits: "RateLimits") -> Routes:
    routes = Routes()
    handler = routes.handler

    def changed(req: Request, user: User | None) -> dict:
        """Tell the user's friends (those online) and build the reply."""
        if user is None:
            raise ApiError(ErrorCode.USER_NOT_FOUND)
        if req.conn.user_id == user.id:
            req.on_reactor(setattr, req.conn, "nickname", user.nickname)
            req.on_reactor(setattr, req.conn, "avatar", messages.to_dict(avatar_view(user)))
        router.event_to_users(storage.friend_ids(user.id), PacketType.PROFILE_CHANGED_EVENT,
                              messages.UserEvent(user=user_view(user)))
        return {"user": user_view(user)}

    @handler(PacketType.PROFILE_UPDATE, blocking=True)
    def profile_update(req: Request) -> dict:
        rate_limits.profile_update(req.user_id)
        body: messages.ProfileUpdate = req.body
        nickname, signature, builtin = body.nickname, body.signature, body.avatar_builtin
        if nickname is None and signature is None and builtin is None:
            raise ApiError(ErrorCode.BAD_REQUEST, "nothing to change: give nickname, signature or avatar_builtin")
        if nickname is not None:
            nickname = normalize_nickname(nickname)
        if signature is not None:
            signature = normalize_signature(signature)
        user = None
        if nickname is not None or signature is not None:
            user = storage.update_profile(req.user_id, nickname, signature)
        if builtin is not None:
            user = storage.set_builtin_avatar(req.user_id, builtin)
        log.info("%s changed the profile", req.conn.who)
        return changed(req, user)

    @handler(PacketType.AVATAR_UPLOAD, blocking=True)
    def avatar_upload(req: Request) -> dict:
        rate_limits.profile_update(req.user_id)
        try:
            png = normalize_avatar(req.body)
        except ApiError as exc:
            log.info("%s avatar refused (%d bytes): %s %s", req.conn.who, len(req.body), exc.code.name, exc.message)
            raise
        user = storage.set_avatar_png(req.user_id, png)
        log.info("%s uploaded an avatar (%d bytes in, %d bytes stored)", req.conn.who, len(req.body), len(png))
        return changed(req, user)

    @handler(PacketType.AVATAR_GET, blocking=True)
    def avatar_get(req: Request) -> dict:
        avatar = storage.get_avatar(req.body.user_id)
        if avatar is None:
            raise ApiError(ErrorCode.USER_NOT_FOUND)
        png = base64.b64encode(avatar.png).decode("ascii") if avatar.png is not None else None
        return {"user_id": avatar.user_id, "builtin": avatar.builtin, "version": avatar.version, "png": png}

    return routes
