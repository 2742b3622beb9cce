"""The login / register view: server, phone number, password (and nickname to register)."""
from __future__ import annotations

import tkinter as tk
from tkinter import ttk
from typing import Callable

from common.errors import ApiError
from common.validation import check_password, normalize_nickname, normalize_phone

from ..servers import Address, parse_servers
from .widgets import COLORS, FONT

SubmitFn = Callable[[str, list[Address], str, str, str], None]
ERROR_WIDTH = 370     # px: errors wrap inside the form, never cut off at its edge


class LoginView(ttk.Frame):
    """Collects and checks the fields, then hands them to ``on_submit(mode, (host, port), phone,
    password, nickname)``; the app answers with ``busy()``, ``show_error()`` or by replacing it."""

    def __init__(self, master: tk.Misc, on_submit: SubmitFn, server: str = "", phone: str = "",
                 notice: str = "", remember: bool = True) -> None:
        super().__init__(master)
        self.on_submit = on_submit
        self.mode = "login"
        self._build(server, phone, notice)
        self.remember_me = remember

    def _build(self, server: str, phone: str, notice: str) -> None:
        brand = tk.Frame(self, background=COLORS["header"], width=260)
        brand.pack(side="left", fill="y")
        brand.pack_propagate(False)
        logo = tk.Canvas(brand, width=64, height=64, highlightthickness=0, background=COLORS["header"])
        logo.create_oval(2, 2, 62, 62, fill=COLORS["accent"], outline="")
        logo.create_rectangle(16, 22, 38, 42, fill="white", outline="")
        logo.create_polygon(38, 28, 48, 22, 48, 42, 38, 36, fill="white")
        logo.pack(anchor="w", padx=28, pady=(60, 14))
        tk.Label(brand, text="Real-Time\nMeeting", justify="left", background=COLORS["header"],
                 foreground="white", font=(FONT, 20, "bold")).pack(anchor="w", padx=28)
        tk.Label(brand, text="Chat with friends, share files\nand meet face to face.", justify="left",
                 background=COLORS["header"], foreground="#aeb8cc", font=(FONT, 10)).pack(anchor="w", padx=28,
                                                                                         pady=(10, 0))

        form = ttk.Frame(self, padding=(36, 30))
        form.pack(side="left", fill="both", expand=True)
        tabs = ttk.Frame(form)
        tabs.pack(fill="x", pady=(0, 14))
        self.tab_login = tk.Label(tabs, text="Log in", font=(FONT, 14, "bold"), cursor="hand2",
                                  background=COLORS["bg"])
        self.tab_register = tk.Label(tabs, text="Create account", font=(FONT, 14, "bold"), cursor="hand2",
                                     background=COLORS["bg"])
        self.tab_login.pack(side="left")
        self.tab_register.pack(side="left", padx=(18, 0))
        self.tab_login.bind("<Button-1>", lambda e: self.set_mode("login"))
        self.tab_register.bind("<Button-1>", lambda e: self.set_mode("register"))

        self.notice = ttk.Label(form, text=notice, style="Muted.TLabel", wraplength=ERROR_WIDTH, justify="left")
        self.notice.pack(fill="x")
        self.fields: dict[str, ttk.Entry] = {}
        self.field_errors: dict[str, ttk.Label] = {}
        self.rows: dict[str, ttk.Frame] = {}
        for name, label, value, show in (("server", "Server", server, ""), ("phone", "Phone number", phone, ""),
                                         ("password", "Password", "", "•"), ("nickname", "Nickname", "", "")):
            row = ttk.Frame(form)
            row.pack(fill="x", pady=(6, 0))
            ttk.Label(row, text=label, style="Section.TLabel").pack(anchor="w")
            entry = ttk.Entry(row, show=show, width=34, font=(FONT, 11))
            entry.insert(0, value)
            entry.pack(fill="x", pady=(2, 0))
            entry.bind("<Return>", lambda e: self.submit())
            error = ttk.Label(row, text="", style="Error.TLabel", font=(FONT, 9), wraplength=ERROR_WIDTH,
                              justify="left")
            error.pack(anchor="w", fill="x")
            self.fields[name], self.field_errors[name], self.rows[name] = entry, error, row
        self.remember_box = ttk.Checkbutton(form, text="Remember me on this computer")
        self.remember_box.pack(anchor="w", pady=(6, 0))
        self.error = ttk.Label(form, text="", style="Error.TLabel", wraplength=ERROR_WIDTH, justify="left")
        self.error.pack(fill="x", pady=(4, 0))
        bottom = ttk.Frame(form)
        bottom.pack(fill="x", pady=(8, 0))
        self.button = ttk.Button(bottom, text="Log in", style="Accent.TButton", command=self.submit)
        self.button.pack(side="left")
        self.progress = ttk.Progressbar(bottom, mode="indeterminate", length=120)
        self.status = ttk.Label(bottom, text="", style="Muted.TLabel")
        self.status.pack(side="left", padx=(12, 0))
        self.set_mode("login")
        first_empty = next((e for e in self.fields.values() if not e.get()), self.fields["password"])
        first_empty.focus_set()

    @property
    def remember_me(self) -> bool:
        return self.remember_box.instate(["selected"])

    @remember_me.setter
    def remember_me(self, on: bool) -> None:
        # no Tk variable: one freed by a worker thread's last reference would abort Tcl
        self.remember_box.state(["selected" if on else "!selected", "!alternate"])

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        active, idle = (self.tab_login, self.tab_register) if mode == "login" else (self.tab_register, self.tab_login)
        active.configure(foreground=COLORS["text"])
        idle.configure(foreground=COLORS["offline"])
        if mode == "register":
            self.rows["nickname"].pack(fill="x", pady=(6, 0), before=self.remember_box)
            self.button.configure(text="Create account")
        else:
            self.rows["nickname"].pack_forget()
            self.button.configure(text="Log in")
        self.clear_errors()

    def clear_errors(self) -> None:
        for label in self.field_errors.values():
            label.configure(text="")
        self.error.configure(text="")

    def value(self, name: str) -> str:
        return self.fields[name].get()

    def submit(self) -> None:
        """Check the fields here (friendly, instant errors) before anything goes to the server."""
        if str(self.button.cget("state")) == "disabled":
            return
        self.clear_errors()
        problems: dict[str, str] = {}
        servers = []
        try:
            servers = parse_servers(self.value("server"))
        except ValueError as exc:
            problems["server"] = str(exc)
        checks = [("phone", lambda: normalize_phone(self.value("phone")))]
        if self.mode == "register":
            checks += [("password", lambda: check_password(self.value("password"))),
                       ("nickname", lambda: normalize_nickname(self.value("nickname")))]
        elif not self.value("password"):
            problems["password"] = "Enter your password"
        for name, check in checks:
            try:
                check()
            except ApiError as exc:
                problems[name] = exc.message[:1].upper() + exc.message[1:]
        if problems:
            for name, text in problems.items():
                self.field_errors[name].configure(text=text)
            self.fields[next(iter(problems))].focus_set()
            return
        self.busy(True, "Connecting…" if self.mode == "login" else "Creating your account…")
        self.on_submit(self.mode, servers, normalize_phone(self.value("phone")), self.value("password"),
                       self.value("nickname").strip())

    def busy(self, on: bool, text: str = "") -> None:
        self.button.configure(state="disabled" if on else "normal")
        self.status.configure(text=text)
        if on:
            self.progress.pack(side="left", padx=(12, 0), before=self.status)
            self.progress.start(12)
        else:
            self.progress.stop()
            self.progress.pack_forget()

    def show_error(self, text: str, field: str | None = None) -> None:
        self.busy(False)
        if field:
            self.field_errors[field].configure(text=text)
            self.fields[field].focus_set()
        else:
            self.error.configure(text=text)
