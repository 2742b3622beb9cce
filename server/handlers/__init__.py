"""Handlers, one module per domain. Each module's ``install(server)`` registers its packets;
the services they share (presence, rooms, the relay, the router) are built by server.app."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..app import Server


def install_all(server: "Server") -> None:
    from . import session
    session.install(server)
    from . import chat, friends, profile
    friends.install(server)
    profile.install(server)
    chat.install(server)
    from . import media, rooms
    rooms.install(server)
    media.install(server)
    from . import files
    files.install(server)
