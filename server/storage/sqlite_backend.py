"""SQLite: the embedded default. One connection per worker thread, WAL journal."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from .sql import Dialect, read_schema


def sqlite_dialect(path: str) -> Dialect:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a crash of the process (not of the OS) without loss.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checkpoint every ~40 MB of WAL, not every 4 MB (1,000 pages): a chat batch rewrites
        # index pages spread over the whole table, and a checkpoint copies each page once
        # however often it changed since the last, so the writer spends less on checkpoints.
        conn.execute("PRAGMA wal_autocheckpoint=10000")
        return conn

    return Dialect(
        name="sqlite",
        connect=connect,
        is_duplicate=lambda exc: isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc),
        is_disconnect=lambda exc: False,
        schema_sql=read_schema("sqlite"),
        insert_ignore="INSERT OR IGNORE",
        placeholder="?",
        insert_returning=lambda conn: sqlite3.sqlite_version_info >= (3, 35),
    )
