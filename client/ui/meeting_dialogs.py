"""The small dialogs that start a meeting: create (title, optional password) or join (number, password)."""
from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import Callable

from .widgets import COLORS, FONT

SubmitFn = Callable[[dict[str, str], "MeetingDialog"], None]


class MeetingDialog(tk.Toplevel):
    """Collects the fields and calls ``on_submit(values, dialog)``; the caller answers with
    ``dialog.show_error(text)`` or closes it."""

    def __init__(self, parent: tk.Misc, mode: str, on_submit: SubmitFn) -> None:
        super().__init__(parent)
        self.mode = mode
        self.on_submit = on_submit
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
        ttk.Button(row, text="Cancel", command=self.destroy).pack(side="right", padx=(0, 8))
        self.bind("<Escape>", lambda e: self.destroy())
        next(iter(self.fields.values())).focus_set()

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
        self.error.configure(text=text)
        self.button.configure(state="normal", text="Start meeting" if self.mode == "create" else "Join")
