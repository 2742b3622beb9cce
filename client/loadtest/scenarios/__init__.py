"""The load-test scenarios. Each is a coroutine taking the process's Worker; whoever starts
the processes picks one here by name (``runner.run``).

Both ends of a measured path live in the same process (a chat pair, a file pair, a meeting),
so every latency is one process's ``time.monotonic()`` difference, or for media the receive
time against the capture time in the frame (the same machine clock).
"""
from __future__ import annotations

from ..worker import Scenario
from .chat import chat
from .connect import connect
from .files import files
from .room import room

SCENARIOS: dict[str, Scenario] = {
    "connect": connect,
    "chat": chat,
    "files": files,
    "room": room,
}
