"""File transfers: one row per offer, live or spooled, kept after the end as its outcome.

States: a live transfer goes ``offered`` → ``sending``; a spooled one ``uploading`` →
``spooled``; both end in ``done``, ``declined``, ``cancelled``, ``failed`` or ``expired``.
"""
from __future__ import annotations

from dataclasses import dataclass

from common.messages import TransferState

from .messages import insert_file_message_tx
from .sql import Database

FILE_COLUMNS = "id, sender_id, recipient_id, name, size, sha256, state, spooled_bytes, created_at, expires_at"
LIVE_STATES = (TransferState.OFFERED, TransferState.SENDING)
SPOOL_STATES = (TransferState.UPLOADING, TransferState.SPOOLED)
OPEN_STATES = LIVE_STATES + SPOOL_STATES
FINAL_STATES = (TransferState.DONE, TransferState.DECLINED, TransferState.CANCELLED, TransferState.FAILED,
                TransferState.EXPIRED)


@dataclass(frozen=True)
class FileRecord:
    id: str
    sender_id: int
    recipient_id: int
    name: str
    size: int
    sha256: str
    state: str
    spooled_bytes: int
    created_at: int
    expires_at: int

    @property
    def spooled(self) -> bool:
        return self.state in SPOOL_STATES


class SpoolQuotaExceeded(Exception):
    """An upload to the spool would pass a quota: the sender's (``per_user``) or everybody's."""

    def __init__(self, reserved: int, limit: int, per_user: bool) -> None:
        super().__init__(f"{reserved} of {limit} bytes reserved")
        self.reserved = reserved
        self.limit = limit
        self.per_user = per_user


def _record(row: tuple) -> FileRecord:
    return FileRecord(row[0], int(row[1]), int(row[2]), row[3], int(row[4]), row[5], row[6], int(row[7]),
                      int(row[8]), int(row[9]))


def _in(states: tuple[str, ...]) -> str:
    return "(" + ", ".join("?" for _ in states) + ")"


class FileStore:
    db: Database

    def create_file(self, record: FileRecord) -> int:
        """Store a new transfer and, in the same transaction, the chat message that shows it in
        the conversation of both users; returns that message's id."""
        with self.db.tx() as cur:
            return _insert_file_tx(cur, record)

    def create_spool_file(self, record: FileRecord, user_quota: int, quota: int) -> int:
        """``create_file`` for an upload to the spool, if the sender's files in the spool and
        everybody's stay within ``user_quota`` and ``quota`` with it (raises SpoolQuotaExceeded).

        The check and the insert are one transaction. With MySQL it first locks one row (the
        schema version in ``meta``), so the reservations of every server process and machine
        sharing the database are taken one at a time and two cannot both take the last room;
        SQLite serves one process, whose ``Spool`` lock does the same."""
        with self.db.tx() as cur:
            if self.db.dialect.name == "mysql":
                cur.one("SELECT value FROM meta WHERE name = ? FOR UPDATE", ("schema_version",))
            mine = _reserved_tx(cur, record.sender_id)
            if mine + record.size > user_quota:
                raise SpoolQuotaExceeded(mine, user_quota, per_user=True)
            everybody = _reserved_tx(cur, None)
            if everybody + record.size > quota:
                raise SpoolQuotaExceeded(everybody, quota, per_user=False)
            return _insert_file_tx(cur, record)

    def get_file(self, file_id: str) -> FileRecord | None:
        with self.db.tx() as cur:
            row = cur.one(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ?", (file_id,))
        return _record(row) if row else None

    def set_file_state(self, file_id: str, state: str, only_from: tuple[str, ...] = OPEN_STATES,
                       spooled_bytes: int | None = None) -> bool:
        """Move a transfer to ``state`` if it is in one of ``only_from``; True if it moved."""
        def work(cur) -> bool:
            if spooled_bytes is None:
                cur.execute(f"UPDATE files SET state = ? WHERE id = ? AND state IN {_in(only_from)}",
                            (state, file_id, *only_from))
            else:
                cur.execute(f"UPDATE files SET state = ?, spooled_bytes = ? WHERE id = ? AND state IN "
                            f"{_in(only_from)}", (state, spooled_bytes, file_id, *only_from))
            return cur.rowcount > 0
        return self.db.run(work)

    def open_files_of(self, user_id: int, after: FileRecord | None = None, limit: int = 1000) -> list[FileRecord]:
        """Unfinished transfers the user sends or receives, oldest first; a page of at most
        ``limit`` that starts after the transfer ``after``."""
        created, file_id = (after.created_at, after.id) if after is not None else (-1, "")
        with self.db.tx() as cur:
            rows = cur.all(f"SELECT {FILE_COLUMNS} FROM files WHERE (sender_id = ? OR recipient_id = ?) "
                           f"AND state IN {_in(OPEN_STATES)} AND (created_at > ? OR (created_at = ? AND id > ?)) "
                           "ORDER BY created_at, id LIMIT ?",
                           (user_id, user_id, *OPEN_STATES, created, created, file_id, limit))
        return [_record(r) for r in rows]

    def spool_reserved_bytes(self, sender_id: int | None = None) -> int:
        """Bytes the spool holds or has promised to uploads in progress (of one sender's files
        if ``sender_id`` is given)."""
        with self.db.tx() as cur:
            return _reserved_tx(cur, sender_id)

    def spool_file_ids(self) -> set[str]:
        with self.db.tx() as cur:
            rows = cur.all(f"SELECT id FROM files WHERE state IN {_in(SPOOL_STATES)}", SPOOL_STATES)
        return {r[0] for r in rows}

    def expired_spool_files(self, now_ms: int) -> list[FileRecord]:
        with self.db.tx() as cur:
            rows = cur.all(f"SELECT {FILE_COLUMNS} FROM files WHERE state IN {_in(SPOOL_STATES)} "
                           f"AND expires_at < ?", (*SPOOL_STATES, now_ms))
        return [_record(r) for r in rows]

    def expired_live_files(self, now_ms: int) -> list[FileRecord]:
        """Live transfers past their time (``expires_at``, as for the spool): in a cluster
        nobody takes up a live transfer whose two users never came back."""
        with self.db.tx() as cur:
            rows = cur.all(f"SELECT {FILE_COLUMNS} FROM files WHERE state IN {_in(LIVE_STATES)} "
                           f"AND expires_at < ?", (*LIVE_STATES, now_ms))
        return [_record(r) for r in rows]

    def live_files(self) -> list[FileRecord]:
        """Live transfers (offered, or sending to an online recipient), oldest first: at start-up
        the server takes them up again so both sides can resume after a restart."""
        with self.db.tx() as cur:
            rows = cur.all(f"SELECT {FILE_COLUMNS} FROM files WHERE state IN {_in(LIVE_STATES)} "
                           f"ORDER BY created_at, id", LIVE_STATES)
        return [_record(r) for r in rows]


def _insert_file_tx(cur, record: FileRecord) -> int:
    cur.execute(f"INSERT INTO files ({FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.sender_id, record.recipient_id, record.name, record.size,
                 record.sha256, record.state, record.spooled_bytes, record.created_at, record.expires_at))
    return insert_file_message_tx(cur, record.sender_id, record.recipient_id, record.id, record.name,
                                  record.created_at)


def _reserved_tx(cur, sender_id: int | None) -> int:
    query = f"SELECT COALESCE(SUM(size), 0) FROM files WHERE state IN {_in(SPOOL_STATES)}"
    params: tuple = SPOOL_STATES
    if sender_id is not None:
        query += " AND sender_id = ?"
        params += (sender_id,)
    row = cur.one(query, params)
    return int(row[0]) if row else 0
