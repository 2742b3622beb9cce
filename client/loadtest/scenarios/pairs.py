"""Pairs of friends, for the chat and files scenarios."""
from __future__ import annotations

import asyncio

from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from ..sim import SimClient, error_kind
from ..worker import Worker


async def befriend(w: Worker, a: SimClient, b: SimClient) -> bool:
    """Make two clients friends: a request each way makes them friends at once."""
    try:
        for asker, target in ((a, b), (b, a)):
            try:
                await asker.request(PacketType.FRIEND_REQUEST, {"user_id": target.user["id"]}, w.settings.timeout)
            except ApiError as exc:
                if exc.code != ErrorCode.ALREADY_FRIENDS:   # a rerun with the same --run-id
                    raise
        return True
    except Exception as exc:
        w.metrics.error(error_kind(exc))
        return False


async def log_in_pairs(w: Worker) -> list[tuple[SimClient, SimClient]]:
    """This process's share of pairs, logged in and befriended."""
    pairs = w.share(w.settings.clients // 2)
    w.target = 2 * pairs
    w.phase = "logging in"
    clients = await w.login_many(2 * pairs, lambda i: f"pair{w.index}-{i // 2}{'ab'[i % 2]}")
    w.phase = "befriending"
    candidates = [(clients[2 * k], clients[2 * k + 1]) for k in range(pairs)
                  if clients[2 * k] is not None and clients[2 * k + 1] is not None]
    ok = await asyncio.gather(*(befriend(w, a, b) for a, b in candidates))
    return [pair for pair, good in zip(candidates, ok) if good]
