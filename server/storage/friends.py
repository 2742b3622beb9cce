"""Friendships (stored in both directions) and friend requests."""
from __future__ import annotations

from .sql import Database


class FriendStore:
    db: Database

    def are_friends(self, user_id: int, other_id: int) -> bool:
        with self.db.tx() as cur:
            return cur.one("SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?", (user_id, other_id)) is not None

    def friend_ids(self, user_id: int) -> list[int]:
        with self.db.tx() as cur:
            return [int(r[0]) for r in cur.all("SELECT friend_id FROM friends WHERE user_id = ?", (user_id,))]

    def add_friendship(self, user_id: int, other_id: int, now_ms: int) -> None:
        """Make two users friends (idempotent) and drop any requests between them."""
        def work(cur) -> None:
            cur.execute("INSERT IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?)",
                        (user_id, other_id, now_ms))
            cur.execute("INSERT IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?)",
                        (other_id, user_id, now_ms))
            cur.execute("DELETE FROM friend_requests WHERE (from_id = ? AND to_id = ?) OR (from_id = ? AND to_id = ?)",
                        (user_id, other_id, other_id, user_id))
        self.db.run(work)

    def remove_friendship(self, user_id: int, other_id: int) -> bool:
        def work(cur) -> bool:
            cur.execute("DELETE FROM friends WHERE (user_id = ? AND friend_id = ?) OR (user_id = ? AND friend_id = ?)",
                        (user_id, other_id, other_id, user_id))
            return cur.rowcount > 0
        return self.db.run(work)
