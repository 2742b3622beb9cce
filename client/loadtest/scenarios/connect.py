"""`connect`: many idle clients, heartbeats answered."""
from __future__ import annotations

import asyncio

from ..sim import SimClient
from ..worker import Worker


async def connect(w: Worker) -> None:
    """N clients register and log in at the ramp rate, then idle with heartbeats for the
    duration. Measures login time, and heartbeat round trips while everyone is connected
    (``heartbeat_rtt``; those sent during the ramp count as ``heartbeat_rtt_ramp``)."""
    count = w.share(w.settings.clients)
    w.target = count
    w.phase = "logging in"
    keepers: list[asyncio.Task] = []

    def idle(_i: int, client: SimClient) -> None:
        keepers.append(asyncio.create_task(w.heartbeats(client)))

    await w.login_many(count, lambda i: f"idle{w.index}-{i}", on_ready=idle)
    await w.hold(w.settings.duration)
    await asyncio.gather(*keepers)
