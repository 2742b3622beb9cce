"""Who is online: user id -> the connection holding the session.

Written only on the reactor thread; read from workers under a lock (presence lists at login).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from .connection import Connection


class Sessions:
    def __init__(self) -> None:
        self._by_user: dict[int, "Connection"] = {}
        self._lock = threading.Lock()

    def bind(self, user_id: int, conn: "Connection") -> "Connection | None":
        """Make ``conn`` the user's session; returns the session it replaces, if any."""
        with self._lock:
            old = self._by_user.get(user_id)
            self._by_user[user_id] = conn
        return old if old is not conn else None

    def unbind(self, user_id: int, conn: "Connection") -> bool:
        """Forget the session if ``conn`` still holds it; True if it did."""
        with self._lock:
            if self._by_user.get(user_id) is conn:
                del self._by_user[user_id]
                return True
        return False

    def get(self, user_id: int) -> "Connection | None":
        return self._by_user.get(user_id)

    def is_online(self, user_id: int) -> bool:
        return user_id in self._by_user

    def online_among(self, user_ids: Iterable[int]) -> set[int]:
        with self._lock:
            return {uid for uid in user_ids if uid in self._by_user}

    def snapshot(self) -> list[tuple[int, "Connection"]]:
        """Every (user id, connection) now (any thread)."""
        with self._lock:
            return list(self._by_user.items())

    def __len__(self) -> int:
        return len(self._by_user)
