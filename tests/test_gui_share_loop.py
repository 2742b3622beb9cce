"""Sharing the screen and the camera on and off in a loop in the real meeting window.

Under Xvfb the screen is captured by FFmpeg's x11grab, the library whose source, closed under
its reading thread, took the whole client down when sharing stopped. A crash here kills the
test process; the test also checks that every publisher ended and closed its source.
"""
from __future__ import annotations

import pytest

from client.media.sources import SCREEN, ScreenSource
from tests.gui_helpers import gui_app, pump, pump_until, xdisplay  # noqa: F401
from tests.test_gui_meeting import open_meeting

pytestmark = pytest.mark.gui


def test_start_and_stop_sharing_and_camera_in_a_loop(gui_app):
    app = gui_app
    meeting = open_meeting(app, "Share loop")
    media = meeting.media
    publishers = []
    for round_ in range(6):
        media.set_publishing(camera=True, microphone=False, screen=SCREEN)
        publishers += [media.camera, media.screen]
        pump(app.root, 0.25 + 0.05 * round_)
        media.set_publishing(camera=False, microphone=False, screen=None)
        pump(app.root, 0.05 * round_)
    assert any(isinstance(p.source.source, ScreenSource) for p in publishers if p.kind.name == "SCREEN"), \
        "the real X11 grabber was exercised"
    pump_until(app.root, lambda: not any(p._thread.is_alive() for p in publishers), 15,
               "every publisher thread to end")
    meeting.close()
    pump(app.root, 0.3)
