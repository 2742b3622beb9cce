"""The user's own profile (nickname, signature, avatar) and avatar pictures of anyone.

Avatars are cached by (user id, version): a version only ever names one picture, so a cached
one never goes stale; PROFILE_CHANGED_EVENT brings the new version.
"""
from __future__ import annotations

import base64
import threading
from importlib import resources

from common import limits
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from common.validation import normalize_nickname, normalize_signature

from .events import EventKind
from .kernel_api import KernelApi

AVATAR_DIR = resources.files("client").joinpath("assets", "avatars")


def builtin_avatar_count() -> int:
    return sum(1 for item in AVATAR_DIR.iterdir() if item.name.endswith(".png"))


def builtin_avatar(number: int) -> bytes:
    """The PNG bytes of built-in avatar ``number`` (1-based)."""
    return AVATAR_DIR.joinpath(f"{number:02d}.png").read_bytes()


class ProfileClient:
    def __init__(self, kernel: KernelApi) -> None:
        self.kernel = kernel
        self._cache: dict[tuple[int, int], bytes] = {}
        self._lock = threading.Lock()

    # -- own profile ------------------------------------------------------------------------------
    def update(self, nickname: str | None = None, signature: str | None = None) -> dict:
        body: dict = {}
        if nickname is not None:
            body["nickname"] = normalize_nickname(nickname)
        if signature is not None:
            body["signature"] = normalize_signature(signature)
        return self._changed(self.kernel.request(PacketType.PROFILE_UPDATE, body))

    def choose_builtin_avatar(self, number: int) -> dict:
        return self._changed(self.kernel.request(PacketType.PROFILE_UPDATE, {"avatar_builtin": number}))

    def upload_avatar(self, picture: bytes) -> dict:
        """Send a PNG/JPEG/GIF/WebP picture; the server stores it as a 128x128 PNG."""
        if len(picture) > limits.MAX_AVATAR_BYTES:
            raise ApiError(ErrorCode.AVATAR_TOO_LARGE)
        reply = self.kernel.request(PacketType.AVATAR_UPLOAD, picture, timeout=max(30.0, self.kernel.request_timeout))
        return self._changed(reply)

    def _changed(self, reply: dict) -> dict:
        self.kernel.user = reply["user"]
        self.kernel.emit(EventKind.PROFILE_CHANGED, user=reply["user"])
        return reply["user"]

    # -- pictures -----------------------------------------------------------------------------------
    def avatar_png(self, user: dict) -> bytes:
        """The PNG to show for a User dict: its built-in avatar, its own picture (fetched once
        per version) or, if it chose nothing, a built-in one picked by its id."""
        avatar = user.get("avatar") or {}
        builtin, version = int(avatar.get("builtin", 0)), int(avatar.get("version", 0))
        if builtin > 0:
            return builtin_avatar(builtin)
        if version == 0:
            return builtin_avatar((int(user["id"]) - 1) % builtin_avatar_count() + 1)
        key = (int(user["id"]), version)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None:
            return cached
        reply = self.kernel.request(PacketType.AVATAR_GET, {"user_id": user["id"]})
        if reply.get("png") is None:
            return builtin_avatar(max(1, int(reply.get("builtin", 1))))
        png = base64.b64decode(reply["png"])
        with self._lock:
            self._cache[(int(user["id"]), int(reply["version"]))] = png
        return png
