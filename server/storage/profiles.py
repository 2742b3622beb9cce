"""Profiles: nickname, signature and avatar (a built-in number or the user's own picture)."""
from __future__ import annotations

from dataclasses import dataclass

from .accounts import USER_COLUMNS, User, user_from_row
from .sql import Cursor, Database


@dataclass(frozen=True)
class Avatar:
    user_id: int
    builtin: int      # 1..n: a built-in picture; 0: the user's own picture (if version > 0) or none
    version: int      # bumped on every change, so clients can cache by (user id, version)
    png: bytes | None


def _user(cur: Cursor, user_id: int) -> User | None:
    row = cur.one(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
    return user_from_row(row) if row else None


class ProfileStore:
    db: Database

    def update_profile(self, user_id: int, nickname: str | None = None,
                       signature: str | None = None) -> User | None:
        """Change the given fields; returns the updated user (None if unknown)."""
        def work(cur: Cursor) -> User | None:
            if nickname is not None:
                cur.execute("UPDATE users SET nickname = ? WHERE id = ?", (nickname, user_id))
            if signature is not None:
                cur.execute("UPDATE users SET signature = ? WHERE id = ?", (signature, user_id))
            return _user(cur, user_id)
        return self.db.run(work)

    def set_builtin_avatar(self, user_id: int, number: int) -> User | None:
        """Use built-in avatar ``number``; forgets any uploaded picture and bumps the version."""
        def work(cur: Cursor) -> User | None:
            cur.execute("UPDATE users SET avatar_builtin = ?, avatar_png = NULL, "
                        "avatar_version = avatar_version + 1 WHERE id = ?", (number, user_id))
            return _user(cur, user_id)
        return self.db.run(work)

    def set_avatar_png(self, user_id: int, png: bytes) -> User | None:
        """Store the user's own (already checked and scaled) picture and bump the version."""
        def work(cur: Cursor) -> User | None:
            cur.execute("UPDATE users SET avatar_builtin = 0, avatar_png = ?, "
                        "avatar_version = avatar_version + 1 WHERE id = ?", (png, user_id))
            return _user(cur, user_id)
        return self.db.run(work)

    def get_avatar(self, user_id: int) -> Avatar | None:
        with self.db.tx() as cur:
            row = cur.one("SELECT avatar_builtin, avatar_version, avatar_png FROM users WHERE id = ?", (user_id,))
        if row is None:
            return None
        return Avatar(user_id, int(row[0]), int(row[1]), bytes(row[2]) if row[2] is not None else None)
