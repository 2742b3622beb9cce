"""The real login window under Xvfb: inline errors, register + login, remembered fields,
"reconnecting…" and the kicked dialog after a second login elsewhere."""
from __future__ import annotations

import json
import socket
import subprocess
import tkinter as tk
from pathlib import Path

import pytest

from client.ui.app import App
from client.ui.login import LoginView
from client.ui.main_window import MainWindow
from client.tls import TlsOptions, certificate_fingerprint
from client.ui.widgets import Dialog
from tests.gui_helpers import find_toplevels, pump_until, xdisplay  # noqa: F401
from tests.helpers import cut_connection, unique_phone

pytestmark = pytest.mark.gui


@pytest.fixture
def make_app(xdisplay, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    apps = []

    def make(server: str, tls: TlsOptions | None = None) -> App:
        root = tk.Tk()
        app = App(root, server=server, tls=tls)
        apps.append(app)
        root.update()
        return app
    yield make
    for app in apps:
        try:
            app.quit()
        except tk.TclError:
            pass


def fill(view: LoginView, **values: str) -> None:
    for name, value in values.items():
        entry = view.fields[name]
        entry.delete(0, "end")
        entry.insert(0, value)


def register_in_window(app: App, phone: str, nickname: str = "Alice") -> MainWindow:
    view = app.login_view
    view.tab_register.event_generate("<Button-1>")
    fill(view, phone=phone, password="correct horse battery", nickname=nickname)
    view.button.invoke()
    pump_until(app.root, lambda: isinstance(app.main_window, MainWindow), 20, "the main window")
    return app.main_window


def test_inline_errors_without_and_with_the_server(make_app, server):
    app = make_app(f"127.0.0.1:{server.port}")
    view = app.login_view
    fill(view, phone="12ab", password="")
    view.fields["phone"].event_generate("<Return>")
    assert "5 to 20 digits" in view.field_errors["phone"].cget("text")
    assert view.field_errors["password"].cget("text") == "Enter your password"

    fill(view, phone=unique_phone(), password="not the right one")
    view.button.invoke()
    pump_until(app.root, lambda: view.error.cget("text"), 15, "the login error")
    assert "wrong phone number or password" in view.error.cget("text").lower()
    assert str(view.button.cget("state")) == "normal"

    fill(view, server="127.0.0.1:1")
    view.button.invoke()
    pump_until(app.root, lambda: view.field_errors["server"].cget("text"), 15, "the server error")
    assert "cannot reach the server" in view.field_errors["server"].cget("text").lower()


def test_register_login_remember_reconnect_and_kicked(make_app, server, client_factory, tmp_path):
    app = make_app(f"127.0.0.1:{server.port}")
    phone = unique_phone()
    main = register_in_window(app, phone, "Alice")
    assert main.me_name.cget("text") == "Alice"
    assert "Online" in main.status.cget("text")
    saved = json.loads((tmp_path / "config" / "real-time-meeting" / "client.json").read_text())
    assert saved["phone"] == phone and saved["server"] == f"127.0.0.1:{server.port}"

    cut_connection(app.kernel, "test: network cut")
    pump_until(app.root, lambda: "Reconnecting" in main.status.cget("text"), 5, "'Reconnecting…'")
    pump_until(app.root, lambda: "Reconnected" in main.status.cget("text") or "Online" in main.status.cget("text"),
               15, "back online")

    other = client_factory(server.port)
    other.kernel.login(phone, "correct horse battery")
    dialog = pump_until(app.root, lambda: find_toplevels(app.root, Dialog), 10, "the kicked dialog")[0]
    assert "logged in from" in dialog.text
    dialog.buttons["Log in again"].invoke()
    pump_until(app.root, lambda: isinstance(app.login_view, LoginView), 5, "the login view")
    assert app.login_view.fields["phone"].get() == phone
    assert app.kernel is None


def test_the_window_logs_in_over_tls_and_names_a_wrong_pin(make_app, server_factory, tmp_path):
    make_cert = Path(__file__).resolve().parents[1] / "scripts" / "make-cert.sh"
    for name in ("real", "other"):
        subprocess.run(["bash", str(make_cert), str(tmp_path / name)], capture_output=True, timeout=60, check=True)
    tls_server = server_factory(tls_cert=str(tmp_path / "real" / "server.crt"),
                                tls_key=str(tmp_path / "real" / "server.key"))
    address = f"127.0.0.1:{tls_server.port}"

    wrong = make_app(address, TlsOptions(fingerprint=certificate_fingerprint(str(tmp_path / "other" / "server.crt"))))
    fill(wrong.login_view, phone=unique_phone(), password="correct horse battery")
    wrong.login_view.button.invoke()
    errors = wrong.login_view.field_errors["server"]
    pump_until(wrong.root, lambda: errors.cget("text"), 15, "the certificate error")
    assert "does not match the pinned fingerprint" in errors.cget("text")
    wrong.quit()

    right = make_app(address, TlsOptions(fingerprint=certificate_fingerprint(str(tmp_path / "real" / "server.crt"))))
    main = register_in_window(right, unique_phone(), "Tess")
    assert main.me_name.cget("text") == "Tess"


def test_the_window_takes_several_servers_and_uses_one_that_answers(make_app, server, tmp_path):
    """The Server field takes a list: a first server that does not answer is skipped, the
    list is remembered as typed (normalised), and a bad entry is named inline."""
    with socket.socket() as probe:          # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    app = make_app(f"127.0.0.1:{server.port}")
    fill(app.login_view, server=f"127.0.0.1:{dead}, 127.0.0.1:99999")
    app.login_view.button.invoke()
    assert "127.0.0.1:99999: '99999' is not a port number" in app.login_view.field_errors["server"].cget("text")

    fill(app.login_view, server=f"127.0.0.1:{dead},127.0.0.1:{server.port}")
    main = register_in_window(app, unique_phone(), "Dana")
    assert "Online" in main.status.cget("text")
    assert (app.kernel.host, app.kernel.port) == ("127.0.0.1", server.port)
    saved = json.loads((tmp_path / "config" / "real-time-meeting" / "client.json").read_text())
    assert saved["server"] == f"127.0.0.1:{dead}, 127.0.0.1:{server.port}"
