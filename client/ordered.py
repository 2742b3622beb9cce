"""Applying a reply in stream order with the events around it.

Replies resolve futures on the network thread, the same thread that handles event packets, in
the order the server sent them. A reply applied by the thread that waited for it could land
after a newer event and overwrite it (a friend list saying "online" after FRIEND_OFFLINE).
``request_in_order`` applies the reply in a future callback instead, so it runs exactly where
the reply sits in the stream; the lock covers the moment between sending and attaching it.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from common.packets import PacketType

from .kernel_api import KernelApi

log = logging.getLogger("client")


def request_in_order(kernel: KernelApi, lock: threading.RLock, packet_type: PacketType,
                     body: dict | bytes | None, apply: Callable[[dict], None]) -> Future:
    """Send a request; ``apply(reply)`` runs under ``lock`` in stream order (not on failure)."""
    def done(future: Future) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        with lock:
            try:
                apply(future.result())
            except Exception:
                log.exception("applying the reply to %s failed", packet_type.name)

    with lock:
        future = kernel.request_async(packet_type, body)
        future.add_done_callback(done)
    return future


def wait(kernel: KernelApi, future: Future, timeout: float | None = None) -> dict:
    """The reply of a future from ``request_in_order``; raises like ``ClientKernel.request``."""
    try:
        return future.result(timeout or kernel.request_timeout)
    except FutureTimeout:
        raise TimeoutError(f"no answer within {timeout or kernel.request_timeout} s") from None
