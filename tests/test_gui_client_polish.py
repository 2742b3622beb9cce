"""What people notice first in the desktop client, in the real windows under Xvfb: live friend
profiles, a chat opened while offline, presence while reconnecting, answered requests, file
messages, file dialogs and dropping files, unread and time lines, login errors, Ctrl+A,
"Remember me", Quit, and where new windows appear."""
from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
import tkinter as tk

import pytest

from client.ui import chat_window
from client.ui.app import App
from client.ui.login import LoginView
from client.ui.main_window import MainWindow
from client.ui.widgets import COLORS, Dialog, format_clock, keep_on_screen
from tests.gui_helpers import (find_toplevels, gui_app, pump, pump_until, register_in_window,  # noqa: F401
                               wait_event, xdisplay)
from tests.helpers import TestClient, insert_message_tx, unique_phone
from tests.server_process import ServerProcess
from tests.test_gui_chat import befriend, new_friend
from tests.test_gui_meeting import open_meeting

pytestmark = pytest.mark.gui


def new_app(server_address: str) -> App:
    root = tk.Tk()
    app = App(root, server=server_address)
    root.update()
    return app


def close_app(app: App) -> None:
    try:
        app.quit()
    except tk.TclError:
        pass


def scroll_to_top(app: App, window, wanted: int, timeout: float = 10.0) -> None:
    """The mouse wheel, up, until ``wanted`` bubbles are shown."""
    deadline = time.monotonic() + timeout
    while len(window.bubbles()) < wanted:
        assert time.monotonic() < deadline, f"only {len(window.bubbles())} of {wanted} messages after scrolling up"
        window.text.event_generate("<Button-4>")
        app.root.update()
        time.sleep(0.01)


# -- friends ---------------------------------------------------------------------------------------
def test_a_friends_new_nickname_picture_and_signature_show_live(gui_app, server, client_factory):
    app, main = gui_app, gui_app.main_window
    bob = new_friend(app, client_factory(server.port), "Bob")
    bob_id = bob.kernel.user["id"]
    window = main.open_chat(bob_id)
    old_picture = str(main.rows[bob_id].avatar.cget("image"))
    old_chat_picture = str(window.avatar.cget("image"))

    bob.kernel.profile.update(nickname="Robert", signature="Gone fishing")
    bob.kernel.profile.choose_builtin_avatar(3)
    pump_until(app.root, lambda: main.rows[bob_id].name_label.cget("text") == "Robert", 10, "the new nickname")
    pump_until(app.root, lambda: str(main.rows[bob_id].avatar.cget("image")) != old_picture, 10, "the new picture")
    assert main.rows[bob_id].preview.cget("text") == "Gone fishing"
    pump_until(app.root, lambda: window.signature.cget("text") == "Gone fishing", 5, "the signature in the chat")
    assert window.name_label.cget("text") == "Robert" and window.title() == "Chat with Robert"
    assert str(window.avatar.cget("image")) != old_chat_picture


def test_the_request_note_goes_away_when_the_friend_accepts(gui_app, server, client_factory):
    app, main = gui_app, gui_app.main_window
    new_friend(app, client_factory(server.port), "Bob")       # "waiting for them to accept", then accepted
    pump_until(app.root, lambda: main.add_info.cget("text") == "Enter their phone number", 5, "the note to go")


# -- offline and reconnecting ------------------------------------------------------------------------
def test_offline_chat_loads_after_reconnect_and_presence_is_unknown_meanwhile(xdisplay, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with ServerProcess(f"sqlite:///{tmp_path}/chat.db", tmp_path / "data") as proc:
        port = proc.start()
        app = new_app(f"127.0.0.1:{port}")
        bob = TestClient(port)
        try:
            main = register_in_window(app, "Alice")
            bob.register_and_login("Bob")
            befriend(app, bob)
            bob_id, alice_id = bob.kernel.user["id"], app.kernel.user["id"]
            for i in range(69):
                bob.kernel.chat.send(alice_id, f"old {i}")
            bob.kernel.chat.send_and_wait(alice_id, "old 69")
            pump_until(app.root, lambda: main.badges[bob_id].count == 70, 15, "70 unread")
            main.open_chat(bob_id).close()          # read them all
            pump_until(app.root, lambda: main.rows[bob_id].online, 5, "Bob online")

            proc.kill()
            pump_until(app.root, lambda: "Reconnecting" in main.status.cget("text"), 10, "'Reconnecting…'")
            pump_until(app.root, lambda: main.rows[bob_id].online is None, 5, "Bob's presence to be unknown")
            row = main.rows[bob_id]
            assert row.name_label.cget("foreground") == COLORS["offline"]
            assert "STATUS UNKNOWN" in main.friends_title.cget("text")
            window = main.open_chat(bob_id)
            pump_until(app.root, lambda: "Cannot load the history" in window.error.cget("text"), 10, "the error")
            assert window.bubbles() == [] and window.presence.cget("text") == "reconnecting…"

            proc.start(port)
            pump_until(app.root, lambda: len(window.bubbles()) == chat_window.PAGE, 40, "the history after reconnect")
            assert window.bubbles()[-1][1] == "old 69" and window.error.cget("text") == ""
            pump_until(app.root, lambda: window.scrolled_in, 5, "the first page shown")
            scroll_to_top(app, window, 70)
            assert [b[1] for b in window.bubbles()] == [f"old {i}" for i in range(70)]
            pump_until(app.root, lambda: main.rows[bob_id].online is True, 30, "Bob online again")
            assert "ONLINE OF" in main.friends_title.cget("text")
        finally:
            bob.close()
            close_app(app)


# -- files ---------------------------------------------------------------------------------------
def test_files_are_messages_that_stay_in_the_conversation(gui_app, server, client_factory, tmp_path, monkeypatch):
    app, main = gui_app, gui_app.main_window
    bob = new_friend(app, client_factory(server.port), "Bob")
    bob_id = bob.kernel.user["id"]
    window = main.open_chat(bob_id)
    app.kernel.chat.send_and_wait(bob_id, "the slides:")     # stored before the file (two requests race)
    outgoing = tmp_path / "slides.pdf"
    outgoing.write_bytes(os.urandom(600_000))
    monkeypatch.setattr(chat_window, "ask_open_path", lambda parent: str(outgoing))
    window.choose_file()
    offer = wait_event(app.root, bob.events, "file_offer", timeout=15)
    row = pump_until(app.root, lambda: window.transfers.get(offer["transfer_id"]), 5, "the file message")
    assert window.bubbles()[-1][:2] == (True, "slides.pdf") and "585.9 KB" in row.size_label.cget("text")
    bob.kernel.files.accept(offer["transfer_id"], directory=tmp_path / "bob")
    pump_until(app.root, lambda: row.state == "done", 30, "the file to arrive")
    assert {"Open", "Show in folder"} <= set(row.button_widgets) and row.saved_path == str(outgoing)
    pump_until(app.root, lambda: main.rows[bob_id].preview.cget("text") == "You: [File] slides.pdf", 5, "preview")

    incoming = tmp_path / "photo.jpg"
    incoming.write_bytes(os.urandom(300_000))
    bob.kernel.files.send_file(app.kernel.user["id"], incoming)
    row = pump_until(app.root, lambda: next((r for r in window.transfers.values() if not r.mine), None), 10,
                     "Bob's file message")
    target = tmp_path / "saved.jpg"
    monkeypatch.setattr(chat_window, "ask_save_path", lambda parent, name: str(target))
    row.button_widgets["Accept…"].invoke()
    pump_until(app.root, lambda: row.state == "done", 30, "the download")

    # the transfer is over and the window closed: the conversation still has both files
    window.close()
    window = main.open_chat(bob_id)
    pump_until(app.root, lambda: len(window.transfers) == 2, 10, "both file messages from the history")
    assert [b[1] for b in window.bubbles()] == ["the slides:", "slides.pdf", "photo.jpg"]
    sent, received = sorted(window.transfers.values(), key=lambda r: not r.mine)
    assert sent.info.cget("text") == "Sent ✓" and received.info.cget("text") == "Received ✓"
    assert received.saved_path == str(target) and {"Open", "Show in folder"} <= set(received.button_widgets)

    # logged out and in again (a new client core, as after a restart): Open still finds both
    main.menu.invoke("Log out")
    login = pump_until(app.root, lambda: app.login_view, 5, "the login view")
    login.fields["password"].insert(0, "correct horse battery")
    login.button.invoke()
    main = pump_until(app.root, lambda: app.main_window, 20, "the main window again")
    window = main.open_chat(bob_id)
    pump_until(app.root, lambda: len(window.transfers) == 2, 10, "both file messages")
    assert sorted(r.saved_path for r in window.transfers.values()) == sorted([str(outgoing), str(target)])
    assert all({"Open", "Show in folder"} <= set(r.button_widgets) for r in window.transfers.values())


def test_file_dialogs_start_in_downloads_and_hide_dot_files(gui_app, tmp_path, monkeypatch):
    app = gui_app
    home = tmp_path / "home"
    (home / "Downloads").mkdir(parents=True)
    (home / "Downloads" / "visible.txt").write_text("x")
    (home / "Downloads" / ".secret").write_text("x")
    monkeypatch.setenv("HOME", str(home))
    seen = {}

    def look_and_cancel() -> None:
        tcl = app.root.tk
        seen["dir"] = str(tcl.call("set", "::tk::dialog::file::__tk_filedialog(selectPath)"))
        names, stack = [], [".__tk_filedialog"]
        while stack:
            widget = stack.pop()
            if tcl.call("winfo", "class", widget) == "Canvas":
                names += [tcl.call(widget, "itemcget", item, "-text")
                          for item in tcl.splitlist(tcl.call(widget, "find", "all"))
                          if tcl.call(widget, "type", item) == "text"]
            stack += tcl.splitlist(tcl.call("winfo", "children", widget))
        seen["names"] = names
        tcl.call("set", "::tk::Priv(selectFilePath)", "")     # what Cancel does
    app.root.after(500, look_and_cancel)
    assert chat_window.ask_open_path(app.root) == ""
    assert seen == {"dir": str(home / "Downloads"), "names": ["visible.txt"]}


def drop_files(widget: tk.Misc, paths: list[str]) -> str:
    """What tkdnd does when files are dropped: run the widget's <<Drop>> binding with its
    %-fields filled in (tkdnd_generic.tcl, HandleDrop)."""
    tcl = widget.tk
    data = tcl.call("list", *paths)
    fields = {"%W": widget._w, "%X": "0", "%Y": "0", "%x": "0", "%y": "0", "%CST": "{DND_Files}",
              "%CTT": "{DND_Files}", "%CPT": "{DND_Files}", "%ST": "{DND_Files}", "%TT": "{DND_Files}",
              "%A": "copy", "%a": "{copy}", "%b": "{1}", "%m": "{}", "%D": tcl.call("list", data),
              "%e": "<<Drop>>", "%L": "{DND_Files}", "%t": "{DND_Files}", "%T": "DND_Files", "%c": "{}", "%C": "{}"}
    script = tcl.call("bind", widget._w, "<<Drop>>")
    mapping = tcl.call("list", *[v for pair in fields.items() for v in pair])
    return tcl.call("uplevel", "#0", tcl.call("string", "map", mapping, script))


def test_dropping_or_pasting_files_onto_a_chat_sends_them(gui_app, server, client_factory, tmp_path):
    app, main = gui_app, gui_app.main_window
    bob = new_friend(app, client_factory(server.port), "Bob")
    window = main.open_chat(bob.kernel.user["id"])
    assert window.drop_enabled, "tkdnd (tkinterdnd2) is installed with the client"
    first, second = tmp_path / "one file.txt", tmp_path / "two.txt"
    first.write_text("1" * 100)
    second.write_text("2" * 200)
    assert drop_files(window, [str(first), str(second)]) == "copy"
    for name in ("one file.txt", "two.txt"):
        wait_event(app.root, bob.events, "file_offer", lambda e, name=name: e["name"] == name, 15)

    third = tmp_path / "three.txt"
    third.write_text("3")
    app.root.clipboard_clear()
    app.root.clipboard_append(f"file://{third}")
    window.input.focus_force()
    window.input.event_generate("<<Paste>>")
    dialog = pump_until(app.root, lambda: find_toplevels(window, Dialog), 5, "the send question")[0]
    assert "three.txt" in dialog.text
    dialog.buttons["Send"].invoke()
    wait_event(app.root, bob.events, "file_offer", lambda e: e["name"] == "three.txt", 15)
    assert window.input.get("1.0", "end-1c") == "", "a pasted file is not pasted as text"


# -- the conversation view ----------------------------------------------------------------------------
def test_time_lines_placeholder_and_the_newest_message_stays_in_view(gui_app, server, client_factory):
    app, main = gui_app, gui_app.main_window
    bob = new_friend(app, client_factory(server.port), "Bob")
    bob_id, alice_id = bob.kernel.user["id"], app.kernel.user["id"]

    window = main.open_chat(bob_id)
    pump_until(app.root, lambda: window.placeholder.winfo_ismapped(), 10, "the empty-conversation placeholder")
    assert "No messages yet" in window.placeholder.cget("text") and "Bob" in window.placeholder.cget("text")
    window.input.insert("1.0", "hi Bob")
    window.send()
    pump_until(app.root, lambda: not window.placeholder.winfo_ismapped(), 5, "the placeholder to go")

    # two messages a minute apart share a time line; one two hours later gets its own
    carol = new_friend(app, client_factory(server.port), "Carol")
    bob_id = carol.kernel.user["id"]
    now = int(time.time() * 1000)
    start = now - 3 * 3600 * 1000
    with server.server.storage.db.tx() as cur:
        for n, (at, text) in enumerate(((start, "morning"), (start + 60_000, "still morning"),
                                        (start + 2 * 3600 * 1000, "later"))):
            insert_message_tx(cur, bob_id, alice_id, f"t{n}", text, at)
    with server.server.storage.db.tx() as cur:
        for n in range(40):
            insert_message_tx(cur, bob_id, alice_id, f"f{n}", f"filler {n}", now + n)
    window = main.open_chat(bob_id)
    pump_until(app.root, lambda: len(window.bubbles()) >= 30, 10, "the history")
    scroll_to_top(app, window, 43)
    notes = window.notes()
    assert notes == [format_clock(start), format_clock(start + 2 * 3600 * 1000), format_clock(now)]
    assert [b[1] for b in window.bubbles()][:3] == ["morning", "still morning", "later"]

    window.text.yview_moveto(1.0)
    window._scrollbar_moved("moveto", 1.0)
    for size in ("480x440", "700x800", "520x500"):
        window.geometry(size)
        pump(app.root, 0.3)
        assert window.text.yview()[1] == 1.0, f"the newest message left the view after resizing to {size}"
        assert window.bubbles()[-1][1] == "filler 39"


# -- login ---------------------------------------------------------------------------------------------
class FakeServer:
    """A TCP server that is not a meeting server: it answers like a web server, or hangs up."""

    def __init__(self, answer: bytes | None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answer = answer
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.answer is not None:
                    conn.recv(1024)
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def make_app(xdisplay, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    apps = []

    def make(address: str) -> App:
        app = new_app(address)
        apps.append(app)
        return app
    yield make
    for app in apps:
        close_app(app)


def test_login_tells_a_server_that_is_not_a_meeting_server_from_a_lost_connection(make_app):
    web, hangs_up = FakeServer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"), FakeServer(None)
    try:
        app = make_app(f"127.0.0.1:{web.port}")
        view = app.login_view
        view.fields["phone"].insert(0, unique_phone())
        view.fields["password"].insert(0, "whatever it is")
        view.button.invoke()
        label = view.field_errors["server"]
        pump_until(app.root, lambda: label.cget("text"), 15, "the server error")
        assert f"127.0.0.1:{web.port} is not a meeting server" in label.cget("text")
        app.root.update_idletasks()
        line = label.tk.call("font", "metrics", label.cget("font") or "TkDefaultFont", "-linespace")
        assert label.winfo_height() > 1.5 * line, "a long error wraps onto more lines"
        assert label.winfo_rootx() + label.winfo_width() <= app.root.winfo_rootx() + app.root.winfo_width()

        view.fields["server"].delete(0, "end")
        view.fields["server"].insert(0, f"127.0.0.1:{hangs_up.port}")
        view.button.invoke()
        pump_until(app.root, lambda: view.error.cget("text"), 15, "the lost-connection error")
        assert "connection to the server was lost" in view.error.cget("text")
        assert "not a meeting server" not in view.error.cget("text")
    finally:
        web.close()
        hangs_up.close()


def test_ctrl_a_selects_all_in_entries_and_text(gui_app, server, client_factory):
    app, main = gui_app, gui_app.main_window
    main.add_entry.insert(0, "13800138000")
    main.add_entry.focus_force()
    main.add_entry.event_generate("<Control-a>")
    assert main.add_entry.selection_present() and main.add_entry.selection_get() == "13800138000"
    main.add_entry.delete(0, "end")
    bob = new_friend(app, client_factory(server.port), "Bob")
    window = main.open_chat(bob.kernel.user["id"])
    window.input.insert("1.0", "two\nlines")
    window.input.focus_force()
    window.input.update()
    window.input.event_generate("<Control-a>")
    assert window.input.get("sel.first", "sel.last") == "two\nlines"


def test_remember_me_logs_in_by_itself_until_logout(make_app, server, tmp_path):
    address = f"127.0.0.1:{server.port}"
    app = make_app(address)
    app.login_view.remember_me = True
    main = register_in_window(app, "Alice")
    path = tmp_path / "config" / "real-time-meeting" / "client.json"
    saved = json.loads(path.read_text())
    assert saved["remember"] is True and len(saved["session_token"]) > 30
    assert "password" not in path.read_text() and "correct horse battery" not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert main.menu.index("Quit") is not None
    main.menu.invoke("Quit")
    with pytest.raises(tk.TclError):
        app.root.winfo_exists()

    again = make_app(address)
    main = pump_until(again.root, lambda: isinstance(again.main_window, MainWindow) and again.main_window, 15,
                      "the main window without the password")
    assert main.me_name.cget("text") == "Alice"
    main.menu.invoke("Log out")
    pump_until(again.root, lambda: again.login_view, 5, "the login view")
    assert json.loads(path.read_text())["session_token"] == ""
    close_app(again)

    third = make_app(address)
    pump(third.root, 0.5)
    assert isinstance(third.login_view, LoginView) and third.main_window is None
    assert third.login_view.fields["phone"].get() == saved["phone"] and third.login_view.remember_me


def test_a_saved_login_that_ended_asks_for_the_password(make_app, server, tmp_path):
    address = f"127.0.0.1:{server.port}"
    app = make_app(address)
    app.login_view.remember_me = True
    register_in_window(app, "Alice")
    close_app(app)
    path = tmp_path / "config" / "real-time-meeting" / "client.json"
    saved = json.loads(path.read_text())
    saved["session_token"] = "not-a-session-any-more"
    path.write_text(json.dumps(saved))
    again = make_app(address)
    view = again.login_view
    pump_until(again.root, lambda: view.error.cget("text"), 15, "the notice")
    assert "saved login has ended" in view.error.cget("text")
    assert json.loads(path.read_text())["session_token"] == ""


# -- where windows appear ---------------------------------------------------------------------------
def test_chat_windows_open_beside_the_main_window_and_the_meeting_fully_on_screen(gui_app, server, client_factory):
    app, main = gui_app, gui_app.main_window
    root = app.root
    friends = []
    for name in ("Bob", "Carol"):
        friends.append(new_friend(app, client_factory(server.port), name).kernel.user["id"])
    first, second = (main.open_chat(uid) for uid in friends)
    root.update()
    screen_w, screen_h = root.winfo_screenwidth(), root.winfo_screenheight()
    right_edge = root.winfo_rootx() + root.winfo_width()
    assert first.winfo_rootx() >= right_edge and abs(first.winfo_rooty() - root.winfo_rooty()) <= 2
    assert (second.winfo_rootx(), second.winfo_rooty()) != (first.winfo_rootx(), first.winfo_rooty())
    for window in (first, second):
        assert window.winfo_rootx() + window.winfo_width() <= screen_w
        assert window.winfo_rooty() + window.winfo_height() <= screen_h

    root.geometry(f"+{screen_w - 200}+{screen_h - 300}")      # the main window in a corner
    root.update()
    meeting = open_meeting(app, "Placement")
    root.update()
    assert meeting.winfo_rootx() >= 0 and meeting.winfo_rooty() >= 0
    assert meeting.winfo_rootx() + meeting.winfo_width() <= screen_w
    assert meeting.winfo_rooty() + meeting.winfo_height() <= screen_h
    assert (meeting.winfo_width(), meeting.winfo_height()) == (1180, 740), "it fits: its size is kept"
    meeting.geometry(f"{screen_w + 300}x{screen_h + 100}+400+300")   # larger than the screen, off its edge
    keep_on_screen(meeting)
    root.update()
    assert (meeting.winfo_rootx(), meeting.winfo_rooty()) == (0, 0)
    assert meeting.winfo_width() == screen_w and meeting.winfo_height() <= screen_h
    meeting.close()
    pump(root, 0.2)
