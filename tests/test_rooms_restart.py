"""A meeting survives a server restart (SIGTERM) and a crash (SIGKILL): the real server as a
process, on SQLite and on MySQL. The members reconnect by themselves and are back in the same
meeting (number, title, password, host, lock); a meeting older than ``room_keep`` is gone."""
from __future__ import annotations

import time

import pytest

from common.errors import ErrorCode
from server.storage import StorageError, open_storage
from tests.helpers import wait_until
from tests.server_process import ServerProcess
from tests.test_chat import db_url  # noqa: F401  (fixture: a fresh SQLite file or MySQL database)
from tests.test_rooms import error_of, join_in_background, member_ids, uid


def stored_room(db_url: str, number: str):
    """The room's row as the server last wrote it, or None."""
    storage = open_storage(db_url)
    try:
        return {r.number: r for r in storage.stored_rooms()}.get(number)
    finally:
        storage.close()


def stored_members(db_url: str, number: str) -> list[int]:
    room = stored_room(db_url, number)
    return [uid for uid, _ in room.members] if room else []


def wait_stored(db_url: str, number: str, ids: list[int], locked: bool = False, timeout: float = 10.0) -> None:
    """The room keeper writes on its own thread: wait until the row holds these members and lock
    (a crash right after a change may otherwise come before its write)."""
    def stored() -> bool:
        room = stored_room(db_url, number)
        return room is not None and [uid for uid, _ in room.members] == ids and room.locked == locked
    wait_until(stored, timeout, f"room {number} stored with members {ids}, locked={locked}", interval=0.05)


def all_back(client, number: str, ids: list[int], start: int) -> dict:
    return client.events.wait_for(
        "room_members", lambda e: e["room"]["number"] == number and member_ids(e["room"]) == ids
        and not any(m["away"] for m in e["room"]["members"]), start=start, timeout=30)["room"]


@pytest.mark.parametrize("stop", ["terminate", "kill"])
def test_meeting_survives_a_server_restart(db_url, tmp_path, client_factory, stop):
    with ServerProcess(db_url, tmp_path / "data") as proc:
        port = proc.start()
        a, b, c = (client_factory(port) for _ in range(3))
        for client, name in ((a, "Ann"), (b, "Ben"), (c, "Cat")):
            client.register_and_login(name)
        number = a.kernel.rooms.create("Standup", password="s3cret")["number"]
        b.kernel.rooms.join(number, "s3cret")
        a.kernel.rooms.lock(True)
        a.kernel.rooms.set_media_state(True, True, False)
        ids = [uid(a), uid(b)]
        wait_stored(db_url, number, ids, locked=True)

        marks = [a.events.mark(), b.events.mark()]
        c_mark = c.events.mark()
        getattr(proc, stop)()
        proc.start()                                   # same database, same port
        c.events.wait_for("reconnected", start=c_mark, timeout=30)
        for client, mark in zip((a, b), marks):
            client.events.wait_for("reconnected", start=mark, timeout=30)
            room = all_back(client, number, ids, mark)
            assert room["title"] == "Standup" and room["host_id"] == uid(a) and room["locked"]
            assert client.kernel.rooms.room["number"] == number
        b.events.wait_for("room_members", lambda e: [(m["camera"], m["microphone"]) for m in e["room"]["members"]
                                                     if m["user_id"] == uid(a)] == [(True, True)],
                          start=marks[1], timeout=10)     # a told the new server what it sends
        for client, mark in zip((a, b), marks):
            assert not [e for e in client.events.events[mark:] if e.kind in ("room_closed", "room_removed")]
        b.kernel.rooms.chat("still here after the restart")
        a.events.wait_for("room_chat", lambda e: e["text"] == "still here after the restart")
        a.kernel.rooms.lock(False)                     # the host kept the host's powers

        # the password (kept as a hash) still guards the room
        assert error_of(c.kernel.rooms.join, number, "guess") == ErrorCode.WRONG_ROOM_PASSWORD
        c.kernel.rooms.join(number, "s3cret")
        all_back(a, number, ids + [uid(c)], marks[0])


def test_a_meeting_nobody_comes_back_to_expires(db_url, tmp_path, client_factory):
    with ServerProcess(db_url, tmp_path / "data", env={"MEETING_ROOM_KEEP": "1"}) as proc:
        port = proc.start()
        a, b = client_factory(port), client_factory(port)
        a.register_and_login("Ann")
        b.register_and_login("Ben")
        number = a.kernel.rooms.create("Gone soon")["number"]
        wait_stored(db_url, number, [uid(a)])
        a.kernel.close()                               # never comes back
        proc.kill()
        time.sleep(1.2)                                # longer than room_keep: the row is stale
        mark = b.events.mark()
        proc.start()
        b.events.wait_for("reconnected", start=mark, timeout=30)
        assert error_of(b.kernel.rooms.join, number) == ErrorCode.NO_SUCH_ROOM
        assert stored_members(db_url, number) == []


def test_restored_places_run_out_and_the_waiting_room_survives(db_url, tmp_path, client_factory):
    """After a restart a member who does not come back within room_keep loses the place and
    the host role passes; a locked room still sends newcomers to its waiting room."""
    with ServerProcess(db_url, tmp_path / "data", env={"MEETING_ROOM_KEEP": "3"}) as proc:
        port = proc.start()
        a, b, c = (client_factory(port) for _ in range(3))
        for client, name in ((a, "Ann"), (b, "Ben"), (c, "Cat")):
            client.register_and_login(name)
        number = a.kernel.rooms.create("Locked")["number"]
        b.kernel.rooms.join(number)
        a.kernel.rooms.lock(True)
        wait_stored(db_url, number, [uid(a), uid(b)], locked=True)
        a.kernel.close()                               # the host will not come back
        mark, c_mark = b.events.mark(), c.events.mark()
        proc.terminate()
        proc.start()
        c.events.wait_for("reconnected", start=c_mark, timeout=30)
        room = b.events.wait_for("room_members", lambda e: member_ids(e["room"]) == [uid(b)],
                                 start=mark, timeout=30)["room"]
        assert room["host_id"] == uid(b) and room["locked"]
        waiting = join_in_background(c, number)
        b.events.wait_for("room_waiting_list", lambda e: [w["user_id"] for w in e["waiting"]] == [uid(c)],
                          start=mark, timeout=10)
        b.kernel.rooms.admit(uid(c))
        assert member_ids(waiting.result(10)) == [uid(b), uid(c)]


def test_init_db_adds_the_rooms_table_to_a_version_2_database(db_url):
    storage = open_storage(db_url)
    try:
        storage.init_schema()
        with storage.db.tx() as cur:
            cur.raw("DROP TABLE rooms")
            cur.execute("UPDATE meta SET value = ? WHERE name = ?", ("2", "schema_version"))
        with pytest.raises(StorageError, match="init-db"):
            storage.check_schema()
        storage.init_schema()
        storage.check_schema()
        assert storage.db.schema_version() == 3 and storage.stored_rooms() == []
    finally:
        storage.close()
