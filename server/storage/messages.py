"""One-to-one chat messages: storing (idempotent per sender and client message id), delivery
and read receipts, the unread backlog and history pages.

The ``*_tx`` functions take a cursor so the group-commit writer can run many of them in one
transaction; the methods read in their own transaction.
"""
from __future__ import annotations

from dataclasses import dataclass

from .sql import Cursor, Database

MESSAGE_COLUMNS = "id, sender_id, recipient_id, client_msg_id, body, created_at, delivered_at, read_at"
# Reads that may meet a file message join its transfer, whose state the message shows.
SHOWN_COLUMNS = ("m.id, m.sender_id, m.recipient_id, m.client_msg_id, m.body, m.created_at, m.delivered_at, "
                 "m.read_at, f.id, f.name, f.size, f.state")
SHOWN_FROM = "messages m LEFT JOIN files f ON f.id = m.file_id"


@dataclass(frozen=True)
class FileRef:
    """The file a file message stands for, as its transfer is now."""
    transfer_id: str
    name: str
    size: int
    state: str


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
    file: FileRef | None = None


def _message(row: tuple) -> Message:
    file = FileRef(row[8], row[9], int(row[10]), row[11]) if len(row) > 8 and row[8] is not None else None
    return Message(int(row[0]), int(row[1]), int(row[2]), row[3], row[4], int(row[5]),
                   None if row[6] is None else int(row[6]), None if row[7] is None else int(row[7]), file)


# Conditions per statement: SQLite builds older than 3.32 allow only 999 parameters.
LOOKUP_CHUNK = 200
INSERT_CHUNK = 100


@dataclass(frozen=True)
class NewMessage:
    sender_id: int
    recipient_id: int
    client_msg_id: str
    body: str
    known_friends: bool = False   # the caller already knows the two are friends (skip the check)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def find_sent_tx(cur: Cursor, keys: list[tuple[int, str]]) -> dict[tuple[int, str], Message]:
    """Stored messages by (sender id, client message id)."""
    found: dict[tuple[int, str], Message] = {}
    for chunk in _chunks(keys, LOOKUP_CHUNK):
        placeholders = " OR ".join("(sender_id = ? AND client_msg_id = ?)" for _ in chunk)
        for row in cur.all(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {placeholders}",
                           tuple(v for key in chunk for v in key)):
            message = _message(row)
            found[(message.sender_id, message.client_msg_id)] = message
    return found


def friend_pairs_tx(cur: Cursor, pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """Which of the (user, other) pairs are friends."""
    found: set[tuple[int, int]] = set()
    for chunk in _chunks(pairs, LOOKUP_CHUNK):
        placeholders = " OR ".join("(user_id = ? AND friend_id = ?)" for _ in chunk)
        rows = cur.all(f"SELECT user_id, friend_id FROM friends WHERE {placeholders}",
                       tuple(v for p in chunk for v in p))
        found.update((int(r[0]), int(r[1])) for r in rows)
    return found


def store_messages_tx(cur: Cursor, items: list[NewMessage], now_ms: int) -> list[tuple[Message, bool] | None]:
    """Store a batch of messages with a handful of statements; one result per item, in order:
    ``(message, created)``, where a repeat of a client message id gets the stored message with
    created False (even if the two are no longer friends), or None if the sender may not
    write to the recipient (not friends, or itself)."""
    keys = [(item.sender_id, item.client_msg_id) for item in items]
    to_check = {(item.sender_id, item.recipient_id) for item in items
                if not item.known_friends and item.sender_id != item.recipient_id}
    friends = friend_pairs_tx(cur, sorted(to_check)) if to_check else set()
    allowed: dict[tuple[int, str], NewMessage] = {}    # first item of each key the sender may write
    for item, key in zip(items, keys):
        if key not in allowed and item.sender_id != item.recipient_id and \
                (item.known_friends or (item.sender_id, item.recipient_id) in friends):
            allowed[key] = item
    if cur.insert_returning:
        # Insert first: the common batch (no repeats) is then one statement. What it did not
        # insert is a repeat (or refused), looked up afterwards.
        inserted = _insert_returning_tx(cur, allowed, now_ms)
        existing = find_sent_tx(cur, [key for key in dict.fromkeys(keys) if key not in inserted])
    else:
        existing = find_sent_tx(cur, list(dict.fromkeys(keys)))
        to_insert = [key for key in allowed if key not in existing]
        _insert_tx(cur, [allowed[key] for key in to_insert], now_ms)
        inserted = find_sent_tx(cur, to_insert) if to_insert else {}
    results: list[tuple[Message, bool] | None] = []
    answered: set[tuple[int, str]] = set()
    for key in keys:
        if key in existing:
            results.append((existing[key], False))
        elif key in inserted:
            results.append((inserted[key], key not in answered))   # a repeat within the batch: not created
            answered.add(key)
        else:
            results.append(None)
    return results


def _insert_tx(cur: Cursor, items: list[NewMessage], now_ms: int, returning: str = "") -> list[tuple]:
    """INSERT IGNORE the messages, in order; the rows of ``returning`` (columns) if given."""
    rows: list[tuple] = []
    for chunk in _chunks(items, INSERT_CHUNK):
        placeholders = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
        query = (f"INSERT IGNORE INTO messages (sender_id, recipient_id, client_msg_id, body, created_at) "
                 f"VALUES {placeholders}")
        params = tuple(v for m in chunk for v in (m.sender_id, m.recipient_id, m.client_msg_id, m.body, now_ms))
        if returning:
            rows += cur.all(f"{query} RETURNING {returning}", params)
        else:
            cur.execute(query, params)
    return rows


def _insert_returning_tx(cur: Cursor, items: dict[tuple[int, str], NewMessage],
                         now_ms: int) -> dict[tuple[int, str], Message]:
    """Insert the messages not stored yet and return those, by key, without reading them back."""
    found: dict[tuple[int, str], Message] = {}
    for message_id, sender_id, client_msg_id in _insert_tx(cur, list(items.values()), now_ms,
                                                           returning="id, sender_id, client_msg_id"):
        key = (int(sender_id), client_msg_id)
        item = items[key]
        found[key] = Message(int(message_id), item.sender_id, item.recipient_id, item.client_msg_id, item.body,
                             now_ms, None, None)
    return found


def insert_file_message_tx(cur: Cursor, sender_id: int, recipient_id: int, file_id: str, name: str,
                           now_ms: int) -> int:
    """Store the chat message that stands for a file offered in the conversation; its id."""
    cur.execute("INSERT INTO messages (sender_id, recipient_id, client_msg_id, body, created_at, file_id) "
                "VALUES (?, ?, ?, ?, ?, ?)", (sender_id, recipient_id, f"file:{file_id}", name, now_ms, file_id))
    return cur.lastrowid


def mark_delivered_tx(cur: Cursor, items: list[tuple[int, list[int]]], now_ms: int) -> list[list[tuple[int, int]]]:
    """For each (recipient id, message ids): mark those of its messages delivered that were not
    yet; returns per item the (message id, sender id) pairs newly marked."""
    wanted = sorted({message_id for _, ids in items for message_id in ids})
    pending: dict[int, tuple[int, int]] = {}     # message id -> (sender, recipient), not yet delivered
    for chunk in _chunks(wanted, LOOKUP_CHUNK * 2):
        rows = cur.all(f"SELECT id, sender_id, recipient_id FROM messages WHERE delivered_at IS NULL "
                       f"AND id IN ({', '.join('?' for _ in chunk)})", tuple(chunk))
        pending.update((int(r[0]), (int(r[1]), int(r[2]))) for r in rows)
    results: list[list[tuple[int, int]]] = []
    marked: set[int] = set()
    for recipient_id, ids in items:
        mine = [(i, pending[i][0]) for i in sorted(set(ids))
                if i in pending and pending[i][1] == recipient_id and i not in marked]
        marked.update(i for i, _ in mine)
        results.append(mine)
    for chunk in _chunks(sorted(marked), LOOKUP_CHUNK * 2):
        cur.execute(f"UPDATE messages SET delivered_at = ? WHERE id IN ({', '.join('?' for _ in chunk)})",
                    (now_ms, *chunk))
    return results


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
            rows = cur.all(f"SELECT {SHOWN_COLUMNS} FROM {SHOWN_FROM} WHERE m.recipient_id = ? "
                           "AND m.read_at IS NULL AND m.id > ? ORDER BY m.id LIMIT ?", (recipient_id, after_id, limit))
        return [_message(r) for r in rows]

    def undelivered_since(self, recipient_ids: list[int], since_ms: int, limit: int) -> list[Message]:
        """Messages to any of these users never delivered and sent since ``since_ms``, oldest
        first, at most ``limit`` per chunk of users (a cluster node catching its users up on
        the events Redis lost)."""
        found: list[Message] = []
        with self.db.tx() as cur:
            for chunk in _chunks(recipient_ids, 500):
                rows = cur.all(f"SELECT {SHOWN_COLUMNS} FROM {SHOWN_FROM} WHERE m.recipient_id IN "
                               f"({', '.join('?' for _ in chunk)}) AND m.read_at IS NULL AND m.delivered_at IS NULL "
                               "AND m.created_at >= ? ORDER BY m.id LIMIT ?", (*chunk, since_ms, limit))
                found += [_message(r) for r in rows]
        return found

    def history_page(self, user_id: int, peer_id: int, before_id: int | None, limit: int) -> list[Message]:
        """The newest ``limit`` messages between the two users below ``before_id``, newest first."""
        before = before_id if before_id is not None else 2 ** 62
        query = (f"SELECT {SHOWN_COLUMNS} FROM {SHOWN_FROM} WHERE m.sender_id = ? AND m.recipient_id = ? "
                 "AND m.id < ? ORDER BY m.id DESC LIMIT ?")
        with self.db.tx() as cur:
            rows = cur.all(query, (user_id, peer_id, before, limit)) + cur.all(query, (peer_id, user_id, before, limit))
        return sorted((_message(r) for r in rows), key=lambda m: m.id, reverse=True)[:limit]

    def get_message(self, message_id: int) -> Message | None:
        with self.db.tx() as cur:
            row = cur.one(f"SELECT {SHOWN_COLUMNS} FROM {SHOWN_FROM} WHERE m.id = ?", (message_id,))
        return _message(row) if row else None
