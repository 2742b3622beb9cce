"""Writes the rooms to the database so a meeting survives a server restart or crash.

The room registry lives on the reactor thread and must never wait for the database; it hands
each change here (``save(snapshot)`` / ``forget(number)``), and one writer thread stores them in
order. Changes to the same room that pile up while a write runs are coalesced: only the newest
snapshot of a room is written. While the server runs, ``seen_at`` of every live room is
refreshed every ``keep / 4`` seconds, so after a crash a row older than ``keep`` is known to be
stale (docs/PROTOCOL.md, "Meetings across a restart").
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from .storage import Storage, StoredRoom

log = logging.getLogger("server.rooms")


class RoomKeeper:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._pending: dict[str, StoredRoom | None] = {}     # number -> newest snapshot, None: forget
        self._scheduled = False
        self._closed = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="room-keeper")

    def save(self, room: StoredRoom) -> None:
        self._put(room.number, room)

    def forget(self, number: str) -> None:
        self._put(number, None)

    def touch(self, numbers: list[str], seen_at: int) -> None:
        if numbers and not self._closed:
            self._writer.submit(self._run, self.storage.touch_rooms, numbers, seen_at)

    def take(self, seen_since: int) -> list[StoredRoom]:
        """At start (blocking, once): the rooms worth restoring; the stale ones are deleted."""
        dropped = self.storage.drop_stale_rooms(seen_since)
        if dropped:
            log.info("forgot %d meeting rooms not seen for longer than room_keep", dropped)
        return self.storage.stored_rooms()

    def close(self) -> None:
        """Write what is pending and stop (the server is stopping; storage closes after this)."""
        with self._lock:
            self._closed = True
        self._writer.shutdown(wait=True)
        self._flush()

    def _put(self, number: str, room: StoredRoom | None) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending[number] = room
            if self._scheduled:
                return
            self._scheduled = True
        self._writer.submit(self._flush)

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._scheduled = False
        if pending:
            self._run(self.storage.write_rooms, [r for r in pending.values() if r is not None],
                      [n for n, r in pending.items() if r is None])

    @staticmethod
    def _run(fn, *args) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("storing the meeting rooms failed (they may not survive a restart)")
