"""The real meeting window under Xvfb: create a meeting, two bots join, tiles and member list
follow, room chat both ways, host actions, leaving."""
from __future__ import annotations

import pytest

from client.ui.app import App
from client.ui.meeting_window import MeetingWindow
from client.ui.widgets import Dialog
from common.media import MediaKind
from tests.gui_helpers import (find_toplevels, gui_app, label_texts, press_key, pump,  # noqa: F401
                               pump_until, screenshot, wait_event, xdisplay)

pytestmark = pytest.mark.gui


def open_meeting(app: App, title: str = "Weekly sync") -> MeetingWindow:
    app.main_window.new_meeting_button.invoke()
    dialog = app.root.winfo_children()[-1]
    dialog.fields["title"].insert(0, title)
    dialog.button.invoke()
    return pump_until(app.root, lambda: app.meeting, 10, "the meeting window")


def test_meeting_members_chat_and_host_actions(gui_app, server, client_factory):
    app = gui_app
    meeting = open_meeting(app)
    number = meeting.room["number"]
    assert meeting.number_label.cget("text").replace(" ", "").endswith(number)
    meeting.copy_button.invoke()
    assert app.root.clipboard_get() == number

    bob, carol = client_factory(server.port), client_factory(server.port)
    bob.register_and_login("Bob")
    carol.register_and_login("Carol")
    bob.kernel.rooms.join(number)
    carol.kernel.rooms.join(number)
    pump_until(app.root, lambda: len(meeting.grid_view.tiles) == 3, 10, "three tiles")
    assert {t.name for t in meeting.grid_view.tiles.values()} == {"Alice", "Bob", "Carol"}
    assert meeting.tabs.tab(meeting.people_tab, "text") == "People (3)"

    # room chat both ways
    meeting.tabs.select(meeting.chat_tab)
    meeting.chat_entry.insert(0, "hello room")
    press_key(meeting.chat_entry, "Return")
    wait_event(app.root, bob.events, "room_chat", lambda e: e["text"] == "hello room", 5)
    bob.kernel.rooms.chat("hi Alice")
    pump_until(app.root, lambda: "hi Alice" in meeting.chat_text.get("1.0", "end"), 5, "Bob's message")
    assert "Bob" in meeting.chat_text.get("1.0", "end")

    # the host mutes Bob from his row's menu, then removes Carol after confirming
    bob_id = bob.kernel.user["id"]
    meeting.member_rows[bob_id].menu.invoke("Ask to mute")
    wait_event(app.root, bob.events, "room_mute", timeout=5)
    carol_id = carol.kernel.user["id"]
    meeting.member_rows[carol_id].menu.invoke("Remove from meeting…")
    confirm = pump_until(app.root, lambda: find_toplevels(meeting, Dialog), 5, "the confirmation")[0]
    assert "Remove Carol" in confirm.text
    confirm.buttons["Remove"].invoke()
    wait_event(app.root, carol.events, "room_removed", timeout=5)
    pump_until(app.root, lambda: len(meeting.grid_view.tiles) == 2, 5, "Carol's tile to go")
    assert "Carol" not in " ".join(label_texts(meeting.member_list))

    # the host leaving is asked: end for all, or leave; leaving closes the window, Bob becomes host
    meeting.leave_button.invoke()
    confirm = pump_until(app.root, lambda: find_toplevels(meeting, Dialog), 5, "the leave confirmation")[0]
    assert "End meeting for all" in confirm.buttons
    confirm.buttons["Leave meeting"].invoke()
    pump_until(app.root, lambda: app.meeting is None, 5, "the window to close")
    wait_event(app.root, bob.events, "room_members", lambda e: e["room"]["host_id"] == bob_id, 5)


def test_join_errors_are_shown_in_the_dialog(gui_app):
    app = gui_app
    app.main_window.join_meeting_button.invoke()
    dialog = app.root.winfo_children()[-1]
    dialog.fields["number"].insert(0, "12345")
    dialog.button.invoke()
    assert "9 digits" in dialog.error.cget("text")
    dialog.fields["number"].delete(0, "end")
    dialog.fields["number"].insert(0, "000 000 001")
    dialog.button.invoke()
    pump_until(app.root, lambda: dialog.error.cget("text"), 10, "the join error")
    assert "no such meeting" in dialog.error.cget("text").lower()
    assert app.meeting is None


def test_logging_out_closes_the_meeting_window(gui_app):
    app = gui_app
    meeting = open_meeting(app)
    app.main_window.menu.invoke("Log out")
    pump_until(app.root, lambda: app.login_view, 5, "the login view")
    assert app.meeting is None and not meeting.winfo_exists()


def start_bot_video(kernel, label: str):
    from client.media.pipeline import VideoPublisher
    from client.media.sources import TestPatternSource
    from client.media.video_codec import H264Encoder, VideoProfile
    source = TestPatternSource(320, 240, 25.0, label)
    return VideoPublisher(kernel.rooms, source, H264Encoder(VideoProfile(320, 240, 25.0, 300_000))).start()


def tile_difference(a, b) -> float:
    """Mean absolute difference of two screenshots, 0-255."""
    from PIL import ImageChops, ImageStat
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def test_tiles_show_moving_video_from_two_bots(gui_app, server, client_factory):
    app = gui_app
    meeting = open_meeting(app, "Video check")
    number = meeting.room["number"]
    bots, publishers = [], []
    for name in ("Bob", "Carol"):
        bot = client_factory(server.port)
        bot.register_and_login(name)
        bot.kernel.rooms.join(number)
        bot.kernel.rooms.set_media_state(True, False, False)
        publishers.append(start_bot_video(bot.kernel, name))
        bots.append(bot)
    try:
        pump_until(app.root, lambda: len(meeting.grid_view.tiles) == 3, 10, "three tiles")
        tiles = {bot.kernel.user["id"]: meeting.grid_view.tiles[(bot.kernel.user["id"], MediaKind.CAMERA)]
                 for bot in bots}
        pump_until(app.root, lambda: all(t.paints >= 10 for t in tiles.values()), 15, "video in both tiles")
        for uid, tile in tiles.items():
            first = screenshot(tile.canvas)
            pump(app.root, 0.6)
            second = screenshot(tile.canvas)
            assert tile_difference(first, second) > 1.0, f"the picture of user {uid} does not move"
            colours = len(second.resize((64, 48)).getcolors(maxcolors=64 * 48))
            assert colours > 50, "the tile shows a flat colour, not the test pattern"
        me = meeting.grid_view.tiles[(app.kernel.user["id"], MediaKind.CAMERA)]
        assert me.paints > 0, "no self view"

        # a minimised window asks the relay to pause the remote video; shown again, it resumes
        stream = meeting.media.receiver.members[bots[0].kernel.user["id"]].video[MediaKind.CAMERA]
        meeting.withdraw()
        pump(app.root, 1.0)
        received = stream.stats.received
        pump(app.root, 1.0)
        assert stream.stats.received - received <= 3, "video still flows to a hidden window"
        meeting.deiconify()
        painted = tiles[bots[0].kernel.user["id"]].paints
        pump_until(app.root, lambda: tiles[bots[0].kernel.user["id"]].paints > painted + 10, 10, "video again")

        # Bob talks (a tone): his tile gets the active-speaker ring; Carol's does not
        from client.media.audio_io import ToneSource
        from client.media.pipeline import AudioPublisher
        bob, carol = bots
        bob.kernel.rooms.set_media_state(True, True, False)
        publishers.append(AudioPublisher(bob.kernel.rooms, ToneSource(440.0)).start())
        pump_until(app.root, lambda: tiles[bob.kernel.user["id"]].speaking, 10, "Bob's speaking ring")
        assert not tiles[carol.kernel.user["id"]].speaking

        # Carol shares her screen: it takes the big stage, the cameras move to a strip
        from client.media.pipeline import VideoPublisher
        from client.media.sources import TestPatternSource
        from client.media.video_codec import H264Encoder, screen_profile
        carol.kernel.rooms.set_media_state(True, False, True)
        publishers.append(VideoPublisher(carol.kernel.rooms, TestPatternSource(640, 360, 5.0, "screen"),
                                         H264Encoder(screen_profile(640, 360, 5.0)), kind=MediaKind.SCREEN).start())
        screen_key = (carol.kernel.user["id"], MediaKind.SCREEN)
        pump_until(app.root, lambda: meeting.grid_view.stage == screen_key
                   and meeting.grid_view.tiles[screen_key].paints > 2, 10, "the shared screen on stage")
        stage = meeting.grid_view.tiles[screen_key]
        assert stage.winfo_width() > 2 * max(t.winfo_width() for t in tiles.values())
        assert "sharing" in " ".join(label_texts(meeting.member_rows[carol.kernel.user["id"]]))

        # my camera off: my tile shows my initial, the bots are told
        meeting.cam_button.invoke()
        wait_event(app.root, bots[0].events, "room_members",
                   lambda e: not next(m for m in e["room"]["members"] if m["user_id"] == app.kernel.user["id"])["camera"],
                   5)
        pump_until(app.root, lambda: not me.has_video, 5, "the self view to stop")
        assert meeting.cam_button.cget("text") == "Start video"
    finally:
        for publisher in publishers:
            publisher.stop()
