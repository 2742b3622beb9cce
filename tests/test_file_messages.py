"""A file is a message in the conversation: stored with the offer, in both users' history
and unread backlog, showing the transfer's state; older databases are upgraded to hold it."""
from __future__ import annotations

import re

import pytest

from server.storage import open_storage
from server.storage.sql import SCHEMA_VERSION, read_schema
from tests.helpers import logged_in_friends, make_mysql_database


def uid(client) -> int:
    return client.kernel.user["id"]


def file_messages(client, peer: int) -> list[dict]:
    return [m for m in client.kernel.chat.history(peer, None, 50)["messages"] if m.get("file")]


def test_a_file_is_a_message_in_both_histories_with_its_state(server, client_factory, tmp_path):
    alice, bob = logged_in_friends(server, client_factory)
    alice.kernel.chat.send_and_wait(uid(bob), "here is the report")
    source = tmp_path / "report.pdf"
    source.write_bytes(b"%PDF" + b"x" * 5000)
    mark_a, mark_b = alice.events.mark(), bob.events.mark()
    transfer_id = alice.kernel.files.send_file(uid(bob), source)

    sent = alice.events.wait_for("chat_sent", lambda e: e["message"].get("file"), start=mark_a)["message"]
    got = bob.events.wait_for("chat_message", lambda e: e["message"].get("file"), start=mark_b)["message"]
    assert sent["id"] == got["id"] and got["from"] == uid(alice) and got["text"] == "report.pdf"
    assert got["file"] == {"transfer_id": transfer_id, "name": "report.pdf", "size": 5004, "state": "offered"}
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == transfer_id, start=mark_b)
    offer_event = [i for i, e in enumerate(bob.events.events) if e.kind == "file_offer"][-1]
    assert [e.kind for e in bob.events.events].index("chat_message", mark_b) < offer_event, \
        "the message comes before the offer it belongs to"

    bob.kernel.files.accept(transfer_id, directory=tmp_path / "inbox")
    alice.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id)
    bob.events.wait_for("file_done", lambda e: e["transfer_id"] == transfer_id)
    for me, peer in ((alice, bob), (bob, alice)):
        history = me.kernel.chat.history(uid(peer), None, 50)["messages"]
        assert [m["text"] for m in history] == ["here is the report", "report.pdf"]
        assert history[-1]["file"]["state"] == "done" and "file" not in history[0]

    declined = tmp_path / "other.zip"
    declined.write_bytes(b"z" * 10)
    mark_b = bob.events.mark()
    second = alice.kernel.files.send_file(uid(bob), declined)
    bob.events.wait_for("file_offer", lambda e: e["transfer_id"] == second, start=mark_b)
    bob.kernel.files.decline(second)
    alice.events.wait_for("file_declined", lambda e: e["transfer_id"] == second)
    assert [m["file"]["state"] for m in file_messages(alice, uid(bob))] == ["done", "declined"]


def test_a_file_for_an_offline_friend_is_in_their_unread_backlog(server, client_factory, tmp_path):
    alice, bob = logged_in_friends(server, client_factory)
    bob_id = uid(bob)
    bob.kernel.logout()
    source = tmp_path / "notes.txt"
    source.write_text("notes " * 100)
    transfer_id = alice.kernel.files.send_file(bob_id, source)
    alice.events.wait_for("file_spooled", lambda e: e["transfer_id"] == transfer_id)
    mark = bob.events.mark()
    bob.kernel.login(bob.phone, bob.password)
    backlog = bob.events.wait_for("chat_message", lambda e: e["message"].get("file"), start=mark)
    assert backlog["backlog"] and backlog["message"]["file"]["state"] == "spooled"
    assert backlog["message"]["file"]["transfer_id"] == transfer_id


def _schema_v1(text: str) -> list[str]:
    """The schema as version 1 had it: no file_id in messages."""
    text = re.sub(r"\n\s*file_id [^\n]*,", "", text).replace(f"'{SCHEMA_VERSION}'", "'1'")
    lines = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in lines.split(";") if s.strip()]


@pytest.mark.parametrize("backend", ["sqlite", "mysql"])
def test_init_db_upgrades_a_version_1_database(backend, tmp_path):
    if backend == "sqlite":
        url, drop = f"sqlite:///{tmp_path}/old.db", lambda: None
    else:
        url, drop = make_mysql_database()
    storage = open_storage(url)
    try:
        with storage.db.tx() as cur:
            for statement in _schema_v1(read_schema(backend)):
                cur.raw(statement)
        assert storage.db.schema_version() == 1
        with pytest.raises(Exception, match="init-db"):
            storage.check_schema()
        storage.init_schema()
        assert storage.db.schema_version() == SCHEMA_VERSION
        storage.check_schema()
        with storage.db.tx() as cur:
            cur.execute("SELECT file_id FROM messages")
    finally:
        storage.close()
        drop()
