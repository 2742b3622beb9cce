"""Save screenshots of the desktop client's login, main, chat and meeting windows.

It starts a private Xvfb, a real local server (SQLite in a temporary directory) and a few
bots (client cores) that befriend, chat, send a file and publish test-pattern video, then
drives the real Tk window and captures each view with ImageMagick's ``import``.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import tkinter as tk
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.gui_helpers import Xvfb, pump, pump_until, register_in_window, screenshot  # noqa: E402
from tests.helpers import TestClient, start_server, test_config, unique_phone  # noqa: E402

PASSWORD = "correct horse battery"


def bot(port: int, nickname: str, signature: str = "", avatar: int | None = None) -> TestClient:
    client = TestClient(port)
    client.register_and_login(nickname)
    if signature:
        client.kernel.profile.update(signature=signature)
    if avatar:
        client.kernel.profile.choose_builtin_avatar(avatar)
    return client


def place(window: tk.Misc, x: int, y: int) -> None:
    window.geometry(f"+{x}+{y}")
    window.update()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="rtm-shots-")
    os.environ["XDG_CONFIG_HOME"] = f"{tmp}/config"
    xvfb = Xvfb(1600, 1000)
    os.environ["DISPLAY"] = xvfb.start()
    server = start_server(test_config(Path(tmp)))
    bots: list[TestClient] = []
    publishers = []
    try:
        from client.ui import chat_window
        from client.ui.app import App

        root = tk.Tk()
        app = App(root, server=f"127.0.0.1:{server.port}")
        phone = unique_phone()
        app.login_view.fields["phone"].insert(0, phone)
        place(root, 20, 20)
        pump(root, 0.3)
        screenshot(root).save(out / "login.png")
        print("saved", out / "login.png")

        main_window = register_in_window(app, "Alice", phone=phone, password=PASSWORD)
        app.kernel.profile.update(signature="Product design · Berlin")
        app.kernel.profile.choose_builtin_avatar(3)
        me = app.kernel.user["id"]

        people = [("Bob", "Out for lunch", 5), ("Carol", "Shipping the release", 8),
                  ("Dave", "", 11), ("Erin", "On holiday until Monday", 2)]
        for nickname, signature, avatar in people:
            client = bot(server.port, nickname, signature, avatar)
            client.kernel.friends.add(phone=phone)
            bots.append(client)
        pump_until(root, lambda: len(main_window.incoming) == len(people), 10, "the requests")
        for request in list(main_window.incoming):
            app.kernel.friends.answer(request["id"], True)
        bob, carol, dave, erin = bots
        erin.kernel.logout()
        frank = bot(server.port, "Frank", avatar=9)
        frank.kernel.friends.add(phone=phone, greeting="We met at the conference")
        bots.append(frank)
        bob.kernel.chat.send_and_wait(me, "Are we still on for 3pm?")
        carol.kernel.chat.send_and_wait(me, "The build is green!")
        carol.kernel.chat.send_and_wait(me, "Release notes are in the shared folder")
        app.kernel.chat.send_and_wait(dave.kernel.user["id"], "Thanks for the review!")
        pump_until(root, lambda: len(main_window.rows) == 4 and main_window.request_rows(), 10, "the lists")
        pump(root, 1.0)
        place(root, 20, 20)
        screenshot(root).save(out / "main.png")
        print("saved", out / "main.png")

        bob_id = bob.kernel.user["id"]
        chat = main_window.open_chat(bob_id)
        place(chat, 500, 20)
        pump(root, 0.5)
        for text in ("Yes! I'll send the slides before.", "Here they are:"):
            app.kernel.chat.send_and_wait(bob_id, text)
        bob.kernel.chat.mark_read(me)
        slides = Path(tmp) / "Quarterly review.pdf"
        slides.write_bytes(os.urandom(2 * 1024 * 1024))
        bob.events.mark()
        chat.send_file(str(slides))
        offer = bob.events.wait_for("file_offer", timeout=15)
        bob.kernel.files.accept(offer["transfer_id"], directory=Path(tmp) / "bob")
        pump_until(root, lambda: any(r.state == "done" for r in chat.transfers.values()), 30, "the transfer")
        bob.kernel.chat.send_and_wait(me, "Got them, thanks. See you at 3")
        notes = Path(tmp) / "notes.txt"
        notes.write_text("agenda\n" * 2000)
        bob.kernel.files.send_file(me, notes)
        pump_until(root, lambda: any(r.direction == "receive" for r in chat.transfers.values()), 10, "the offer")
        bob.kernel.chat.typing(me, True)
        pump(root, 0.5)
        chat.scroll_to_end()
        pump(root, 0.5)
        screenshot(chat).save(out / "chat.png")
        print("saved", out / "chat.png")
        chat.close()

        chat_window.ask_save_path = lambda parent, name: ""
        meeting_dialog = app.start_meeting("create")
        meeting_dialog.fields["title"].insert(0, "Weekly sync")
        meeting_dialog.submit()
        meeting = pump_until(root, lambda: app.meeting, 10, "the meeting window")
        place(meeting, 300, 60)
        number = meeting.room["number"]
        from client.media.audio_io import ToneSource
        from client.media.pipeline import AudioPublisher, VideoPublisher
        from client.media.sources import TestPatternSource
        from client.media.video_codec import CAMERA_VGA, H264Encoder
        # Bob talks (camera on), Carol is muted (camera on), Dave has his camera off (his avatar)
        for client, camera, mic in ((bob, True, True), (carol, True, False), (dave, False, True)):
            client.kernel.rooms.join(number)
            client.kernel.rooms.set_media_state(camera, mic, False)
            if camera:
                source = TestPatternSource(640, 480, 30.0, client.kernel.user["nickname"])
                publishers.append(VideoPublisher(client.kernel.rooms, source, H264Encoder(CAMERA_VGA)).start())
        publishers.append(AudioPublisher(bob.kernel.rooms, ToneSource(440.0)).start())
        carol.kernel.rooms.chat("Hi all, joining from the train")
        bob.kernel.rooms.chat("Let's start with the release")
        dave_id = dave.kernel.user["id"]
        pump_until(root, lambda: len(meeting.grid_view.tiles) == 4
                   and all(t.paints > 20 for k, t in meeting.grid_view.tiles.items() if k[0] != dave_id), 20,
                   "video in every camera tile")
        pump_until(root, lambda: meeting.member_rows[bob.kernel.user["id"]].mic.state == "speaking", 10,
                   "Bob's speaking icon")
        meeting.tabs.select(meeting.chat_tab)
        pump(root, 0.5)
        meeting.tabs.select(meeting.people_tab)
        pump(root, 1.0)
        screenshot(meeting).save(out / "meeting.png")
        print("saved", out / "meeting.png")
        app.quit()
    finally:
        for publisher in publishers:
            publisher.stop()
        for client in bots:
            client.close()
        server.stop()
        xvfb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
