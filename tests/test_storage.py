"""Storage on both backends: accounts, sessions, schema version, equivalence, reconnect."""
from __future__ import annotations

import threading

import pytest

from server.storage import DuplicateError, StorageError, open_storage
from server.storage.sql import SCHEMA_VERSION
from tests.helpers import make_mysql_database


def test_create_and_read_user(storage):
    user = storage.create_user("13800000000", "scrypt$hash", "Alice", 1000)
    assert user.id > 0
    assert storage.get_user(user.id).nickname == "Alice"
    assert storage.get_user_by_phone("13800000000").id == user.id
    found, password_hash = storage.get_credentials("13800000000")
    assert found.id == user.id and password_hash == "scrypt$hash"
    assert storage.get_user_by_phone("19999999999") is None
    assert storage.get_credentials("19999999999") is None


def test_query_parameters_of_every_type_round_trip(storage):
    values = (7, -2 ** 62, 0, True, False, None, 1.5, "it's \\ \"q\" \x00 100%", b"\x00\xffbytes")
    with storage.db.tx() as cur:
        row = cur.one("SELECT " + ", ".join("?" for _ in values), values)
    assert list(row) == [7, -2 ** 62, 0, 1, 0, None, 1.5, "it's \\ \"q\" \x00 100%", b"\x00\xffbytes"]


def test_duplicate_phone_is_refused(storage):
    storage.create_user("13800000001", "h", "A", 1)
    with pytest.raises(DuplicateError):
        storage.create_user("13800000001", "h", "B", 2)


def test_unicode_nickname_round_trips(storage):
    user = storage.create_user("13800000002", "h", "小明 😀", 1)
    assert storage.get_user(user.id).nickname == "小明 😀"


def test_sessions_expire_and_can_be_deleted(storage):
    user = storage.create_user("13800000003", "h", "A", 1)
    storage.create_session("a" * 64, user.id, "127.0.0.1", 1000, 5000)
    assert storage.session_user("a" * 64, 2000) == user.id
    assert storage.session_user("a" * 64, 6000) is None       # expired, and removed
    assert storage.session_user("a" * 64, 2000) is None
    storage.create_session("b" * 64, user.id, "127.0.0.1", 1000, 5000)
    storage.delete_session("b" * 64)
    assert storage.session_user("b" * 64, 2000) is None


def test_storage_is_usable_from_many_threads(storage):
    errors = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                storage.create_user(f"139{n:02d}{i:06d}", "h", f"u{n}-{i}", 1)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert storage.get_user_by_phone("13905000009") is not None


def test_schema_version_is_stored_and_checked(storage):
    assert storage.db.schema_version() == SCHEMA_VERSION
    storage.check_schema()
    with storage.db.tx() as cur:
        cur.execute("UPDATE meta SET value = ? WHERE name = ?", ("999", "schema_version"))
    with pytest.raises(StorageError, match="999"):
        storage.check_schema()


def test_missing_schema_says_to_run_init_db(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(StorageError, match="init-db"):
        storage.check_schema()
    storage.close()


def test_bad_urls_are_refused():
    with pytest.raises(StorageError):
        open_storage("postgres://x/y")
    with pytest.raises(StorageError):
        open_storage("mysql://root@127.0.0.1:3306/")


def test_mysql_and_sqlite_schemas_define_the_same_tables_and_columns(tmp_path):
    lite = open_storage(f"sqlite:///{tmp_path}/s.db")
    lite.init_schema()
    with lite.db.tx() as cur:
        tables = [r[0] for r in cur.all("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite_%'")]
        sqlite_columns = {t: sorted(r[1] for r in cur.all(f"PRAGMA table_info({t})")) for t in tables}
    lite.close()
    url, drop = make_mysql_database()
    try:
        mysql = open_storage(url)
        mysql.init_schema()
        database = url.rsplit("/", 1)[1]
        with mysql.db.tx() as cur:
            rows = cur.all("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = ?",
                           (database,))
        mysql.close()
    finally:
        drop()
    mysql_columns: dict[str, list[str]] = {}
    for table, column in rows:
        mysql_columns.setdefault(table, []).append(column)
    assert {t: sorted(c) for t, c in mysql_columns.items()} == sqlite_columns


def test_init_schema_is_idempotent(storage):
    storage.init_schema()
    storage.init_schema()
    assert storage.db.schema_version() == SCHEMA_VERSION


def test_mysql_reconnects_after_a_lost_connection():
    url, drop = make_mysql_database()
    try:
        storage = open_storage(url)
        storage.init_schema()
        user = storage.create_user("13800000009", "h", "A", 1)
        with storage.db.tx() as cur:
            connection_id = cur.one("SELECT CONNECTION_ID()")[0]
        killer = open_storage(url)
        with killer.db.tx() as cur:
            cur.raw(f"KILL {int(connection_id)}")
        killer.close()
        storage.db.ping_after = 0.0  # as if the connection had been idle
        assert storage.get_user(user.id).nickname == "A"
        storage.close()
    finally:
        drop()
