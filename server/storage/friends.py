"""Friendships (stored in both directions) and friend requests.

Writes that depend on what the other side did (a request crossing one the other way, an answer
racing a removal) start with ``_lock_pair``: a no-op UPDATE of both user rows. It takes the
write lock at once (the whole database on SQLite, the two rows in primary-key order on MySQL),
so two such transactions on the same pair run one after the other and the second one reads
what the first one wrote.
"""
from __future__ import annotations

from dataclasses import dataclass

from .accounts import USER_COLUMNS, User, user_from_row
from .sql import Cursor, Database

_USER_COLUMNS_U = ", ".join(f"u.{c.strip()}" for c in USER_COLUMNS.split(","))


@dataclass(frozen=True)
class FriendRequest:
    id: int
    from_id: int
    to_id: int
    greeting: str
    created_at: int


@dataclass(frozen=True)
class RequestOutcome:
    """What ``request_friend`` did: ``"pending"`` (a request was stored) or ``"friends"``
    (the other side had asked too, so the two are now friends)."""
    status: str
    request: FriendRequest | None


class FriendRefusal(Exception):
    """A friend operation that the current state does not allow; ``reason`` names which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason  # "already_friends", "pending", "no_such_request", "not_friends"


def _lock_pair(cur: Cursor, a: int, b: int) -> None:
    cur.execute("UPDATE users SET id = id WHERE id IN (?, ?)", (a, b))


def are_friends_tx(cur: Cursor, a: int, b: int) -> bool:
    return cur.one("SELECT 1 FROM friends WHERE user_id = ? AND friend_id = ?", (a, b)) is not None


def _request_between(cur: Cursor, from_id: int, to_id: int) -> FriendRequest | None:
    row = cur.one("SELECT id, from_id, to_id, greeting, created_at FROM friend_requests "
                  "WHERE from_id = ? AND to_id = ?", (from_id, to_id))
    return _request_from_row(row) if row else None


def _request_from_row(row: tuple) -> FriendRequest:
    return FriendRequest(int(row[0]), int(row[1]), int(row[2]), row[3], int(row[4]))


def _befriend(cur: Cursor, a: int, b: int, now_ms: int) -> None:
    cur.execute("INSERT IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?)", (a, b, now_ms))
    cur.execute("INSERT IGNORE INTO friends (user_id, friend_id, created_at) VALUES (?, ?, ?)", (b, a, now_ms))
    cur.execute("DELETE FROM friend_requests WHERE (from_id = ? AND to_id = ?) OR (from_id = ? AND to_id = ?)",
                (a, b, b, a))


class FriendStore:
    db: Database

    def are_friends(self, user_id: int, other_id: int) -> bool:
        with self.db.tx() as cur:
            return are_friends_tx(cur, user_id, other_id)

    def friend_ids(self, user_id: int) -> list[int]:
        with self.db.tx() as cur:
            return [int(r[0]) for r in cur.all("SELECT friend_id FROM friends WHERE user_id = ?", (user_id,))]

    def friends_page(self, user_id: int, after_id: int, limit: int) -> list[User]:
        """The user's friends with ids above ``after_id``, by id."""
        with self.db.tx() as cur:
            rows = cur.all(f"SELECT {_USER_COLUMNS_U} FROM friends f JOIN users u ON u.id = f.friend_id "
                           "WHERE f.user_id = ? AND f.friend_id > ? ORDER BY f.friend_id LIMIT ?",
                           (user_id, after_id, limit))
        return [user_from_row(r) for r in rows]

    def add_friendship(self, user_id: int, other_id: int, now_ms: int) -> None:
        """Make two users friends (idempotent) and drop any requests between them."""
        self.db.run(lambda cur: _befriend(cur, user_id, other_id, now_ms))

    def remove_friendship(self, user_id: int, other_id: int) -> bool:
        def work(cur) -> bool:
            cur.execute("DELETE FROM friends WHERE (user_id = ? AND friend_id = ?) OR (user_id = ? AND friend_id = ?)",
                        (user_id, other_id, other_id, user_id))
            return cur.rowcount > 0
        return self.db.run(work)

    def request_friend(self, from_id: int, to_id: int, greeting: str, now_ms: int) -> RequestOutcome:
        """Ask ``to_id`` for friendship. A request already waiting the other way makes the two
        friends at once. Raises FriendRefusal("already_friends" | "pending")."""
        def work(cur: Cursor) -> RequestOutcome:
            _lock_pair(cur, from_id, to_id)
            if are_friends_tx(cur, from_id, to_id):
                raise FriendRefusal("already_friends")
            if _request_between(cur, from_id, to_id) is not None:
                raise FriendRefusal("pending")
            if _request_between(cur, to_id, from_id) is not None:
                _befriend(cur, from_id, to_id, now_ms)
                return RequestOutcome("friends", None)
            cur.execute("INSERT INTO friend_requests (from_id, to_id, greeting, created_at) VALUES (?, ?, ?, ?)",
                        (from_id, to_id, greeting, now_ms))
            return RequestOutcome("pending", FriendRequest(cur.lastrowid, from_id, to_id, greeting, now_ms))
        return self.db.run(work)

    def answer_friend_request(self, request_id: int, to_id: int, accept: bool, now_ms: int) -> FriendRequest:
        """Accept or refuse a request addressed to ``to_id``; the request is gone afterwards.
        Raises FriendRefusal("no_such_request")."""
        with self.db.tx() as cur:
            row = cur.one("SELECT from_id FROM friend_requests WHERE id = ? AND to_id = ?", (request_id, to_id))
        if row is None:
            raise FriendRefusal("no_such_request")
        from_id = int(row[0])

        def work(cur: Cursor) -> FriendRequest:
            # Lock first, then read again: on MySQL the snapshot starts at the first read.
            _lock_pair(cur, from_id, to_id)
            found = cur.one("SELECT id, from_id, to_id, greeting, created_at FROM friend_requests "
                            "WHERE id = ? AND to_id = ?", (request_id, to_id))
            if found is None:
                raise FriendRefusal("no_such_request")
            request = _request_from_row(found)
            if accept:
                _befriend(cur, request.from_id, to_id, now_ms)
            else:
                cur.execute("DELETE FROM friend_requests WHERE id = ?", (request_id,))
            return request
        return self.db.run(work)

    def friend_requests_page(self, user_id: int, incoming: bool, after_id: int,
                             limit: int) -> list[tuple[FriendRequest, User]]:
        """Pending requests to (incoming) or from the user, oldest first, each with the other
        user's profile."""
        mine, other = ("to_id", "from_id") if incoming else ("from_id", "to_id")
        with self.db.tx() as cur:
            rows = cur.all(
                f"SELECT r.id, r.from_id, r.to_id, r.greeting, r.created_at, {_USER_COLUMNS_U} "
                f"FROM friend_requests r JOIN users u ON u.id = r.{other} "
                f"WHERE r.{mine} = ? AND r.id > ? ORDER BY r.id LIMIT ?", (user_id, after_id, limit))
        return [(_request_from_row(r[:5]), user_from_row(r[5:])) for r in rows]
