"""The real main and chat windows under Xvfb: add a friend, requests, presence, chat both ways
with read marks, typing, unread badges, history paging, files both ways, delete a friend."""
from __future__ import annotations

import hashlib
import os

import pytest

from client.ui import chat_window
from client.ui.app import App
from client.ui.chat_window import ChatWindow
from client.ui.widgets import Dialog
from tests.gui_helpers import (find_toplevels, gui_app, press_key, pump_until, wait_event,  # noqa: F401
                               xdisplay)
from tests.helpers import unique_phone

pytestmark = pytest.mark.gui


def befriend(app: App, bot) -> None:
    """Alice adds the bot by phone number in the window; the bot accepts."""
    main = app.main_window
    main.add_entry.insert(0, bot.phone)
    main.add_button.invoke()
    pump_until(app.root, lambda: "waiting for them" in main.add_info.cget("text"), 10, "'request sent'")
    request = wait_event(app.root, bot.events, "friend_request", timeout=10)["request"]
    bot.kernel.friends.answer(request["id"], True)
    pump_until(app.root, lambda: bot.kernel.user["id"] in main.rows, 10, "the friend in the list")


def new_friend(app: App, client, nickname: str):
    """``client`` registered as ``nickname`` and made Alice's friend through the window."""
    client.register_and_login(nickname)
    befriend(app, client)
    return client


def bubbles(window: ChatWindow) -> list[tuple[bool, str, str]]:
    return window.bubbles()


def test_friends_requests_presence_and_delete(gui_app, server, client_factory):
    app, main = gui_app, gui_app.main_window
    main.add_entry.insert(0, "12")
    main.add_button.invoke()
    assert "5 to 20 digits" in main.add_info.cget("text")
    main.add_entry.delete(0, "end")
    main.add_entry.insert(0, unique_phone())
    main.add_button.invoke()
    pump_until(app.root, lambda: "no user" in main.add_info.cget("text").lower(), 10, "the unknown-number error")
    main.add_entry.delete(0, "end")

    bob, carol = client_factory(server.port), client_factory(server.port)
    bob.register_and_login("Bob")
    carol.register_and_login("Carol")
    befriend(app, bob)

    # Carol asks Alice: the request shows with Accept / Refuse, Alice accepts in the window
    carol.kernel.friends.add(phone=app.settings.phone, greeting="hi, it's Carol")
    rows = pump_until(app.root, main.request_rows, 10, "Carol's request")
    assert "New friend request from Carol" in main.status.cget("text")
    rows[0].accept.invoke()
    pump_until(app.root, lambda: carol.kernel.user["id"] in main.rows and not main.request_rows(), 10,
               "Carol in the friend list")

    # online first: Bob goes offline and drops below Carol
    assert [f["nickname"] for f in main.sorted_friends()] == ["Bob", "Carol"]
    bob_id, carol_id = bob.kernel.user["id"], carol.kernel.user["id"]
    bob.kernel.logout()
    pump_until(app.root, lambda: "Bob went offline" in main.status.cget("text"), 10, "the offline notice")
    pump_until(app.root, lambda: list(main.rows) == [carol_id, bob_id], 5, "Bob below Carol")
    assert main.rows[bob_id].name_label.cget("foreground") != main.rows[carol_id].name_label.cget("foreground")

    # delete Carol from the context menu, after confirming
    main.rows[carol_id].menu.invoke("Delete friend…")
    dialog = pump_until(app.root, lambda: find_toplevels(main, Dialog), 5, "the confirmation")[0]
    assert "Remove Carol" in dialog.text
    dialog.buttons["Delete"].invoke()
    pump_until(app.root, lambda: carol_id not in main.rows, 10, "Carol to leave the list")
    wait_event(app.root, carol.events, "friend_removed", timeout=5)


def test_chat_both_ways_marks_typing_unread_and_history(gui_app, server, client_factory):
    app, main = gui_app, gui_app.main_window
    bob = new_friend(app, client_factory(server.port), "Bob")
    bob_id, alice_id = bob.kernel.user["id"], app.kernel.user["id"]

    # a message while the chat is closed: unread badge and preview
    bob.kernel.chat.send_and_wait(alice_id, "are you there?")
    pump_until(app.root, lambda: main.badges.get(bob_id) and main.badges[bob_id].count == 1, 10, "the unread badge")
    pump_until(app.root, lambda: "are you there?" in main.rows[bob_id].preview.cget("text"), 5, "the preview")

    main.rows[bob_id].event_generate("<Button-1>")
    window = pump_until(app.root, lambda: main.chats.get(bob_id), 5, "the chat window")
    assert main.badges[bob_id].count == 0
    pump_until(app.root, lambda: [b[1] for b in bubbles(window)] == ["are you there?"], 10, "the history")
    wait_event(app.root, bob.events, "chat_status", lambda e: e["status"] == "read", 10)

    # Alice types: Bob sees typing, then the message on Enter (Shift+Enter makes a new line)
    window.input.insert("1.0", "yes, ")
    press_key(window.input, "a")
    wait_event(app.root, bob.events, "typing", lambda e: e["typing"], 5)
    press_key(window.input, "Return", state=0x1)
    assert window.input.get("1.0", "end-1c").count("\n") == 1
    window.input.delete("1.0", "end")
    window.input.insert("1.0", "yes, I'm here")
    press_key(window.input, "Return")
    got = wait_event(app.root, bob.events, "chat_message", lambda e: e["message"]["text"] == "yes, I'm here", 10)
    assert window.input.get("1.0", "end-1c") == ""
    pump_until(app.root, lambda: "delivered" in bubbles(window)[-1][2] or "read" in bubbles(window)[-1][2], 10,
               "the delivered mark")
    bob.kernel.chat.mark_read(alice_id)
    pump_until(app.root, lambda: "read" in bubbles(window)[-1][2], 10, "the read mark")
    assert bubbles(window)[-1][:2] == (True, "yes, I'm here")
    assert got["message"]["from"] == alice_id

    # Bob types and answers: typing indicator, then his bubble on the left
    bob.kernel.chat.typing(alice_id, True)
    pump_until(app.root, lambda: window.presence.cget("text") == "typing…", 5, "'typing…'")
    bob.kernel.chat.send_and_wait(alice_id, "great")
    pump_until(app.root, lambda: bubbles(window)[-1][:2] == (False, "great"), 10, "Bob's answer")
    assert window.presence.cget("text") == "online"

    # 41 unread: the window opens at the first unread one, under a "New messages" line
    window.close()
    for i in range(40):
        bob.kernel.chat.send(alice_id, f"line {i}")
    bob.kernel.chat.send_and_wait(alice_id, "last line")
    pump_until(app.root, lambda: main.badges[bob_id].count == 41, 15, "41 unread")
    window = main.open_chat(bob_id)
    pump_until(app.root, lambda: window.history_loaded and window.scrolled_in, 10, "the history")
    texts = [b[1] for b in bubbles(window)]
    assert texts[:4] == ["are you there?", "yes, I'm here", "great", "line 0"] and texts[-1] == "last line"
    top = window.text.index("@0,0")
    assert window.text.get(top, f"{top} lineend").strip() == "——  New messages  ——", "not opened at the first unread"
    assert window.text.yview()[1] < 1.0


def test_files_both_ways_with_progress(gui_app, server, client_factory, tmp_path, monkeypatch):
    app, main = gui_app, gui_app.main_window
    bob = new_friend(app, client_factory(server.port), "Bob")
    bob_id = bob.kernel.user["id"]
    window = main.open_chat(bob_id)

    # Alice sends 3 MiB through the file picker; Bob accepts; the bar fills
    outgoing = tmp_path / "report.bin"
    outgoing.write_bytes(os.urandom(3 * 1024 * 1024))
    monkeypatch.setattr(chat_window, "ask_open_path", lambda parent: str(outgoing))
    window.choose_file()
    offer = wait_event(app.root, bob.events, "file_offer", timeout=15)
    row = pump_until(app.root, lambda: window.transfers.get(offer["transfer_id"]), 5, "the transfer row")
    assert "Waiting for Bob" in row.info.cget("text")
    bob.kernel.files.accept(offer["transfer_id"], directory=tmp_path / "bob")
    pump_until(app.root, lambda: row.state == "done", 30, "the send to finish")
    assert float(row.bar.cget("value")) == float(row.bar.cget("maximum")) == outgoing.stat().st_size
    assert row.info.cget("text").startswith("Sent")
    saved = wait_event(app.root, bob.events, "file_done", timeout=10)["path"]
    assert hashlib.sha256(open(saved, "rb").read()).digest() == hashlib.sha256(outgoing.read_bytes()).digest()

    # Bob sends one back: the offer shows Accept… / Decline; Alice saves it where she chooses
    incoming = tmp_path / "photo.bin"
    incoming.write_bytes(os.urandom(1024 * 1024 + 7))
    bob.kernel.files.send_file(app.kernel.user["id"], incoming)
    row = pump_until(app.root, lambda: next((r for r in window.transfers.values() if r.direction == "receive"), None),
                     10, "the incoming offer")
    assert set(row.button_widgets) == {"Accept…", "Decline"}
    target = tmp_path / "gui_app" / "saved.bin"
    target.parent.mkdir()
    monkeypatch.setattr(chat_window, "ask_save_path", lambda parent, name: str(target))
    row.button_widgets["Accept…"].invoke()
    pump_until(app.root, lambda: row.state == "done", 30, "the download to finish")
    assert "Saved to" in row.info.cget("text") and {"Open", "Show in folder"} <= set(row.button_widgets)
    assert target.read_bytes() == incoming.read_bytes()


def test_file_decline_and_cancel(gui_app, server, client_factory, tmp_path, monkeypatch):
    app, main = gui_app, gui_app.main_window
    bob = new_friend(app, client_factory(server.port), "Bob")
    window = main.open_chat(bob.kernel.user["id"])

    # Bob's offer, declined in the window
    offered = tmp_path / "unwanted.zip"
    offered.write_bytes(b"z" * 5000)
    bob.kernel.files.send_file(app.kernel.user["id"], offered)
    row = pump_until(app.root, lambda: next(iter(window.transfers.values()), None), 10, "the offer")
    row.button_widgets["Decline"].invoke()
    wait_event(app.root, bob.events, "file_declined", timeout=10)
    pump_until(app.root, lambda: row.info.cget("text") == "Declined" and not row.button_widgets, 5,
               "the offer to show it was declined")

    # Alice's offer, cancelled (after confirming) while Bob has not answered
    mine = tmp_path / "draft.txt"
    mine.write_text("draft " * 1000)
    monkeypatch.setattr(chat_window, "ask_open_path", lambda parent: str(mine))
    window.choose_file()
    offer = wait_event(app.root, bob.events, "file_offer", timeout=10)
    row = pump_until(app.root, lambda: window.transfers.get(offer["transfer_id"]), 5, "the outgoing row")
    row.button_widgets["Cancel"].invoke()
    dialog = pump_until(app.root, lambda: find_toplevels(window, Dialog), 5, "the confirmation")[0]
    dialog.buttons["Stop"].invoke()
    wait_event(app.root, bob.events, "file_cancelled", lambda e: e["transfer_id"] == offer["transfer_id"], 10)
    pump_until(app.root, lambda: row.info.cget("text") == "Cancelled", 5, "'Cancelled'")

    # both stay in the conversation: a new window shows them from the history
    window.close()
    window = main.open_chat(bob.kernel.user["id"])
    pump_until(app.root, lambda: len(window.transfers) == 2, 10, "the two file messages")
    assert sorted(r.info.cget("text") for r in window.transfers.values()) == ["Cancelled", "Declined"]


def test_messages_received_while_logged_out_show_as_unread(gui_app, server, client_factory):
    app = gui_app
    bob = new_friend(app, client_factory(server.port), "Bob")
    bob_id, alice_id = bob.kernel.user["id"], app.kernel.user["id"]

    app.main_window.menu.invoke("Log out")
    login = pump_until(app.root, lambda: app.login_view, 5, "the login view")
    assert "logged out" in login.notice.cget("text")
    wait_event(app.root, bob.events, "friend_offline", timeout=10)
    bob.kernel.chat.send_and_wait(alice_id, "first while you were away")
    bob.kernel.chat.send_and_wait(alice_id, "second while you were away")

    login.fields["password"].insert(0, "correct horse battery")
    login.button.invoke()
    main = pump_until(app.root, lambda: app.main_window, 20, "the main window again")
    pump_until(app.root, lambda: bob_id in main.badges and main.badges[bob_id].count == 2, 10, "two unread")
    pump_until(app.root, lambda: "second while you were away" in main.rows[bob_id].preview.cget("text"), 5,
               "the preview")
