"""One-to-one chat messages: storing (idempotent per sender and client message id), delivery
and read receipts, the unread backlog and history pages.

The ``*_tx`` functions take a cursor so the group-commit writer can run many of them in one
transaction; the methods read in their own transaction.
"""
from __future__ import annotations

from dataclasses import dataclass

from .friends import are_friends_tx
from .sql import Cursor, Database

MESSAGE_COLUMNS = "id, sender_id, recipient_id, client_msg_id, body, created_at, delivered_at, read_at"


@dataclass(frozen=True)
class Message:
    id: int
    sender_id: int
    recipient_id: int
    client_msg_id: str
    body: str
    created_at: int
    delivered_at: int | None
    read_at: int | None

    def to_wire(self) -> dict:
        return {"id": self.id, "from": self.sender_id, "to": self.recipient_id,
                "client_msg_id": self.client_msg_id, "text": self.body, "time": self.created_at,
                "delivered_at": self.delivered_at, "read_at": self.read_at}


def _message(row: tuple) -> Message:
    return Message(int(row[0]), int(row[1]), int(row[2]), row[3], row[4], int(row[5]),
                   None if row[6] is None else int(row[6]), None if row[7] is None else int(row[7]))


def find_sent_tx(cur: Cursor, sender_id: int, client_msg_id: str) -> Message | None:
    row = cur.one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND client_msg_id = ?",
                  (sender_id, client_msg_id))
    return _message(row) if row else None


def can_message_tx(cur: Cursor, sender_id: int, recipient_id: int) -> bool:
    return sender_id != recipient_id and are_friends_tx(cur, sender_id, recipient_id)


def insert_message_tx(cur: Cursor, sender_id: int, recipient_id: int, client_msg_id: str, body: str,
                      now_ms: int) -> tuple[Message, bool]:
    """Store a message unless this sender already sent this client message id.

    Returns (message, created): created is False for a repeat, which gets the stored one back.
    """
    cur.execute("INSERT IGNORE INTO messages (sender_id, recipient_id, client_msg_id, body, created_at) "
                "VALUES (?, ?, ?, ?, ?)", (sender_id, recipient_id, client_msg_id, body, now_ms))
    if cur.rowcount == 1:
        return Message(cur.lastrowid, sender_id, recipient_id, client_msg_id, body, now_ms, None, None), True
    existing = find_sent_tx(cur, sender_id, client_msg_id)
    assert existing is not None, "INSERT IGNORE skipped a row that does not exist"
    return existing, False


def mark_delivered_tx(cur: Cursor, recipient_id: int, ids: list[int], now_ms: int) -> list[tuple[int, int]]:
    """Mark the recipient's messages delivered; returns (id, sender id) of those newly marked."""
    if not ids:
        return []
    marks = ", ".join("?" for _ in ids)
    rows = cur.all(f"SELECT id, sender_id FROM messages WHERE recipient_id = ? AND delivered_at IS NULL "
                   f"AND id IN ({marks}) ORDER BY id", (recipient_id, *ids))
    if rows:
        found = [int(r[0]) for r in rows]
        cur.execute(f"UPDATE messages SET delivered_at = ? WHERE id IN ({', '.join('?' for _ in found)})",
                    (now_ms, *found))
    return [(int(r[0]), int(r[1])) for r in rows]


def mark_read_tx(cur: Cursor, reader_id: int, peer_id: int, up_to: int, now_ms: int) -> int:
    """Mark everything ``peer_id`` sent to ``reader_id`` up to id ``up_to`` read (and delivered);
    returns how many messages changed."""
    cur.execute("UPDATE messages SET read_at = ?, delivered_at = COALESCE(delivered_at, ?) "
                "WHERE sender_id = ? AND recipient_id = ? AND id <= ? AND read_at IS NULL",
                (now_ms, now_ms, peer_id, reader_id, up_to))
    return cur.rowcount


class MessageStore:
    db: Database

    def unread_page(self, recipient_id: int, after_id: int, limit: int) -> list[Message]:
        """Unread messages to the user with ids above ``after_id``, oldest first."""
        with self.db.tx() as cur:
            rows = cur.all(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE recipient_id = ? AND read_at IS NULL "
                           "AND id > ? ORDER BY id LIMIT ?", (recipient_id, after_id, limit))
        return [_message(r) for r in rows]

    def history_page(self, user_id: int, peer_id: int, before_id: int | None, limit: int) -> list[Message]:
        """The newest ``limit`` messages between the two users below ``before_id``, newest first."""
        before = before_id if before_id is not None else 2 ** 62
        query = (f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE sender_id = ? AND recipient_id = ? AND id < ? "
                 "ORDER BY id DESC LIMIT ?")
        with self.db.tx() as cur:
            rows = cur.all(query, (user_id, peer_id, before, limit)) + cur.all(query, (peer_id, user_id, before, limit))
        return sorted((_message(r) for r in rows), key=lambda m: m.id, reverse=True)[:limit]

    def get_message(self, message_id: int) -> Message | None:
        with self.db.tx() as cur:
            row = cur.one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (message_id,))
        return _message(row) if row else None

    def count_sent(self, sender_id: int, client_msg_id: str) -> int:
        with self.db.tx() as cur:
            row = cur.one("SELECT COUNT(*) FROM messages WHERE sender_id = ? AND client_msg_id = ?",
                          (sender_id, client_msg_id))
        return int(row[0])
