"""The small meeting dialogs: create (title, optional password) or join (number, password),
with the wait in a locked meeting's waiting room; and the screen-or-window share picker."""
from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING, Callable

from client.events import EventKind
from client.media.sources import SCREEN, ShareTarget, list_windows

from .widgets import COLORS, FONT

if TYPE_CHECKING:
    from client.rooms import RoomsClient

    from .bridge import UiBridge

SubmitFn = Callable[[dict[str, str], "MeetingDialog"], None]


class MeetingDialog(tk.Toplevel):
    """Collects the fields and calls ``on_submit(values, dialog)``; the caller answers with
    ``dialog.show_error(text)`` or closes it."""

    def __init__(self, parent: tk.Misc, mode: str, on_submit: SubmitFn, bridge: "UiBridge | None" = None,
                 rooms: "RoomsClient | None" = None) -> None:
        super().__init__(parent)
        self.mode = mode
        self.on_submit = on_submit
        self.bridge, self.rooms = bridge, rooms
        self.waiting = False
        self.title("New meeting" if mode == "create" else "Join a meeting")
        self.configure(background=COLORS["bg"])
        self.resizable(False, False)
        self.transient(parent.winfo_toplevel())
        body = ttk.Frame(self, padding=22)
        body.pack(fill="both", expand=True)
        ttk.Label(body, text="Start a new meeting" if mode == "create" else "Join a meeting",
                  font=(FONT, 14, "bold")).pack(anchor="w")
        hint = ("You will be the host. Share the meeting number with the people you invite."
                if mode == "create" else "Enter the 9-digit meeting number you were given.")
        ttk.Label(body, text=hint, style="Muted.TLabel", wraplength=320, justify="left").pack(anchor="w", pady=(2, 10))
        self.fields: dict[str, ttk.Entry] = {}
        specs = ([("title", "Title (optional)", ""), ("password", "Password (optional)", "•")] if mode == "create"
                 else [("number", "Meeting number", ""), ("password", "Password (if any)", "•")])
        for name, label, show in specs:
            ttk.Label(body, text=label, style="Section.TLabel").pack(anchor="w", pady=(6, 0))
            entry = ttk.Entry(body, show=show, width=34, font=(FONT, 11))
            entry.pack(fill="x", pady=(2, 0))
            entry.bind("<Return>", lambda e: self.submit())
            self.fields[name] = entry
        self.error = ttk.Label(body, text="", style="Error.TLabel", wraplength=320, justify="left")
        self.error.pack(anchor="w", pady=(8, 0))
        row = ttk.Frame(body)
        row.pack(fill="x", pady=(10, 0))
        self.button = ttk.Button(row, text="Start meeting" if mode == "create" else "Join",
                                 style="Accent.TButton", command=self.submit)
        self.button.pack(side="right")
        self.cancel_button = ttk.Button(row, text="Cancel", command=self.cancel)
        self.cancel_button.pack(side="right", padx=(0, 8))
        self.bind("<Escape>", lambda e: self.cancel())
        next(iter(self.fields.values())).focus_set()
        if bridge is not None:
            self._subscription = bridge.subscribe(EventKind.ROOM_WAITING, self._on_waiting)
            self.bind("<Destroy>", lambda e: e.widget is self and bridge.unsubscribe(EventKind.ROOM_WAITING,
                                                                                     self._on_waiting), add="+")

    def _on_waiting(self, event) -> None:
        """The meeting is locked: we wait for the host (the join call returns once let in)."""
        if self.winfo_exists() and self.mode == "join" and str(self.button.cget("state")) == "disabled":
            self.waiting = True
            title = event.data.get("title") or "the meeting"
            self.error.configure(text=f"Waiting for the host to let you into {title}…", style="TLabel")
            self.button.configure(text="Waiting…")

    def cancel(self) -> None:
        """Close; when waiting in a waiting room, stop waiting."""
        if self.waiting and self.bridge is not None and self.rooms is not None:
            self.bridge.call(self.rooms.leave)
        self.destroy()

    def submit(self) -> None:
        if str(self.button.cget("state")) == "disabled":
            return
        values = {name: entry.get().strip() if name != "password" else entry.get()
                  for name, entry in self.fields.items()}
        if self.mode == "join":
            number = values["number"].replace(" ", "").replace("-", "")
            if not (number.isdigit() and len(number) == 9):
                self.show_error("The meeting number has 9 digits")
                return
            values["number"] = number
        self.error.configure(text="")
        self.button.configure(state="disabled", text="Connecting…")
        self.on_submit(values, self)

    def show_error(self, text: str) -> None:
        self.waiting = False
        self.error.configure(text=text, style="Error.TLabel")
        self.button.configure(state="normal", text="Start meeting" if self.mode == "create" else "Join")


class SharePicker(tk.Toplevel):
    """Choose what to share: the entire screen or one window (the meeting's own windows are
    not offered). The list of windows is read off the Tk thread."""

    def __init__(self, parent: tk.Misc, bridge: "UiBridge", on_choose: Callable[[ShareTarget], None]) -> None:
        super().__init__(parent)
        self.on_choose = on_choose
        self.title("Share")
        self.configure(background=COLORS["bg"])
        self.transient(parent.winfo_toplevel())
        body = ttk.Frame(self, padding=18)
        body.pack(fill="both", expand=True)
        ttk.Label(body, text="What do you want to share?", font=(FONT, 13, "bold")).pack(anchor="w")
        ttk.Label(body, text="The meeting window itself is never shown to the others.", style="Muted.TLabel",
                  wraplength=380, justify="left").pack(anchor="w", pady=(2, 8))
        self.targets: list[ShareTarget] = [SCREEN]
        self.listbox = tk.Listbox(body, height=8, width=48, activestyle="none", font=(FONT, 10),
                                  exportselection=False)
        self.listbox.pack(fill="both", expand=True)
        self.listbox.insert("end", "Entire screen")
        self.listbox.selection_set(0)
        self.listbox.bind("<Double-Button-1>", lambda e: self.share())
        self.status = ttk.Label(body, text="Looking for windows…", style="Muted.TLabel")
        self.status.pack(anchor="w", pady=(6, 0))
        self.share_button = action_row(self, body, "Share", self.share, "Cancel")
        self.bind("<Return>", lambda e: self.share())
        own = own_windows(parent)
        self.own_titles = {title for _, title in own}
        bridge.call(list_windows, None, frozenset(i for i, _ in own), on_done=self._show_windows,
                    on_error=lambda exc: self._show_windows([]))

    def _show_windows(self, windows: list[ShareTarget]) -> None:
        if not self.winfo_exists():
            return
        windows = [w for w in windows if w.title not in self.own_titles]
        for target in windows:
            self.targets.append(target)
            self.listbox.insert("end", target.title[:1].upper() + target.title[1:])
        self.status.configure(text=f"{len(windows)} window{'s' if len(windows) != 1 else ''} found"
                              if windows else "No other windows found: you can share the entire screen")

    def share(self) -> None:
        chosen = self.listbox.curselection()
        target = self.targets[chosen[0]] if chosen else SCREEN
        self.destroy()
        self.on_choose(target)


def own_windows(widget: tk.Misc) -> list[tuple[int, str]]:
    """This application's top-level windows as (X id, the title list_windows would give)."""
    found = []
    stack: list[tk.Misc] = [widget.nametowidget(".")]
    while stack:
        top = stack.pop()
        stack.extend(top.winfo_children())
        if isinstance(top, (tk.Tk, tk.Toplevel)):
            title = f'the window "{top.wm_title()}"'
            found.append((top.winfo_id(), title))
            try:
                found.append((int(top.wm_frame(), 16), title))
            except (tk.TclError, ValueError):
                pass
    return found


def action_row(dialog: tk.Toplevel, body: tk.Misc, action: str, command: Callable[[], None],
               close: str = "Close") -> ttk.Button:
    """The bottom row of a small dialog: its action (returned) and a button that closes it,
    as Escape does."""
    row = ttk.Frame(body)
    row.pack(fill="x", pady=(12, 0))
    button = ttk.Button(row, text=action, style="Accent.TButton", command=command)
    button.pack(side="right")
    ttk.Button(row, text=close, command=dialog.destroy).pack(side="right", padx=(0, 8))
    dialog.bind("<Escape>", lambda e: dialog.destroy())
    return button
