"""Accounts and session tokens."""
from __future__ import annotations

from dataclasses import dataclass

from .sql import Database

USER_COLUMNS = "id, phone, nickname, signature, avatar_builtin, avatar_version"


@dataclass(frozen=True)
class User:
    id: int
    phone: str
    nickname: str
    signature: str
    avatar_builtin: int
    avatar_version: int


def user_from_row(row: tuple) -> User:
    return User(int(row[0]), row[1], row[2], row[3], int(row[4]), int(row[5]))


class AccountStore:
    db: Database

    def create_user(self, phone: str, password_hash: str, nickname: str, now_ms: int) -> User:
        """Raises DuplicateError if the phone number is taken."""
        def work(cur):
            cur.execute(
                "INSERT INTO users (phone, password_hash, nickname, signature, created_at) VALUES (?, ?, ?, '', ?)",
                (phone, password_hash, nickname, now_ms))
            return cur.lastrowid
        user_id = self.db.run(work)
        return User(user_id, phone, nickname, "", 0, 0)

    def get_user(self, user_id: int) -> User | None:
        with self.db.tx() as cur:
            row = cur.one(f"SELECT {USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return user_from_row(row) if row else None

    def get_user_by_phone(self, phone: str) -> User | None:
        with self.db.tx() as cur:
            row = cur.one(f"SELECT {USER_COLUMNS} FROM users WHERE phone = ?", (phone,))
        return user_from_row(row) if row else None

    def get_credentials(self, phone: str) -> tuple[User, str] | None:
        with self.db.tx() as cur:
            row = cur.one(f"SELECT {USER_COLUMNS}, password_hash FROM users WHERE phone = ?", (phone,))
        return (user_from_row(row), row[6]) if row else None

    def create_session(self, token_hash: str, user_id: int, address: str, now_ms: int, expires_ms: int) -> None:
        with self.db.tx() as cur:
            cur.execute(
                "INSERT INTO sessions (token_hash, user_id, address, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (token_hash, user_id, address, now_ms, expires_ms))

    def session_user(self, token_hash: str, now_ms: int) -> int | None:
        """The user of a live session token, or None if unknown or expired."""
        with self.db.tx() as cur:
            row = cur.one("SELECT user_id, expires_at FROM sessions WHERE token_hash = ?", (token_hash,))
            if row and int(row[1]) <= now_ms:
                cur.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))
                return None
        return int(row[0]) if row else None

    def has_session_from(self, user_id: int, address: str) -> bool:
        """True if the user holds a session token created by a login from ``address``."""
        with self.db.tx() as cur:
            return cur.one("SELECT 1 FROM sessions WHERE user_id = ? AND address = ? LIMIT 1",
                           (user_id, address)) is not None

    def delete_session(self, token_hash: str) -> None:
        with self.db.tx() as cur:
            cur.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    def delete_expired_sessions(self, now_ms: int) -> int:
        with self.db.tx() as cur:
            cur.execute("DELETE FROM sessions WHERE expires_at <= ?", (now_ms,))
            return cur.rowcount
