"""The profile and settings window: nickname, signature, built-in and own avatars with a
preview, inline errors, and the device lists with their synthetic sources."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from client.ui.profile import ProfileWindow
from tests.gui_helpers import gui_app, pump_until, wait_event, xdisplay  # noqa: F401

pytestmark = pytest.mark.gui


def open_profile(app) -> ProfileWindow:
    app.main_window.me_name.event_generate("<Button-1>")
    return pump_until(app.root, lambda: app.main_window.profile_window, 5, "the profile window")


def test_edit_profile_and_avatars(gui_app, server, client_factory, tmp_path):
    app = gui_app
    main = app.main_window
    bob = client_factory(server.port)
    bob.register_and_login("Bob")
    bob.kernel.friends.add(phone=app.settings.phone)
    pump_until(app.root, main.request_rows, 10, "Bob's request")
    main.request_rows()[0].accept.invoke()
    wait_event(app.root, bob.events, "friend_added", timeout=10)

    window = open_profile(app)
    window.signature.delete(0, "end")
    window.signature.insert(0, "x" * 101)
    window.save_button.invoke()
    pump_until(app.root, lambda: window.error.cget("text"), 5, "the signature error")
    assert "at most 100" in window.error.cget("text")

    window.nickname.delete(0, "end")
    window.nickname.insert(0, "Alice B.")
    window.signature.delete(0, "end")
    window.signature.insert(0, "Out of office until Monday")
    window.builtin_buttons[4].event_generate("<Button-1>")
    window.save_button.invoke()
    pump_until(app.root, lambda: not window.winfo_exists(), 10, "the window to close after saving")
    pump_until(app.root, lambda: main.me_name.cget("text") == "Alice B.", 5, "the new nickname in the header")
    assert main.me_signature.cget("text") == "Out of office until Monday"
    assert app.kernel.user["avatar"]["builtin"] == 4
    changed = wait_event(app.root, bob.events, "profile_changed", lambda e: e["user"]["nickname"] == "Alice B.", 10)
    assert changed["user"]["signature"] == "Out of office until Monday"

    # an own picture: not-a-picture is refused inline, a real one is previewed then uploaded
    window = open_profile(app)
    fake = tmp_path / "fake.png"
    fake.write_text("not a picture")
    window.choose_file(str(fake))
    assert window.error.cget("text") == "This file is not a picture"
    photo = tmp_path / "me.jpg"
    Image.new("RGB", (300, 200), (200, 40, 40)).save(photo)
    window.choose_file(str(photo))
    assert window.error.cget("text") == "" and window.chosen_file is not None
    window.save_button.invoke()
    pump_until(app.root, lambda: not window.winfo_exists(), 15, "the upload")
    assert app.kernel.user["avatar"]["version"] > 0 and not app.kernel.user["avatar"].get("builtin")
    wait_event(app.root, bob.events, "profile_changed", lambda e: e["user"]["avatar"]["version"] > 0, 10)


def test_device_lists_offer_synthetic_sources(gui_app, tmp_path):
    app = gui_app
    window = open_profile(app)
    names = {key: box.cget("values") for key, (box, _options) in window.device_boxes.items()}
    assert "Test pattern (synthetic)" in names["camera"]
    assert "Tone (synthetic)" in names["microphone"] and "Silence (synthetic)" in names["microphone"]
    assert "No sound (synthetic)" in names["speakers"]
    box, options = window.device_boxes["camera"]
    box.current(list(names["camera"]).index("Test pattern (synthetic)"))
    box.event_generate("<<ComboboxSelected>>")
    saved = json.loads((tmp_path / "config" / "real-time-meeting" / "client.json").read_text())
    assert saved["camera"] == "test"
