"""The main window: who I am, my friends (online first), friend requests, meetings, status."""
from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING

from .widgets import COLORS, FONT, AvatarCache

if TYPE_CHECKING:
    from .app import App


class MainWindow(ttk.Frame):
    def __init__(self, master: tk.Misc, app: "App") -> None:
        super().__init__(master)
        self.app = app
        self.kernel = app.kernel
        self.bridge = app.bridge
        self.avatars = AvatarCache(self)
        self._subscriptions: list[tuple[str, object]] = []
        self._notice_after: str | None = None
        self._build()
        for kind, handler in (("disconnected", self._on_disconnected), ("reconnecting", self._on_reconnecting),
                              ("reconnected", self._on_reconnected), ("going_away", self._on_going_away)):
            self._subscribe(kind, handler)
        self.bind("<Destroy>", self._on_destroy, add="+")

    def _subscribe(self, kind: str, handler) -> None:
        self._subscriptions.append((kind, self.bridge.subscribe(kind, handler)))

    def _on_destroy(self, event) -> None:
        if event.widget is self:
            for kind, handler in self._subscriptions:
                self.bridge.unsubscribe(kind, handler)
            self._subscriptions.clear()

    # -- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        header = tk.Frame(self, background=COLORS["header"])
        header.pack(fill="x")
        self.me_avatar = tk.Label(header, background=COLORS["header"], cursor="hand2")
        self.me_avatar.pack(side="left", padx=(14, 10), pady=12)
        names = tk.Frame(header, background=COLORS["header"], cursor="hand2")
        names.pack(side="left", fill="x", expand=True)
        self.me_name = tk.Label(names, background=COLORS["header"], foreground="white", font=(FONT, 13, "bold"),
                                anchor="w", cursor="hand2")
        self.me_name.pack(fill="x")
        self.me_signature = tk.Label(names, background=COLORS["header"], foreground="#aeb8cc", anchor="w",
                                     font=(FONT, 9), cursor="hand2")
        self.me_signature.pack(fill="x")
        self.menu_button = ttk.Menubutton(header, text="☰", style="TButton", width=2)
        self.menu = tk.Menu(self.menu_button, tearoff=False)
        self.menu.add_command(label="Log out", command=self.app.logout)
        self.menu_button["menu"] = self.menu
        self.menu_button.pack(side="right", padx=12)

        self.status = ttk.Label(self, text="", style="Status.TLabel", anchor="w")
        self.status.pack(side="bottom", fill="x")
        self.body = ttk.Frame(self, padding=(12, 10, 12, 6))
        self.body.pack(fill="both", expand=True)
        meetings = ttk.Frame(self.body)
        meetings.pack(fill="x")
        self.new_meeting_button = ttk.Button(meetings, text="＋  New meeting", style="Accent.TButton",
                                             command=lambda: self.app.start_meeting("create"))
        self.join_meeting_button = ttk.Button(meetings, text="Join meeting",
                                              command=lambda: self.app.start_meeting("join"))
        self.new_meeting_button.pack(side="left", fill="x", expand=True)
        self.join_meeting_button.pack(side="left", fill="x", expand=True, padx=(8, 0))
        self.refresh_me()
        self.show_state()

    def refresh_me(self) -> None:
        user = self.kernel.user or {}
        photo = self.avatars.get(user, 48)
        self.me_avatar.configure(image=photo)
        self.me_name.configure(text=user.get("nickname", ""))
        self.me_signature.configure(text=user.get("signature") or "Click to set a signature")

    # -- connection state and notices ------------------------------------------------------------
    def show_state(self) -> None:
        state = self.kernel.state if self.kernel else "offline"
        if state == "online":
            self.status.configure(text="●  Online", style="Status.TLabel", foreground=COLORS["online"])
        elif state == "reconnecting":
            self.status.configure(text="⟳  Reconnecting…", style="Warn.Status.TLabel", foreground="#8a5a00")
        else:
            self.status.configure(text="●  Offline", style="Status.TLabel", foreground=COLORS["muted"])

    def notify(self, text: str, seconds: float = 5.0) -> None:
        """A passing notice in the status bar; the connection state comes back afterwards."""
        if self._notice_after is not None:
            self.after_cancel(self._notice_after)
        self.status.configure(text=text, style="Status.TLabel", foreground=COLORS["text"])
        self._notice_after = self.after(int(seconds * 1000), self._end_notice)

    def _end_notice(self) -> None:
        self._notice_after = None
        self.show_state()

    def _on_disconnected(self, event) -> None:
        self.show_state()

    def _on_reconnecting(self, event) -> None:
        if self._notice_after is None:
            self.status.configure(text=f"⟳  Reconnecting… (attempt {event.data.get('attempt', 1)})",
                                  style="Warn.Status.TLabel", foreground="#8a5a00")

    def _on_reconnected(self, event) -> None:
        self.notify("✓  Reconnected", 3.0)

    def _on_going_away(self, event) -> None:
        self.notify("The server is restarting; reconnecting shortly…", 4.0)

    def close_children(self) -> None:
        """Close the windows this one opened (chats, meeting, profile)."""
        if self.app.meeting is not None:
            self.app.meeting.close()
