"""The load-test scenarios. Each is a coroutine taking the process's Worker.

Both ends of a measured path live in the same process (a chat pair, a file pair, a meeting),
so every latency is one process's ``time.monotonic()`` difference, or for media the receive
time against the capture time in the frame (the same machine clock).
"""
from __future__ import annotations

from typing import Awaitable, Callable

from ..worker import Worker
from .chat import chat
from .connect import connect
from .files import files
from .room import room

SCENARIOS: dict[str, Callable[[Worker], Awaitable[None]]] = {
    "connect": connect,
    "chat": chat,
    "files": files,
    "room": room,
}
