"""What the domain clients (chat, files, friends, profile, rooms) use of the kernel.

``ClientKernel`` builds them and hands itself over; they know it only as ``KernelApi``, so they
depend on this module and never on ``client/kernel.py``: the imports run one way, from the
kernel down to the domain clients and from them down to here.
"""
from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Callable, Protocol

from common import messages
from common.packets import PacketType

from .buffers import BufferPool
from .events import Event, EventKind, SessionState

Body = messages.Body | dict | bytes | None


class KernelApi(Protocol):
    request_timeout: float
    buffers: BufferPool                                  # large frame buffers (file chunks)
    session_hooks: list[Callable[[bool], None]]          # run on the task thread after (re)login
    user: dict | None                                    # the logged-in user (the profile replaces it)
    state: SessionState

    def add_listener(self, listener: Callable[[Event], None]) -> None: ...

    def emit(self, kind: EventKind, **data: Any) -> None: ...

    def on_packet(self, packet_type: PacketType, fn: Callable[[dict], None]) -> None: ...

    def on_binary(self, packet_type: PacketType, fn: Callable[[bytes], None]) -> None: ...

    def run_task(self, fn: Callable[..., Any], *args: Any) -> Future: ...

    def request_async(self, packet_type: PacketType, body: Body = None) -> Future: ...

    def request(self, packet_type: PacketType, body: Body = None, timeout: float | None = None) -> dict: ...

    def send(self, packet_type: PacketType, body: Body = None) -> bool: ...

    def send_frame(self, data: bytes | bytearray, recycle: bool = False) -> bool: ...

    def wait_for_room(self, limit: int, timeout: float) -> bool: ...

    @property
    def queued_bytes(self) -> int: ...

    @property
    def running(self) -> bool: ...
