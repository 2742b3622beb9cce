"""Handlers, one module per domain. Each module's ``install(server)`` registers its packets."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import Server


def install_all(server: "Server") -> None:
    from . import session
    session.install(server)
    from . import chat, friends, profile
    friends.install(server)   # first: creates server.presence, used by chat
    profile.install(server)
    chat.install(server)
    from . import media, rooms
    rooms.install(server)
    media.install(server)   # after rooms: the relay follows room membership
    from . import files
    files.install(server)
