"""The desktop application: one Tk root, the login view, then the main window.

The app owns the kernel of the current session. It switches views on login, logout, a kick
(login elsewhere) or an expired session, and remembers the last server and phone number; with
"Remember me" also the session token, with which the next start logs in by itself.
"""
from __future__ import annotations

import gc
import tkinter as tk
from pathlib import Path

from client.events import EventKind
from client.kernel import ClientKernel
from client.link import ConnectError
from client.tls import TlsOptions
from common.errors import ApiError, ErrorCode

from .bridge import UiBridge
from .login import LoginView
from ..servers import Address, format_address, parse_servers
from .settings import FilePlaces, Settings, config_dir
from .widgets import (Dialog, apply_theme, describe_error, hide_dot_files_in_dialogs, install_edit_shortcuts,
                      keep_on_screen)

_FIELD_OF_ERROR = {
    ErrorCode.INVALID_PHONE: "phone", ErrorCode.PHONE_TAKEN: "phone",
    ErrorCode.INVALID_PASSWORD: "password", ErrorCode.INVALID_NICKNAME: "nickname",
}


class App:
    def __init__(self, root: tk.Tk, server: str | None = None, settings_path: Path | None = None,
                 tls: TlsOptions | None = None) -> None:
        self.root = root
        self.tls = tls
        self.settings_path = settings_path
        self.settings = Settings.load(settings_path)
        self.file_places = FilePlaces((settings_path or config_dir() / "client.json").with_name("files.json"))
        if server:
            self.settings.server = server
        apply_theme(root)
        install_edit_shortcuts(root)
        hide_dot_files_in_dialogs(root)
        root.bind_all("<Control-q>", lambda e: self.quit())
        root.title("Real-Time Meeting")
        root.minsize(380, 420)
        self.bridge = UiBridge(root)
        self.media_factory = self._make_media
        self._listener = self.bridge.kernel_listener()
        self.kernel: ClientKernel | None = None
        self.view: tk.Widget | None = None
        self.login_view: LoginView | None = None
        self.main_window = None
        self.meeting = None
        self.bridge.subscribe(EventKind.KICKED, self._on_kicked)
        self.bridge.subscribe(EventKind.SESSION_EXPIRED, self._on_session_expired)
        self.bridge.subscribe(EventKind.FILE_DONE, self._on_file_done)
        root.protocol("WM_DELETE_WINDOW", self.quit)
        self.show_login()
        if self.settings.remember and self.settings.session_token:
            self._resume_saved_session()

    # -- views ------------------------------------------------------------------------------------
    def _replace_view(self, view: tk.Widget, geometry: str) -> None:
        if self.view is not None:
            self.view.destroy()
        self.view = view
        view.pack(fill="both", expand=True)
        self.root.geometry(geometry)

    def show_login(self, notice: str = "") -> None:
        self._close_windows()
        self.main_window = None
        self.login_view = LoginView(self.root, self._submit, server=self.settings.server,
                                    phone=self.settings.phone, notice=notice, remember=self.settings.remember)
        self._replace_view(self.login_view, "720x560")
        self.root.title("Real-Time Meeting — log in")

    def show_main(self) -> None:
        from .main_window import MainWindow
        assert self.kernel is not None
        self.kernel.files.paths.update(self.file_places.paths())
        self.login_view = None
        self.main_window = MainWindow(self.root, self)
        self._replace_view(self.main_window, "440x740")
        self.root.title(f"Real-Time Meeting — {self.kernel.user.get('nickname', '')}")

    def _close_windows(self) -> None:
        """Close the meeting and the windows the main window opened."""
        if self.meeting is not None:
            self.meeting.close()
        if self.main_window is not None:
            self.main_window.close_children()

    # -- meetings -------------------------------------------------------------------------------
    def start_meeting(self, mode: str) -> None:
        """Open the create/join dialog; on success open the meeting window."""
        from .meeting_dialogs import MeetingDialog
        if self.meeting is not None:
            self.meeting.lift()
            return
        kernel = self.kernel

        def submit(values: dict, dialog: MeetingDialog) -> None:
            if mode == "create":
                work = (kernel.rooms.create, values["title"], values["password"])
            else:
                work = (kernel.rooms.join, values["number"], values["password"])

            def done(room: dict) -> None:
                if dialog.winfo_exists():
                    dialog.destroy()
                self.open_meeting(room)

            def failed(exc: BaseException) -> None:
                if dialog.winfo_exists():
                    dialog.show_error(describe_error(exc))
            self.bridge.call(*work, on_done=done, on_error=failed)
        return MeetingDialog(self.root, mode, submit, bridge=self.bridge, rooms=kernel.rooms)

    def open_meeting(self, room: dict):
        from .meeting_window import MeetingWindow
        self.meeting = MeetingWindow(self.root, self, room, media_factory=self.media_factory)
        keep_on_screen(self.meeting)
        return self.meeting

    def _make_media(self, window):
        from .meeting_media import MeetingMedia
        return MeetingMedia(window, camera=self.settings.camera, microphone=self.settings.microphone,
                            speakers=self.settings.speakers)

    def meeting_closed(self, window) -> None:
        if self.meeting is window:
            self.meeting = None

    # -- login ------------------------------------------------------------------------------------
    def _new_kernel(self, servers: list[Address]) -> ClientKernel:
        self._drop_kernel()
        kernel = ClientKernel.for_servers(servers, tls=self.tls, request_timeout=10.0)
        self._listener.active = False
        self._listener = self.bridge.kernel_listener()
        kernel.add_listener(self._listener)
        self.kernel = kernel
        return kernel

    def _submit(self, mode: str, servers: list[Address], phone: str, password: str, nickname: str) -> None:
        kernel = self._new_kernel(servers)

        def work() -> dict:
            kernel.connect()
            if mode == "register":
                kernel.register(phone, password, nickname)
            return kernel.login(phone, password)

        def done(_user: dict) -> None:
            if self.kernel is not kernel:
                return
            remember = self.login_view is not None and self.login_view.remember_me
            self.settings.server = ", ".join(format_address(server) for server in servers)
            self.settings.phone = phone
            self.settings.remember = remember
            self.settings.session_token = (kernel.token or "") if remember else ""
            self.settings.save(self.settings_path)
            self.show_main()

        def failed(exc: BaseException) -> None:
            if self.kernel is kernel:
                self._drop_kernel()
            if self.login_view is None:
                return
            field = "server" if isinstance(exc, ConnectError) else None
            if isinstance(exc, ApiError):
                field = _FIELD_OF_ERROR.get(exc.code)
            self.login_view.show_error(describe_error(exc), field)
        self.bridge.call(work, on_done=done, on_error=failed)

    def _resume_saved_session(self) -> None:
        """"Remember me": log in with the saved session token; an ended session is forgotten."""
        try:
            servers = parse_servers(self.settings.server)
        except ValueError:
            return
        kernel = self._new_kernel(servers)
        token = self.settings.session_token
        assert self.login_view is not None
        self.login_view.busy(True, "Logging in…")

        def work() -> dict:
            kernel.connect()
            return kernel.resume(token)

        def done(_user: dict) -> None:
            if self.kernel is kernel:
                self.show_main()

        def failed(exc: BaseException) -> None:
            if self.kernel is kernel:
                self._drop_kernel()
            if isinstance(exc, ApiError) and exc.code == ErrorCode.INVALID_TOKEN:
                self._forget_session()
                text = "Your saved login has ended (logged out elsewhere or expired). Please log in again."
            else:
                text = f"Could not log in automatically. {describe_error(exc)}"
            if self.login_view is not None:
                self.login_view.show_error(text)
        self.bridge.call(work, on_done=done, on_error=failed)

    def _forget_session(self) -> None:
        if self.settings.session_token:
            self.settings.session_token = ""
            self.settings.save(self.settings_path)

    def _drop_kernel(self) -> None:
        self._listener.active = False
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            self.bridge.call(kernel.close)

    def logout(self) -> None:
        self._forget_session()
        self._listener.active = False
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            def work() -> None:
                kernel.logout()
                kernel.close()
            self.bridge.call(work)
        self.show_login("You have logged out.")

    # -- session ends ------------------------------------------------------------------------------
    def _end_session(self, title: str, text: str) -> None:
        """Back to the login view at once (however the dialog is closed), the reason on top."""
        self._forget_session()
        self._drop_kernel()
        self.show_login(text)
        Dialog(self.root, title, text, [("Log in again", None, "Accent.TButton")], icon="warning")

    def _on_kicked(self, event) -> None:
        where = event.data.get("address") or "another device"
        self._end_session("Logged in elsewhere",
                          f"Your account was just logged in from {where}, so this window was signed out.")

    def _on_file_done(self, event) -> None:
        place = self.kernel.files.paths.get(event.data["transfer_id"]) if self.kernel else None
        if place is not None:
            self.file_places.remember(event.data["transfer_id"], place)

    def _on_session_expired(self, event) -> None:
        self._end_session("Session expired", "Your session has expired. Please log in again.")

    def quit(self) -> None:
        self._close_windows()
        kernel, self.kernel = self.kernel, None
        self.bridge.close()
        if kernel is not None:
            kernel.close()
        self.root.destroy()
        gc.collect()    # free cycles that hold Tk objects here, on the Tk thread, not in some worker


def run(server: str | None = None, tls: TlsOptions | None = None) -> int:
    """Open the desktop window; returns the process exit code. With ``tls`` the client speaks
    TLS and trusts the server by that CA file or pinned fingerprint."""
    try:
        root = tk.Tk(className="RealTimeMeeting")
    except tk.TclError as exc:
        print(f"meeting-client: cannot open a window ({exc}); is DISPLAY set?")
        return 2
    App(root, server=server, tls=tls)
    root.mainloop()
    return 0
