"""Storage: one interface (``Storage``), two backends chosen by URL.

``sqlite:///path/to/file.db`` (the embedded default) or ``mysql://user:pass@host:port/db``.
Each domain keeps its queries in its own mixin module.
"""
from __future__ import annotations

from .accounts import AccountStore, User
from .files import FileStore
from .friends import FriendStore
from .messages import MessageStore
from .profiles import ProfileStore
from .rooms import RoomStore, StoredRoom
from .sql import Database, DuplicateError, StorageError


class Storage(AccountStore, FriendStore, FileStore, ProfileStore, MessageStore, RoomStore):
    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def backend(self) -> str:
        return self.db.dialect.name

    def init_schema(self) -> None:
        self.db.init_schema()

    def check_schema(self) -> None:
        self.db.check_schema()

    def close(self) -> None:
        self.db.close()


def open_storage(url: str) -> Storage:
    if url.startswith("sqlite://"):
        from .sqlite_backend import sqlite_dialect
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        path = url[len("sqlite://"):]
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise StorageError("the SQLite URL names no file: use sqlite:///path/to/file.db")
        return Storage(Database(sqlite_dialect(path)))
    if url.startswith(("mysql://", "mysql+pymysql://")):
        from .mysql_backend import mysql_dialect
        return Storage(Database(mysql_dialect(url)))
    raise StorageError(f"unsupported database URL {url!r}: use sqlite:///path or mysql://user:pass@host/db")


__all__ = ["Storage", "StoredRoom", "User", "open_storage", "StorageError", "DuplicateError"]
