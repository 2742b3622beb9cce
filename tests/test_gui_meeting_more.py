"""The meeting window under Xvfb, what makes it pleasant: reconnecting instead of ending (a
real server restarted, a dropped connection), the people list's state icons and speaking,
avatars on camera-off tiles, pin and speaker view, the hideable panel and shortcuts, the host's
waiting room / hand-over / end for all, screen-or-window sharing without a hall of mirrors, and
the device checks (camera preview, microphone meter, speaker test tone) applied in the meeting."""
from __future__ import annotations

import subprocess
import sys
import tkinter as tk

import numpy as np
import pytest

from client.media.audio_io import ToneSource
from client.media.pipeline import AudioPublisher, MeetingReceiver
from client.media.sources import HIDDEN_FILL
from client.ui.app import App
from client.ui.device_settings import DeviceSettings
from client.ui.meeting_dialogs import MeetingDialog, SharePicker
from client.ui.widgets import Dialog
from common.errors import ApiError, ErrorCode
from common.media import MediaKind
from tests.gui_helpers import (find_toplevels, gui_app, label_texts, pump, pump_until,  # noqa: F401
                               register_in_window, screenshot, wait_event, xdisplay)
from tests.helpers import wait_until
from tests.server_process import ServerProcess
from tests.test_gui_meeting import open_meeting
from tests.test_rooms import come_back_later, join_in_background

pytestmark = pytest.mark.gui


def bot(client_factory, port: int, name: str):
    client = client_factory(port)
    client.register_and_login(name)
    return client


def uid(client) -> int:
    return client.kernel.user["id"]


# -- item 6: reconnecting instead of ending ------------------------------------------------------------
@pytest.fixture
def process_app(xdisplay, tmp_path, monkeypatch):
    """The app logged in to a real server process (which the test may kill and restart)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with ServerProcess(f"sqlite:///{tmp_path}/restart.db", tmp_path / "data") as proc:
        proc.start()
        root = tk.Tk()
        app = App(root, server=f"127.0.0.1:{proc.port}")
        register_in_window(app, "Alice")
        yield app, proc
        try:
            app.quit()
        except tk.TclError:
            pass


def link_bar_shown(meeting) -> bool:
    return bool(meeting.link_bar.winfo_ismapped()) and "Reconnecting" in meeting.link_bar.cget("text")


def test_the_meeting_window_survives_a_server_restart(process_app, client_factory):
    app, proc = process_app
    meeting = open_meeting(app, "Survivor")
    number = meeting.room["number"]
    bob = bot(client_factory, proc.port, "Bob")
    bob.kernel.rooms.join(number)
    pump_until(app.root, lambda: len(meeting.grid_view.tiles) == 2, 10, "Bob's tile")
    for stop in (proc.kill, proc.terminate):             # a crash, then a clean restart
        mark = bob.events.mark()
        stop()
        pump_until(app.root, lambda: link_bar_shown(meeting), 10, "the Reconnecting… bar")
        assert app.meeting is meeting and not meeting.closed
        proc.start()
        pump_until(app.root, lambda: not meeting.link_bar.winfo_ismapped(), 30, "the bar to go")
        wait_event(app.root, bob.events, "reconnected", lambda e: True, 30)
        pump_until(app.root, lambda: [m["away"] for m in meeting.room["members"]] == [False, False], 30,
                   "both members back")
        assert app.meeting is meeting and meeting.room["number"] == number
        assert bob.kernel.rooms.room["number"] == number
        assert not [e for e in bob.events.events[mark:] if e.kind in ("room_closed", "room_removed")]
    bob.kernel.rooms.chat("back after the restart")
    pump_until(app.root, lambda: "back after the restart" in meeting.chat_text.get("1.0", "end"), 10, "chat")


def test_the_meeting_window_shows_reconnecting_after_a_drop(gui_app, server, client_factory):
    app = gui_app
    meeting = open_meeting(app, "Blip")
    bob = bot(client_factory, server.port, "Bob")
    bob.kernel.rooms.join(meeting.room["number"])
    pump_until(app.root, lambda: len(meeting.grid_view.tiles) == 2, 10, "Bob's tile")
    for _ in range(3):                                   # every drop, not only the first
        mark = bob.events.mark()
        come_back_later(server, retry_after=1.0)         # everybody is cut off for a second
        pump_until(app.root, lambda: link_bar_shown(meeting), 10, "the Reconnecting… bar")
        pump_until(app.root, lambda: not meeting.link_bar.winfo_ismapped(), 15, "the bar to go")
        assert app.meeting is meeting and not meeting.closed
        pump_until(app.root, lambda: any(e.kind == "reconnected" for e in bob.events.events[mark:]), 15, "Bob back")
    bob.kernel.rooms.chat("still together")
    pump_until(app.root, lambda: "still together" in meeting.chat_text.get("1.0", "end"), 15, "chat")


# -- item 8: the people list and the views ------------------------------------------------------------
def test_people_list_icons_avatars_pin_views_panel_and_shortcuts(gui_app, server, client_factory):
    app = gui_app
    meeting = open_meeting(app, "Icons")
    me = app.kernel.user["id"]
    bob, carol = bot(client_factory, server.port, "Bob"), bot(client_factory, server.port, "Carol")
    bob.kernel.rooms.join(meeting.room["number"])
    carol.kernel.rooms.join(meeting.room["number"])
    bob.kernel.rooms.set_media_state(False, True, False)      # Bob: no camera, talking
    carol.kernel.rooms.set_media_state(True, False, False)    # Carol: camera, muted
    talking = AudioPublisher(bob.kernel.rooms, ToneSource(440.0)).start()
    try:
        rows = meeting.member_rows
        pump_until(app.root, lambda: uid(bob) in meeting.member_rows and uid(carol) in meeting.member_rows
                   and meeting.member_rows[uid(carol)].camera.state == "on", 10, "both rows with Carol's camera")
        assert meeting.member_rows[uid(carol)].mic.state == "off"
        assert meeting.member_rows[uid(bob)].camera.state == "off"
        pump_until(app.root, lambda: meeting.member_rows[uid(bob)].mic.state == "speaking", 10,
                   "Bob's microphone icon showing that he speaks")
        assert meeting.member_rows[uid(carol)].mic.state == "off"
        rows = meeting.member_rows

        # Bob's camera is off: his tile shows his avatar picture, not a letter
        bob_tile = meeting.grid_view.tiles[(uid(bob), MediaKind.CAMERA)]
        assert bob_tile.showing_avatar
        pump(app.root, 0.2)
        centre = screenshot(bob_tile.canvas)
        w, h = centre.size
        middle = centre.crop((w // 2 - 40, h // 2 - 40, w // 2 + 40, h // 2 + 40))
        assert len(middle.getcolors(maxcolors=80 * 80)) > 40, "a flat letter, not a picture"

        # my own tile comes first (top left), wherever I joined
        assert meeting.grid_view.ordered()[0] == (me, MediaKind.CAMERA)
        mine = meeting.grid_view.tiles[(me, MediaKind.CAMERA)]
        assert all(mine.winfo_y() <= t.winfo_y() and (mine.winfo_x() <= t.winfo_x() or mine.winfo_y() < t.winfo_y())
                   for t in meeting.grid_view.tiles.values())

        # pin Carol: her tile takes the stage; unpin
        rows[uid(carol)].menu.invoke("Pin")
        assert meeting.grid_view.stage == (uid(carol), MediaKind.CAMERA)
        assert "pinned" in meeting.grid_view.tiles[(uid(carol), MediaKind.CAMERA)].canvas.itemcget(
            meeting.grid_view.tiles[(uid(carol), MediaKind.CAMERA)]._label, "text")
        meeting.member_rows[uid(carol)].menu.invoke("Unpin")
        assert meeting.grid_view.stage is None

        # speaker view: the one who talks (Bob) fills the stage
        meeting.view_button.invoke()
        pump_until(app.root, lambda: meeting.grid_view.stage == (uid(bob), MediaKind.CAMERA), 10, "Bob on stage")
        meeting.view_button.invoke()
        assert meeting.grid_view.stage is None

        # the side panel hides and comes back, by button and by Alt+P
        meeting.panel_button.invoke()
        pump(app.root, 0.1)
        assert not meeting.side.winfo_ismapped()
        meeting.event_generate("<Alt-p>")
        pump(app.root, 0.1)
        assert meeting.side.winfo_ismapped()

        # shortcuts for mute and video, said in the tooltips
        mark = bob.events.mark()
        meeting.focus_force()
        meeting.event_generate("<Alt-a>")
        meeting.event_generate("<Alt-v>")
        pump(app.root, 0.1)
        assert meeting.mic_button.cget("text") == "Unmute" and meeting.cam_button.cget("text") == "Start video"
        wait_event(app.root, bob.events, "room_members", lambda e: any(
            m["user_id"] == me and not m["microphone"] and not m["camera"] for m in e["room"]["members"]), 5)
        assert bob.events.events[mark:]
        for button, key in ((meeting.mic_button, "Alt+A"), (meeting.cam_button, "Alt+V")):
            button.event_generate("<Enter>")
            tip = pump_until(app.root, lambda: [w for w in button.winfo_children() if isinstance(w, tk.Toplevel)],
                             3, "a tooltip")[0]
            assert key in " ".join(label_texts(tip))
            button.event_generate("<Leave>")
            pump(app.root, 0.05)
    finally:
        talking.stop()


# -- item 9: the host's waiting room, hand-over and end for all ------------------------------------------
def test_host_admits_refuses_hands_over_and_ends(gui_app, server, client_factory):
    app = gui_app
    meeting = open_meeting(app, "Board")
    number = meeting.room["number"]
    bob, carol = bot(client_factory, server.port, "Bob"), bot(client_factory, server.port, "Carol")
    meeting.lock_button.invoke()
    pump_until(app.root, lambda: meeting.room.get("locked"), 5, "the lock")
    bob_join = join_in_background(bob, number)
    pump_until(app.root, lambda: uid(bob) in meeting.waiting_rows, 10, "Bob in the waiting room")
    assert "Waiting to join (1)" in meeting.waiting_title.cget("text")
    assert "is waiting to join" in meeting.notice.cget("text")
    meeting.waiting_rows[uid(bob)].admit.invoke()
    assert bob_join.result(10)["number"] == number
    pump_until(app.root, lambda: len(meeting.grid_view.tiles) == 2 and not meeting.waiting_rows, 10, "Bob inside")

    carol_join = join_in_background(carol, number)
    pump_until(app.root, lambda: uid(carol) in meeting.waiting_rows, 10, "Carol waiting")
    meeting.waiting_rows[uid(carol)].refuse.invoke()
    with pytest.raises(ApiError) as refused:
        carol_join.result(10)
    assert refused.value.code == ErrorCode.ROOM_LOCKED
    pump_until(app.root, lambda: not meeting.waiting_box.winfo_ismapped(), 5, "the waiting box to go")

    # hand the host role to Bob (confirmed), and he hands it back
    meeting.member_rows[uid(bob)].menu.invoke("Make host")
    confirm = pump_until(app.root, lambda: find_toplevels(meeting, Dialog), 5, "the confirmation")[0]
    confirm.buttons["Make host"].invoke()
    wait_event(app.root, bob.events, "room_members", lambda e: e["room"]["host_id"] == uid(bob), 5)
    pump_until(app.root, lambda: not meeting.host_bar.winfo_ismapped(), 5, "my host tools to go")
    bob.kernel.rooms.hand_over(app.kernel.user["id"])
    pump_until(app.root, lambda: meeting.host_bar.winfo_ismapped(), 5, "my host tools back")

    # end the meeting for everyone
    meeting.leave_button.invoke()
    choice = pump_until(app.root, lambda: find_toplevels(meeting, Dialog), 5, "the leave choice")[0]
    choice.buttons["End meeting for all"].invoke()
    assert "host ended" in wait_event(app.root, bob.events, "room_closed", timeout=5)["message"]
    pump_until(app.root, lambda: app.meeting is None, 5, "my window to close")


def test_joining_a_locked_meeting_waits_for_the_host(gui_app, server, client_factory):
    app = gui_app
    host = bot(client_factory, server.port, "Hank")
    number = host.kernel.rooms.create("Locked one")["number"]
    host.kernel.rooms.lock(True)
    app.main_window.join_meeting_button.invoke()
    dialog = pump_until(app.root, lambda: find_toplevels(app.root, MeetingDialog), 5, "the join dialog")[0]
    dialog.fields["number"].insert(0, number)
    dialog.button.invoke()
    pump_until(app.root, lambda: "Waiting for the host" in dialog.error.cget("text"), 10, "the waiting text")
    assert "Locked one" in dialog.error.cget("text") and app.meeting is None
    wait_event(app.root, host.events, "room_waiting_list", lambda e: len(e["waiting"]) == 1, 5)
    host.kernel.rooms.admit(app.kernel.user["id"])
    meeting = pump_until(app.root, lambda: app.meeting, 10, "the meeting window")
    assert meeting.room["number"] == number and not dialog.winfo_exists()


# -- item 7: sharing the screen or a window ------------------------------------------------------------------
RED_WINDOW = """
import time
import tkinter as tk
root = tk.Tk()
root.title("Red document")
root.configure(background="#ff0000")
root.geometry("300x200+960+620")
root.mainloop()
"""

def test_share_the_screen_or_a_window_never_the_meeting_itself(gui_app, server, client_factory):
    app = gui_app
    meeting = open_meeting(app, "Share")
    meeting.geometry("900x600+0+0")
    red = subprocess.Popen([sys.executable, "-c", RED_WINDOW])     # another application's window
    bob = bot(client_factory, server.port, "Bob")
    bob.kernel.rooms.join(meeting.room["number"])
    pictures: dict = {}
    receiver = MeetingReceiver(bob.kernel.rooms, on_picture=lambda user, kind, frame, _t: kind == MediaKind.SCREEN
                        and pictures.__setitem__("last", frame.to_ndarray(format="bgr24")))
    try:
        pump_until(app.root, lambda: "Red document" in subprocess.run(
            ["xwininfo", "-root", "-tree"], capture_output=True, text=True).stdout, 10, "the red window")
        meeting.screen_button.invoke()
        picker = pump_until(app.root, lambda: find_toplevels(meeting, SharePicker), 5, "the share picker")[0]
        pump_until(app.root, lambda: picker.listbox.size() > 1, 10, "the list of windows")
        titles = list(picker.listbox.get(0, "end"))
        assert titles[0] == "Entire screen" and 'The window "Red document"' in titles
        assert not [t for t in titles if "Meeting" in t], "the meeting window must not be offered"
        picker.listbox.selection_clear(0, "end")
        picker.listbox.selection_set(0)
        picker.share_button.invoke()
        pump_until(app.root, lambda: meeting.share_bar.winfo_ismapped(), 5, "the sharing bar")
        assert "You are sharing your screen" in meeting.share_label.cget("text")
        assert meeting.mic_button.cget("text") == "Mute"   # the rest of the controls stay as they were

        # what Bob receives: the red window, and dark grey where the meeting window is
        scale = lambda pic: pic.shape[1] / app.root.winfo_screenwidth()  # noqa: E731
        px = lambda pic, x, y: pic[int(y * scale(pic)), int(x * scale(pic))].astype(int)  # noqa: E731
        screen = pump_until(app.root, lambda: "last" in pictures and np.abs(
            px(pictures["last"], 1100, 720) - (0, 0, 255)).max() < 60 and [pictures["last"]], 20,
            "Bob receiving the screen with the red window in it")[0]
        x, y = meeting.winfo_rootx(), meeting.winfo_rooty()
        for point in ((x + 200, y + 200), (x + 450, y + 300), (x + 800, y + 500)):
            assert np.abs(px(screen, *point) - np.array(HIDDEN_FILL)).max() < 30, "the meeting window is in its own share"

        # stop from the bar; then share only the red window
        meeting.stop_share_button.invoke()
        pump_until(app.root, lambda: not meeting.share_bar.winfo_ismapped(), 5, "the bar to go")
        assert meeting.screen_button.cget("text") == "Share screen"
        pictures.clear()
        meeting.screen_button.invoke()
        picker = pump_until(app.root, lambda: find_toplevels(meeting, SharePicker), 5, "the share picker")[0]
        pump_until(app.root, lambda: picker.listbox.size() > 1, 10, "the list of windows")
        index = list(picker.listbox.get(0, "end")).index('The window "Red document"')
        picker.listbox.selection_clear(0, "end")
        picker.listbox.selection_set(index)
        picker.share_button.invoke()
        pump_until(app.root, lambda: "Red document" in meeting.share_label.cget("text"), 5, "the bar")
        pump_until(app.root, lambda: "last" in pictures and pictures["last"].shape[:2] == (200, 300)
                   and np.abs(pictures["last"][100, 150].astype(int) - (0, 0, 255)).max() < 60, 20,
                   "Bob receiving the red window alone")
        meeting.stop_sharing()
    finally:
        receiver.close()
        red.kill()
        red.wait(5)


# -- item 10: devices -------------------------------------------------------------------------------------------
def choose(settings: DeviceSettings, key: str, value: str) -> None:
    box, options = settings.boxes[key]
    box.current([v for v, _n in options].index(value))
    box.event_generate("<<ComboboxSelected>>")


def test_device_checks_and_changes_apply_in_the_meeting(gui_app, server, client_factory, tmp_path):
    app = gui_app
    meeting = open_meeting(app, "Devices")
    meeting.devices_button.invoke()
    settings = pump_until(app.root, lambda: find_toplevels(meeting, DeviceSettings), 5, "the settings")[0]
    choose(settings, "camera", "test")
    pump_until(app.root, lambda: settings._photo is not None and settings.camera.frames > 5, 10, "a preview")
    first = screenshot(settings.preview_label)
    pump(app.root, 0.5)
    assert len(first.resize((64, 48)).getcolors(maxcolors=64 * 48)) > 30, "the preview is not a picture"
    assert first.tobytes() != screenshot(settings.preview_label).tobytes(), "the preview does not move"

    choose(settings, "microphone", "tone")
    pump_until(app.root, lambda: float(settings.meter.cget("value")) > 0.5, 5, "the meter to rise")
    choose(settings, "microphone", "silence")
    pump_until(app.root, lambda: float(settings.meter.cget("value")) < 0.05, 5, "the meter to fall")

    choose(settings, "speakers", "null")
    settings.tone_button.invoke()
    tone = settings.tone
    assert str(settings.tone_button.cget("state")) == "disabled"
    pump_until(app.root, lambda: "did you hear it" in settings.tone_label.cget("text"), 5, "the tone to end")
    assert tone.frames_played == 50                   # one second of 20 ms frames reached the sink

    audio_before = meeting.media.audio
    settings.apply_button.invoke()
    pump_until(app.root, lambda: not settings.winfo_exists(), 5, "the settings to close")
    assert meeting.media.microphone_choice == "silence" and meeting.media.audio is not audio_before
    assert meeting.media.camera_choice == "test" and meeting.media.camera is not None
    assert type(meeting.media.receiver.sink).__name__ == "NullSink"
    assert app.settings.microphone == "silence"
    painted = meeting.grid_view.tiles[(app.kernel.user["id"], MediaKind.CAMERA)].paints
    pump_until(app.root, lambda: meeting.grid_view.tiles[(app.kernel.user["id"], MediaKind.CAMERA)].paints
               > painted + 5, 10, "my camera again, from the new device")


def test_the_window_list_survives_a_window_closing_during_the_walk(xdisplay, monkeypatch):
    """xwininfo fails when a window closes while it walks the tree (a tooltip, a dialog): the
    list is read again instead of offering no windows."""
    from client.media import sources
    red = subprocess.Popen([sys.executable, "-c", RED_WINDOW])
    try:
        real_run, calls = subprocess.run, []

        def flaky_run(command, **kwargs):
            calls.append(command)
            if len(calls) == 1:
                raise subprocess.CalledProcessError(1, command, "", "X Error: BadWindow")
            return real_run(command, **kwargs)
        wait_until(lambda: any(t.title == 'the window "Red document"' for t in sources.list_windows()), 5,
                   "the red window listed")
        monkeypatch.setattr(sources.subprocess, "run", flaky_run)
        assert 'the window "Red document"' in [t.title for t in sources.list_windows()]
        assert len(calls) == 2
    finally:
        red.kill()
        red.wait(5)
