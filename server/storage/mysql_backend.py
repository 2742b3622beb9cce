"""MySQL / MariaDB through PyMySQL: utf8mb4, one connection per worker thread."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .sql import Dialect, StorageError, read_schema

if TYPE_CHECKING:
    import pymysql.cursors

# Client error numbers that mean the connection is gone and may be reopened.
_DISCONNECT_CODES = {2006, 2013, 2014, 2045, 2055, 4031}


def mysql_dialect(url: str) -> Dialect:
    import pymysql

    parts = urlsplit(url)
    if not parts.path.strip("/"):
        raise StorageError(f"the MySQL URL names no database: {redact(url)}")
    params = dict(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=unquote(parts.path.strip("/")),
        charset="utf8mb4",
        autocommit=False,
        connect_timeout=10,
    )

    def connect():
        try:
            return pymysql.connect(**params)
        except pymysql.err.OperationalError as exc:
            raise StorageError(f"cannot connect to MySQL at {params['host']}:{params['port']}: {exc.args[-1]}") from exc

    def is_disconnect(exc: BaseException) -> bool:
        if isinstance(exc, pymysql.err.InterfaceError):
            return True
        return isinstance(exc, pymysql.err.OperationalError) and bool(exc.args) and exc.args[0] in _DISCONNECT_CODES

    return Dialect(
        name="mysql",
        connect=connect,
        is_duplicate=lambda exc: isinstance(exc, pymysql.err.IntegrityError) and bool(exc.args) and exc.args[0] == 1062,
        is_disconnect=is_disconnect,
        schema_sql=read_schema("mysql"),
        insert_ignore="INSERT IGNORE",
        placeholder="%s",
        ping=lambda conn: conn.ping(reconnect=False),
        insert_returning=lambda conn: mariadb_version(conn.get_server_info()) >= (10, 5),
        execute=execute,
    )


def execute(cur: "pymysql.cursors.Cursor", query: str, params: tuple) -> None:
    """``cur.execute(query, params)`` with the ints made literals here: a batch passes them by
    the hundred, and PyMySQL's generic escaping costs three Python calls per int for the same
    ``str(value)``. Every other value still goes through PyMySQL's ``escape``."""
    escape = cur.connection.escape
    cur.execute(query % tuple(str(v) if type(v) is int else escape(v) for v in params))


def mariadb_version(server_info: str) -> tuple[int, int]:
    """(major, minor) of a MariaDB server from its version string ("10.11.6-MariaDB-0+deb12u1"),
    (0, 0) for MySQL or anything else."""
    match = re.match(r"(?:5\.5\.5-)?(\d+)\.(\d+)\.", server_info)
    if "MariaDB" not in server_info or match is None:
        return (0, 0)
    return int(match.group(1)), int(match.group(2))


def redact(url: str) -> str:
    """The URL with its password hidden, for logs and errors."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()
