"""The SQL core shared by both backends: per-thread connections, transactions, schema.

Queries are written once with ``?`` placeholders (always parameterised, never formatted);
the MySQL dialect turns them into PyMySQL's ``%s`` style.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
# What ``init_schema`` runs on a database of the version before each key, to bring it there.
# (New tables need nothing here: the schema's CREATE TABLE IF NOT EXISTS, run first, adds them.)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE messages ADD COLUMN file_id CHAR(32) NULL",),   # a file sent in the chat
    3: (),                                                           # the table rooms
}


class StorageError(Exception):
    """The database cannot be used (wrong schema version, unreachable, bad URL)."""


class DuplicateError(StorageError):
    """A unique key was violated."""


@dataclass(frozen=True)
class Dialect:
    name: str
    connect: Callable[[], Any]
    is_duplicate: Callable[[BaseException], bool]
    is_disconnect: Callable[[BaseException], bool]
    schema_sql: str
    insert_ignore: str  # "INSERT OR IGNORE" or "INSERT IGNORE"
    placeholder: str  # "?" or "%s"
    ping: Callable[[Any], None] | None = None  # checks (and reopens) an idle server connection
    # Whether the server behind a new connection runs INSERT ... RETURNING (SQLite 3.35,
    # MariaDB 10.5; MySQL has none): then a batch reads back its new rows' ids in one statement.
    insert_returning: Callable[[Any], bool] = lambda conn: False
    # Runs (driver cursor, query in the dialect's style, parameters); None: the cursor's execute.
    execute: Callable[[Any, str, tuple], Any] | None = None


class Database:
    """Owns one connection per thread and runs transactions on it."""

    def __init__(self, dialect: Dialect, ping_after: float = 1.0) -> None:
        self.dialect = dialect
        self.ping_after = ping_after  # idle seconds after which a server connection is pinged first
        self._local = threading.local()
        self._all: list[Any] = []
        self._lock = threading.Lock()
        self._sql_cache: dict[str, str] = {}
        self.insert_returning: bool | None = None   # known at the first connection

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        now = time.monotonic()
        if conn is None:
            conn = self.dialect.connect()
            self._local.conn = conn
            if self.insert_returning is None:
                self.insert_returning = self.dialect.insert_returning(conn)
            with self._lock:
                self._all.append(conn)
        elif self.dialect.ping is not None and now - getattr(self._local, "used", now) >= self.ping_after:
            try:
                self.dialect.ping(conn)
            except Exception as exc:
                if not self.dialect.is_disconnect(exc):
                    raise
                log.warning("database connection lost while idle (%s); reopening", exc)
                self._drop_connection()
                return self._connection()
        self._local.used = now
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                if conn in self._all:
                    self._all.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()

    def sql(self, query: str) -> str:
        cached = self._sql_cache.get(query)
        if cached is None:
            cached = query.replace("?", self.dialect.placeholder)
            if query.startswith("INSERT IGNORE"):
                cached = self.dialect.insert_ignore + cached[len("INSERT IGNORE"):]
            self._sql_cache[query] = cached
        return cached

    @contextlib.contextmanager
    def tx(self) -> Iterator["Cursor"]:
        """One transaction on this thread's connection; commits on success, rolls back on error.

        A connection lost before any statement ran is replaced once, transparently.
        """
        for attempt in (1, 2):
            conn = self._connection()
            try:
                cur = conn.cursor()
            except Exception as exc:
                if attempt == 1 and self.dialect.is_disconnect(exc):
                    self._drop_connection()
                    continue
                raise
            wrapped = Cursor(self, cur)
            try:
                yield wrapped
                conn.commit()
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    conn.rollback()
                if self.dialect.is_disconnect(exc):
                    log.warning("database connection lost (%s); it will be reopened", exc)
                    self._drop_connection()
                if self.dialect.is_duplicate(exc):
                    raise DuplicateError(str(exc)) from exc
                raise
            finally:
                with contextlib.suppress(Exception):
                    cur.close()
            return

    def run(self, fn: Callable[["Cursor"], Any]) -> Any:
        """Run ``fn`` in a transaction, retrying once if the connection was lost mid-way."""
        try:
            with self.tx() as cur:
                return fn(cur)
        except Exception as exc:
            if not self.dialect.is_disconnect(exc):
                raise
        with self.tx() as cur:
            return fn(cur)

    def init_schema(self) -> None:
        """Create the tables, or upgrade an older schema to this version."""
        found = self.schema_version()
        statements = [s.strip() for s in _strip_comments(self.dialect.schema_sql).split(";") if s.strip()]
        with self.tx() as cur:
            for statement in statements:
                cur.raw(statement)
        if found is None or found >= SCHEMA_VERSION:
            return
        for version in range(found + 1, SCHEMA_VERSION + 1):
            with self.tx() as cur:
                for statement in MIGRATIONS[version]:
                    cur.raw(statement)
                cur.execute("UPDATE meta SET value = ? WHERE name = ?", (str(version), "schema_version"))
            log.info("database schema upgraded to version %d", version)

    def schema_version(self) -> int | None:
        try:
            with self.tx() as cur:
                row = cur.one("SELECT value FROM meta WHERE name = ?", ("schema_version",))
        except DuplicateError:
            raise
        except Exception:
            return None
        return int(row[0]) if row else None

    def check_schema(self) -> None:
        version = self.schema_version()
        if version is None:
            raise StorageError("the database has no schema: run `meeting-server init-db` first")
        if version < SCHEMA_VERSION:
            raise StorageError(f"database schema version {version}, this server needs {SCHEMA_VERSION}: "
                               "run `meeting-server init-db` to upgrade it")
        if version != SCHEMA_VERSION:
            raise StorageError(f"database schema version {version}, this server needs {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()


class Cursor:
    """A thin wrapper that rewrites placeholders for the dialect."""

    def __init__(self, db: Database, cur: Any) -> None:
        self._db = db
        self._cur = cur

    def execute(self, query: str, params: tuple = ()) -> "Cursor":
        execute = self._db.dialect.execute
        if execute is None:
            self._cur.execute(self._db.sql(query), params)
        else:
            execute(self._cur, self._db.sql(query), params)
        return self

    def raw(self, statement: str) -> None:
        self._cur.execute(statement)

    def one(self, query: str, params: tuple = ()) -> tuple | None:
        self.execute(query, params)
        return self._cur.fetchone()

    def all(self, query: str, params: tuple = ()) -> list[tuple]:
        self.execute(query, params)
        return list(self._cur.fetchall())

    @property
    def insert_returning(self) -> bool:
        """The database runs INSERT ... RETURNING."""
        return bool(self._db.insert_returning)

    @property
    def lastrowid(self) -> int:
        return int(self._cur.lastrowid)

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))


def read_schema(name: str) -> str:
    """The schema files: schema.sql lives at the top of the repository, its twin in this package."""
    if name == "sqlite":
        return resources.files("server.storage").joinpath("schema_sqlite.sql").read_text("utf-8")
    for candidate in (Path(__file__).resolve().parents[2] / "schema.sql",
                      Path(sys.prefix) / "share" / "real-time-meeting" / "schema.sql"):
        if candidate.exists():
            return candidate.read_text("utf-8")
    raise StorageError("schema.sql not found next to the sources nor in the installed data files")
