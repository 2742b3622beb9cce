"""Meetings kept across a server restart: one row per live room (number, title, password hash,
host, lock, members), so the members can take their places back after a restart or a crash.

Rows are written by the room keeper (server/room_keeper.py) on its own thread; ``seen_at`` is
refreshed while the server runs, so after a crash a row older than the keep time is stale.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .sql import Database

ROOM_COLUMNS = "number, title, password_hash, host_id, locked, members, created_at, seen_at"


@dataclass(frozen=True)
class StoredRoom:
    number: str
    title: str
    password_hash: str
    host_id: int
    locked: bool
    members: tuple[tuple[int, str], ...]     # (user id, nickname) in join order
    created_at: int
    seen_at: int


def _row(room: StoredRoom) -> tuple:
    return (room.number, room.title, room.password_hash, room.host_id, int(room.locked),
            json.dumps([list(m) for m in room.members]), room.created_at, room.seen_at)


def _stored(row: tuple) -> StoredRoom:
    members = tuple((int(uid), str(name)) for uid, name in json.loads(row[5]))
    return StoredRoom(row[0], row[1], row[2], int(row[3]), bool(row[4]), members, int(row[6]), int(row[7]))


class RoomStore:
    db: Database

    def write_rooms(self, saved: list[StoredRoom], forgotten: list[str]) -> None:
        """Store these rooms (replacing their rows) and forget those, in one transaction."""
        def work(cur):
            for number in forgotten:
                cur.execute("DELETE FROM rooms WHERE number = ?", (number,))
            for room in saved:
                cur.execute(f"REPLACE INTO rooms ({ROOM_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row(room))
        self.db.run(work)

    def touch_rooms(self, numbers: list[str], seen_at: int) -> None:
        """The server still holds these rooms (so they are not stale after a crash)."""
        def work(cur):
            for number in numbers:
                cur.execute("UPDATE rooms SET seen_at = ? WHERE number = ?", (seen_at, number))
        self.db.run(work)

    def drop_stale_rooms(self, seen_since: int) -> int:
        """Delete the rooms not seen since ``seen_since`` (ms); returns how many."""
        def work(cur):
            return cur.execute("DELETE FROM rooms WHERE seen_at < ?", (seen_since,)).rowcount
        return self.db.run(work)

    def stored_rooms(self) -> list[StoredRoom]:
        def work(cur):
            return [_stored(r) for r in cur.all(f"SELECT {ROOM_COLUMNS} FROM rooms ORDER BY created_at")]
        return self.db.run(work)
