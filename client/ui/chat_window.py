"""A conversation with one friend: messages with read marks, typing, history on scroll-up, files.

Messages come from ``kernel.chat`` (history pages, live events, the outbox's acknowledgements);
a file is a message too (its ``file`` field), drawn as a card whose progress and buttons
follow ``kernel.files``' events. The window only draws them and forwards what the user does;
everything that waits on the network runs through the bridge.

The conversation is a read-only Text: each message is one line holding its bubble (an
embedded frame); a time line goes before a message that follows the previous one after a
pause, and a "new messages" line before the first unread one when the window opens.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tkinter as tk
from pathlib import Path
from tkinter import filedialog, ttk
from typing import Protocol
from urllib.parse import unquote, urlparse

from client.events import EventKind
from client.kernel import ClientKernel
from common.messages import TransferState

from .bridge import Handler, UiBridge
from .widgets import (COLORS, FONT, AvatarCache, Dialog, confirm, describe_error, downloads_dir, enable_file_drop,
                      format_clock, format_size, place_beside)

PAGE = 30
MAX_PAGE = 100               # the server's largest history page
TIME_GAP_MS = 5 * 60 * 1000  # a pause this long between two messages shows the time again
TYPING_SEND_EVERY = 3.0      # seconds between "typing" packets while keys are pressed
TYPING_IDLE = 4.0            # quiet this long: tell the friend typing stopped
TYPING_SHOW = 6.0            # show the friend's "typing…" at most this long without news
WIDTH, HEIGHT = 560, 640
NEW_MESSAGES = "New messages"


def ask_save_path(parent: tk.Misc, name: str) -> str:
    return filedialog.asksaveasfilename(parent=parent, initialfile=name, initialdir=str(downloads_dir()),
                                        title="Save file as")


def ask_open_path(parent: tk.Misc) -> str:
    return filedialog.askopenfilename(parent=parent, initialdir=str(downloads_dir()), title="Send a file")


def open_path(path: str) -> None:
    """Open a file or folder with the desktop's default application."""
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen([opener, path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        pass


def pasted_paths(text: str) -> list[str]:
    """The files named by pasted text (file manager copies are ``file://`` URIs, one a line;
    a typed path works too); empty unless every line names an existing file."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    paths = []
    for line in lines:
        path = unquote(urlparse(line).path) if line.startswith("file://") else os.path.expanduser(line)
        if not os.path.isabs(path) or not os.path.isfile(path):
            return []
        paths.append(path)
    return paths


def message_time(message: dict) -> int:
    return int(message.get("time") or time.time() * 1000)


def file_state_text(mine: bool, state: str, nickname: str) -> str:
    """What a file message says when no transfer is running here (history, after a restart)."""
    S = TransferState
    if mine:
        return {S.OFFERED: f"Waiting for {nickname} to accept…", S.SENDING: "Sending…", S.UPLOADING: "Uploading…",
                S.SPOOLED: f"Uploaded ✓  {nickname} gets it at next login", S.DONE: "Sent ✓",
                S.DECLINED: f"{nickname} declined it", S.CANCELLED: "Cancelled", S.FAILED: "Failed",
                S.EXPIRED: f"Expired: {nickname} did not fetch it in time"}.get(state, state)
    return {S.OFFERED: "Offered", S.SPOOLED: "Waiting for you", S.SENDING: "Receiving…",
            S.UPLOADING: f"{nickname} is uploading it…", S.DONE: "Received ✓", S.DECLINED: "Declined",
            S.CANCELLED: "Cancelled", S.FAILED: "Failed", S.EXPIRED: "Expired"}.get(state, state)


class MessageRow(tk.Frame):
    """One text message: the bubble and, under it, the time or my message's delivery mark."""

    def __init__(self, window: "ChatWindow", message: dict) -> None:
        super().__init__(window.text, background=COLORS["bg"])
        self.mine = message["from"] == window.me
        self.bubble = tk.Label(self, text=message.get("text", ""), wraplength=330, justify="left", anchor="w",
                               background=COLORS["mine"] if self.mine else COLORS["theirs"], padx=10, pady=6,
                               font=(FONT, 10), highlightthickness=0 if self.mine else 1,
                               highlightbackground="#e3e7ee")
        self.bubble.pack(anchor="e" if self.mine else "w")
        self.meta = tk.Label(self, text="", background=COLORS["bg"], foreground=COLORS["muted"], font=(FONT, 7))
        self.meta.pack(anchor="e" if self.mine else "w")
        self.status = ""


class FileRow(tk.Frame):
    """A file message: a card with the name and size, then the progress, the state and the
    buttons that fit it (accept or decline an offer, cancel, open, show in folder)."""

    def __init__(self, window: "ChatWindow", message: dict) -> None:
        super().__init__(window.text, background=COLORS["bg"])
        file = message["file"]
        self.window = window
        self.transfer_id = str(file["transfer_id"])
        self.name = str(file.get("name") or message.get("text", ""))
        self.size = int(file.get("size", 0))
        self.mine = message["from"] == window.me
        self.direction = "send" if self.mine else "receive"
        self.state = "waiting"       # waiting | running | done | failed (what this window saw)
        self.status = ""
        card = tk.Frame(self, background="white", padx=10, pady=8, highlightthickness=1,
                        highlightbackground="#dbe3f0" if self.mine else "#e3e7ee")
        card.pack(anchor="e" if self.mine else "w")
        self.card = card
        top = tk.Frame(card, background="white")
        top.pack(fill="x")
        icon = tk.Canvas(top, width=30, height=36, highlightthickness=0, background="white")
        icon.create_polygon(2, 2, 20, 2, 28, 10, 28, 34, 2, 34, fill=COLORS["accent"], outline="")
        icon.create_polygon(20, 2, 20, 10, 28, 10, fill="#9dbdf5", outline="")
        extension = Path(self.name).suffix[1:5].upper()
        icon.create_text(15, 24, text=extension, fill="white", font=(FONT, 6, "bold"))
        icon.pack(side="left")
        names = tk.Frame(top, background="white")
        names.pack(side="left", padx=(8, 0))
        self.bubble = tk.Label(names, text=self.name, background="white", font=(FONT, 10, "bold"), anchor="w",
                               justify="left", wraplength=230)
        self.bubble.pack(fill="x")
        self.size_label = tk.Label(names, text=format_size(self.size), background="white",
                                   foreground=COLORS["muted"], font=(FONT, 8), anchor="w")
        self.size_label.pack(fill="x")
        self.bar = ttk.Progressbar(card, maximum=max(1, self.size), value=0, mode="determinate", length=250)
        self.info = tk.Label(card, text="", background="white", foreground=COLORS["muted"], font=(FONT, 8),
                             anchor="w", justify="left", wraplength=250)
        self.info.pack(fill="x", pady=(6, 0))
        self.buttons = tk.Frame(card, background="white")
        self.buttons.pack(fill="x")
        self.button_widgets: dict[str, ttk.Button] = {}
        self.saved_path: str | None = None      # the file here, once known
        self.meta = tk.Label(self, text="", background=COLORS["bg"], foreground=COLORS["muted"], font=(FONT, 7))
        self.meta.pack(anchor="e" if self.mine else "w")

    def set_buttons(self, *specs: tuple[str, object]) -> None:
        for child in self.buttons.winfo_children():
            child.destroy()
        self.button_widgets = {}
        for label, command in specs:
            button = ttk.Button(self.buttons, text=label, command=command,
                                style="Accent.TButton" if label.startswith("Accept") else "TButton")
            button.pack(side="left", padx=(0, 4), pady=(6, 0))
            self.window.bind_wheel(button)
            self.button_widgets[label] = button

    def show(self, text: str, tone: str = "muted") -> None:
        self.info.configure(text=text, foreground=COLORS[tone])

    def progress(self, done: int, total: int, rate: float, eta: float | None) -> None:
        self.state = "running"
        if not self.bar.winfo_ismapped():
            self.bar.pack(fill="x", pady=(6, 0), before=self.info)
        self.bar.configure(maximum=max(1, total), value=done)
        left = f" · {int(eta)} s left" if eta is not None and eta >= 0 and done < total else ""
        self.show(f"{format_size(done)} of {format_size(total)} · {format_size(rate)}/s{left}")

    def finish(self, text: str, ok: bool = True) -> None:
        self.state = "done" if ok else "failed"
        if ok:
            self.bar.configure(value=self.bar.cget("maximum"))
        self.show(text, "online" if ok else "danger")
        self.offer_opening()

    def offer_opening(self) -> None:
        """Open / Show in folder, when the file is here."""
        path = self.window.kernel.files.paths.get(self.transfer_id)
        if path is None or not Path(path).exists():
            self.set_buttons()
            return
        self.saved_path = str(path)
        self.set_buttons(("Open", lambda: open_path(str(path))),
                         ("Show in folder", lambda: open_path(str(Path(path).parent))))


class ChatHost(Protocol):
    """What a chat window uses of the window that opens it (``main_window.MainWindow``)."""

    kernel: ClientKernel
    bridge: UiBridge
    me: int
    unread: dict[int, set]              # peer -> ids of the messages not read yet
    avatars: AvatarCache

    def presence_of(self, friend: dict) -> bool | None: ...

    def chat_closed(self, user_id: int) -> None: ...


class ChatWindow(tk.Toplevel):
    def __init__(self, master: tk.Misc, main: ChatHost, friend: dict, cascade: int = 0) -> None:
        super().__init__(master)
        self.withdraw()
        self.main = main
        self.kernel = main.kernel
        self.bridge = main.bridge
        self.me = main.me
        self.friend = friend
        self.peer = int(friend["id"])
        self.unread_at_open = len(main.unread.get(self.peer, ()))
        self.message_rows: dict[object, tk.Frame] = {}     # message id or client_msg_id -> row
        self.messages: dict[int, dict] = {}
        self.transfers: dict[str, FileRow] = {}
        self.first_shown: dict | None = None                # the oldest and newest message on screen
        self.last_shown: dict | None = None
        self.separators: dict[object, str] = {}           # row key -> tag of the time line above it
        self.oldest: int | None = None
        self.history_loaded = False
        self.more_history = True
        self.loading = False
        self.scrolled_in = False    # the first page is shown: scrolling up may load more
        self.at_bottom = True       # the newest message is in view (kept there on resize)
        self.drop_enabled = False
        self._sep_count = 0
        self._typing_sent = 0.0
        self._typing_stop: str | None = None
        self._typing_clear: str | None = None
        self._read_after: str | None = None
        self._subscriptions: list[tuple[EventKind, Handler]] = []
        self.title(f"Chat with {friend.get('nickname', '?')}")
        self.minsize(420, 420)
        self.configure(background=COLORS["bg"])
        self._build()
        for kind, handler in (
                (EventKind.CHAT_MESSAGE, self._on_message), (EventKind.CHAT_PENDING, self._on_pending),
                (EventKind.CHAT_SENT, self._on_sent), (EventKind.CHAT_FAILED, self._on_failed),
                (EventKind.CHAT_STATUS, self._on_status), (EventKind.TYPING, self._on_typing),
                (EventKind.RECONNECTED, self._on_reconnected),
                (EventKind.FILE_OFFER, self._on_file_offer), (EventKind.FILE_OFFERED, self._on_file_offered),
                (EventKind.FILE_ACCEPTED, self._on_file_accepted), (EventKind.FILE_PROGRESS, self._on_file_progress),
                (EventKind.FILE_DONE, self._on_file_done), (EventKind.FILE_SPOOLED, self._on_file_spooled),
                (EventKind.FILE_DECLINED, self._on_file_end), (EventKind.FILE_CANCELLED, self._on_file_end),
                (EventKind.FILE_FAILED, self._on_file_end)):
            self._subscriptions.append((kind, self.bridge.subscribe(kind, handler)))
        self.protocol("WM_DELETE_WINDOW", self.close)
        self.set_friend(friend)
        place_beside(self, master, WIDTH, HEIGHT, cascade)
        self.deiconify()
        self.load_older()
        self.input.focus_set()

    # -- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        header = tk.Frame(self, background="white", padx=12, pady=8)
        header.pack(side="top", fill="x")
        self.avatar = tk.Label(header, background="white")
        self.avatar.pack(side="left")
        names = tk.Frame(header, background="white")
        names.pack(side="left", padx=(10, 0), fill="x", expand=True)
        self.name_label = tk.Label(names, background="white", font=(FONT, 12, "bold"), anchor="w")
        self.name_label.pack(fill="x")
        self.presence = tk.Label(names, background="white", foreground=COLORS["muted"], font=(FONT, 9), anchor="w")
        self.presence.pack(fill="x")
        self.signature = tk.Label(names, background="white", foreground=COLORS["muted"], font=(FONT, 8, "italic"),
                                  anchor="w")
        self.signature.pack(fill="x")
        ttk.Button(header, text="Send file…", command=self.choose_file).pack(side="right")
        tk.Frame(self, background="#e3e7ee", height=1).pack(side="top", fill="x")

        composer = tk.Frame(self, background="white", padx=10, pady=8)
        composer.pack(side="bottom", fill="x")
        notes = tk.Frame(composer, background="white")
        notes.pack(side="top", fill="x")
        self.hint = tk.Label(notes, text="Enter to send · Shift+Enter for a new line", background="white",
                             foreground=COLORS["muted"], font=(FONT, 7))
        self.hint.pack(side="right")
        self.error = tk.Label(notes, text="", background="white", foreground=COLORS["danger"], font=(FONT, 9),
                              anchor="w", justify="left", wraplength=380)
        self.error.pack(side="left", fill="x")
        self.input = tk.Text(composer, height=3, width=1, wrap="word", relief="flat", background="#f3f5f8",
                             font=(FONT, 10), padx=8, pady=6, undo=True, highlightthickness=1,
                             highlightbackground="#dde2ea", highlightcolor=COLORS["accent"])
        self.input.pack(side="left", fill="both", expand=True)
        self.send_button = ttk.Button(composer, text="Send", style="Accent.TButton", width=6, command=self.send)
        self.send_button.pack(side="left", padx=(8, 0), anchor="s")
        self.input.bind("<Return>", self._on_return)
        self.input.bind("<Shift-Return>", lambda e: None)   # the default: a new line
        self.input.bind("<KeyPress>", self._on_key, add="+")
        self.input.bind("<<Paste>>", self._on_paste)

        self.area = tk.Frame(self, background=COLORS["bg"])
        self.area.pack(side="top", fill="both", expand=True)
        self.text = tk.Text(self.area, wrap="none", state="disabled", relief="flat", background=COLORS["bg"],
                            cursor="arrow", padx=10, pady=8, spacing1=2, spacing3=2, highlightthickness=0)
        self.scrollbar = ttk.Scrollbar(self.area, orient="vertical", command=self._scrollbar_moved)
        self.text.configure(yscrollcommand=self._on_scroll)
        self.scrollbar.pack(side="right", fill="y")
        self.text.pack(side="left", fill="both", expand=True)
        self.text.tag_configure("mine", justify="right")
        self.text.tag_configure("theirs", justify="left")
        self.text.tag_configure("note", justify="center", foreground=COLORS["muted"], font=(FONT, 8))
        self.text.tag_configure("divider", justify="center", foreground=COLORS["accent"], font=(FONT, 8, "bold"))
        self.text.bind("<Configure>", self._on_resize)
        self.bind_wheel(self.text)
        self.placeholder = tk.Label(self.area, text="", background=COLORS["bg"], foreground=COLORS["muted"],
                                    font=(FONT, 10), justify="center")
        self.drop_enabled = enable_file_drop(self, self.send_files)
        if not self.drop_enabled:
            self.hint.configure(text="Enter to send · paste a file's path to send it")

    def bind_wheel(self, widget: tk.Misc) -> None:
        widget.bind("<Button-4>", lambda e: self._scroll(-2))
        widget.bind("<Button-5>", lambda e: self._scroll(2))

    def set_friend(self, friend: dict) -> None:
        """Show the friend's current nickname, picture, signature and presence."""
        self.friend = friend
        nickname = friend.get("nickname", "?")
        self.title(f"Chat with {nickname}")
        online = self.main.presence_of(friend)
        self.avatar.configure(image=self.main.avatars.get(friend, 36, online=online))
        self.name_label.configure(text=nickname)
        self.signature.configure(text=friend.get("signature") or "")
        if self._typing_clear is None:
            text = {True: "online", False: "offline", None: "reconnecting…"}[online]
            self.presence.configure(text=text, foreground=COLORS["online"] if online else COLORS["muted"])
        if self.placeholder.winfo_ismapped():
            self.placeholder.configure(text=self._placeholder_text())

    def friend_removed(self) -> None:
        self.error.configure(text=f"{self.friend.get('nickname', '?')} is no longer your friend")
        self.send_button.configure(state="disabled")

    # -- drawing rows ---------------------------------------------------------------------------------
    def _row(self, message: dict, pending: bool = False) -> tk.Frame:
        row: tk.Frame = FileRow(self, message) if message.get("file") else MessageRow(self, message)
        stack = [row]
        while stack:
            widget = stack.pop()
            self.bind_wheel(widget)
            stack.extend(widget.winfo_children())
        self._set_meta(row, message, pending)
        if isinstance(row, FileRow):
            self.transfers[row.transfer_id] = row
            self._show_file_state(row, message["file"])
        return row

    def _set_meta(self, row, message: dict, pending: bool = False) -> None:
        """Under my message its delivery mark; the time is on the time lines between messages.
        A file's card tells its own state."""
        if not row.mine or isinstance(row, FileRow):
            row.meta.configure(text="")
            row.meta.pack_forget()
            return
        if pending:
            text, colour, row.status = "sending…", COLORS["muted"], "pending"
        elif message.get("read_at"):
            text, colour, row.status = "✓✓ read", COLORS["accent"], "read"
        elif message.get("delivered_at"):
            text, colour, row.status = "✓✓ delivered", COLORS["muted"], "delivered"
        else:
            text, colour, row.status = "✓ sent", COLORS["muted"], "sent"
        row.meta.configure(text=text, foreground=colour)

    def _line_items(self, messages: list[dict], before: dict | None, divider_at: int | None) -> list[tuple]:
        """The lines that show ``messages`` (oldest first) after ``before``: time lines, the
        new-messages line, the rows."""
        items: list[tuple] = []
        previous = before
        for message in messages:
            if divider_at is not None and message["id"] == divider_at:
                items.append(("divider", None))
            if previous is None or message_time(message) - message_time(previous) >= TIME_GAP_MS:
                items.append(("time", message))
            items.append(("row", message))
            previous = message
        return items

    def _insert_items(self, index: str, items: list[tuple], pending: bool = False) -> None:
        """Insert the lines at ``index`` ("1.0" or "end-1c") in order."""
        self.text.configure(state="normal")
        at_top = index == "1.0"
        for kind, message in (reversed(items) if at_top else items):
            if kind == "divider":
                self.text.insert(index, f"——  {NEW_MESSAGES}  ——\n", ("note", "divider"))
            elif kind == "time":
                self._sep_count += 1
                tag = f"time{self._sep_count}"
                self.text.insert(index, format_clock(message_time(message)) + "\n", ("note", tag))
                self.separators[message.get("id") or message.get("client_msg_id")] = tag
            else:
                row = self._row(message, pending)
                key = message.get("id") or message.get("client_msg_id")
                self.message_rows[key] = row
                tag = "mine" if row.mine else "theirs"
                self.text.insert(index, "\n", tag)
                newline = self.text.index(f"{index} -1c") if not at_top else "1.0"
                self.text.window_create(newline, window=row, align="top")
                self.text.tag_add(tag, f"{newline} linestart", f"{newline} lineend + 1c")
        self.text.configure(state="disabled")
        self.placeholder.place_forget()

    def _append(self, message: dict, pending: bool = False) -> None:
        stick = self.at_bottom or message["from"] == self.me
        self._insert_items("end-1c", self._line_items([message], self.last_shown, None), pending)
        self.last_shown = message
        if self.first_shown is None:
            self.first_shown = message
        if stick:
            self.scroll_to_end()

    def _prepend(self, messages: list[dict], divider_at: int | None = None) -> int:
        """Show older ``messages`` (oldest first) above everything; returns the lines added."""
        if not messages:
            return 0
        old_first = self.first_shown
        items = self._line_items(messages, None, divider_at)
        self._insert_items("1.0", items)
        added = len(items)
        if old_first is not None and message_time(old_first) - message_time(messages[-1]) < TIME_GAP_MS:
            tag = self.separators.pop(old_first.get("id") or old_first.get("client_msg_id"), None)
            ranges = self.text.tag_ranges(tag) if tag else ()
            if ranges:      # the time line of the old first message: its page now shows the time
                self.text.configure(state="normal")
                self.text.delete(ranges[0], ranges[1])
                self.text.configure(state="disabled")
                added -= 1
        self.first_shown = messages[0]
        if self.last_shown is None:
            self.last_shown = messages[-1]
        return added

    def scroll_to_end(self) -> None:
        self.at_bottom = True
        self.text.after_idle(lambda: self.text.winfo_exists() and self.text.yview_moveto(1.0))

    def _placeholder_text(self) -> str:
        return f"No messages yet.\nSay hello to {self.friend.get('nickname', '?')}, or send a file."

    def _show_placeholder(self) -> None:
        if not self.message_rows:
            self.placeholder.configure(text=self._placeholder_text())
            self.placeholder.place(relx=0.5, rely=0.4, anchor="center")

    # -- messages ----------------------------------------------------------------------------------
    def add_message(self, message: dict) -> None:
        """Show a stored message once (history, live, or the ack of my own)."""
        if message["id"] in self.messages:
            return
        self._remember(message)
        pending_row = self.message_rows.pop(message.get("client_msg_id"), None)
        if pending_row is not None:
            self.message_rows[message["id"]] = pending_row
            tag = self.separators.pop(message.get("client_msg_id"), None)
            if tag:
                self.separators[message["id"]] = tag
            self._set_meta(pending_row, message)
            return
        self._append(message)

    def _remember(self, message: dict) -> None:
        self.messages[message["id"]] = message
        if self.oldest is None or message["id"] < self.oldest:
            self.oldest = message["id"]

    def bubbles(self) -> list[tuple[bool, str, str]]:
        """What the conversation shows, top to bottom: (mine, text, meta)."""
        rows = []
        for name in self.text.window_names():
            row = self.nametowidget(name)
            rows.append((self.text.index(row), row.mine, row.bubble.cget("text"), row.meta.cget("text")))
        rows.sort(key=lambda r: tuple(int(p) for p in r[0].split(".")))
        return [r[1:] for r in rows]

    def notes(self) -> list[str]:
        """The time and new-messages lines, top to bottom."""
        lines = self.text.get("1.0", "end-1c").split("\n")
        return [line for line in lines if line.strip()]

    def load_older(self) -> None:
        """The first page when the window opens (enough to reach the first unread message),
        then one older page each time the top is reached."""
        if self.loading or not self.more_history:
            return
        self.loading = True
        first = not self.history_loaded
        limit = min(MAX_PAGE, max(PAGE, self.unread_at_open + 10)) if first else PAGE

        def done(reply: dict) -> None:
            self.loading = False
            if not self.winfo_exists():
                return
            self.more_history = bool(reply.get("more"))
            older = [m for m in reply.get("messages", []) if m["id"] not in self.messages]
            for message in older:
                self._remember(message)
            if first:
                self._first_page(older)
                return
            top = int(self.text.index("@0,0").split(".")[0])
            added = self._prepend(older)
            if added:
                self.text.yview(f"{top + added}.0")

        def failed(exc: BaseException) -> None:
            self.loading = False
            if self.winfo_exists():
                self.error.configure(text=f"Cannot load the history: {describe_error(exc)}"
                                     + ("; it loads when the connection is back" if first else ""))
        self.bridge.call(self.kernel.chat.history, self.peer, None if first else self.oldest, limit,
                         on_done=done, on_error=failed)

    def _first_page(self, older: list[dict]) -> None:
        self.history_loaded = True
        self.error.configure(text="")
        first_unread = next((m["id"] for m in older if m["from"] == self.peer and not m.get("read_at")), None) \
            if self.unread_at_open else None
        self._prepend(older, first_unread)
        self._show_placeholder()
        self.text.update_idletasks()
        ranges = self.text.tag_ranges("divider")
        if ranges:
            self.text.yview(ranges[0])          # open at the first unread message
            self.at_bottom = self.text.yview()[1] >= 0.999
        else:
            self.text.yview_moveto(1.0)
            self.at_bottom = True
        self.after(300, lambda: setattr(self, "scrolled_in", True))
        self.mark_read_soon()

    # -- scrolling -----------------------------------------------------------------------------------
    def _on_scroll(self, first: str, last: str) -> None:
        self.scrollbar.set(first, last)
        if float(first) <= 0.0 and self.scrolled_in and not self.loading and self.more_history \
                and float(last) < 1.0:
            self.load_older()

    def _scrollbar_moved(self, *args) -> None:
        self.text.yview(*args)
        self.at_bottom = self.text.yview()[1] >= 0.999

    def _scroll(self, units: int) -> str:
        self.text.yview_scroll(units, "units")
        self.at_bottom = self.text.yview()[1] >= 0.999
        if units < 0 and self.scrolled_in and self.text.yview()[0] <= 0.0:
            self.load_older()
        return "break"

    def _on_resize(self, _event) -> None:
        """A resize keeps the newest message in view if it was (Tk would keep the top line)."""
        if self.at_bottom:
            self.scroll_to_end()

    def mark_read_soon(self) -> None:
        if self._read_after is None:
            self._read_after = self.after(150, self._mark_read)

    def _mark_read(self) -> None:
        self._read_after = None
        self.bridge.call(self.kernel.chat.mark_read, self.peer)

    # -- sending ------------------------------------------------------------------------------------
    def _on_return(self, event) -> str:
        if event.state & 0x1:                        # Shift held: a new line
            return ""
        self.send()
        return "break"

    def send(self) -> None:
        text = self.input.get("1.0", "end-1c").strip()
        if not text:
            return
        self.error.configure(text="")
        try:
            self.kernel.chat.send(self.peer, text)   # queues in the outbox; never blocks
        except Exception as exc:                     # too long, empty, logged out
            self.error.configure(text=describe_error(exc))
            return
        self.input.delete("1.0", "end")
        self._stop_typing()

    def _on_key(self, event) -> None:
        if event.keysym in ("Return", "Shift_L", "Shift_R", "Control_L", "Control_R"):
            return
        now = time.monotonic()
        if now - self._typing_sent > TYPING_SEND_EVERY:
            self._typing_sent = now
            self.kernel.chat.typing(self.peer, True)
        if self._typing_stop is not None:
            self.after_cancel(self._typing_stop)
        self._typing_stop = self.after(int(TYPING_IDLE * 1000), self._stop_typing)

    def _stop_typing(self) -> None:
        if self._typing_stop is not None:
            self.after_cancel(self._typing_stop)
            self._typing_stop = None
        if self._typing_sent:
            self._typing_sent = 0.0
            self.kernel.chat.typing(self.peer, False)

    def _on_paste(self, _event) -> str | None:
        """Pasting files copied in a file manager (or a file's path) offers to send them."""
        paths: list[str] = []
        for kind in ("text/uri-list", "UTF8_STRING"):      # file managers offer the first
            try:
                paths = pasted_paths(self.clipboard_get(type=kind))
            except tk.TclError:
                continue
            if paths:
                break
        if not paths:
            return None
        names = ", ".join(os.path.basename(p) for p in paths)
        Dialog(self, "Send files", f"Send {names} to {self.friend.get('nickname', '?')}?",
               [("Cancel", None, "TButton"), ("Send", lambda: self.send_files(paths), "Accent.TButton")],
               icon="question")
        return "break"

    # -- chat events ----------------------------------------------------------------------------------
    def _on_message(self, event) -> None:
        message = event.data["message"]
        if self.peer not in (message["from"], message["to"]):
            return
        self.add_message(message)
        if message["from"] == self.peer:
            self._clear_typing()
            self.mark_read_soon()

    def _on_pending(self, event) -> None:
        if event.data.get("to") != self.peer:
            return
        message = {"from": self.me, "to": self.peer, "text": event.data.get("text", ""), "time": None,
                   "client_msg_id": event.data["client_msg_id"]}
        self._append(message, pending=True)

    def _on_sent(self, event) -> None:
        message = event.data["message"]
        if message["to"] == self.peer:
            self.add_message(dict(message))

    def _on_failed(self, event) -> None:
        row = self.message_rows.pop(event.data.get("client_msg_id"), None)
        if row is not None:
            row.meta.configure(text=f"not sent: {event.data.get('message', '')}", foreground=COLORS["danger"])

    def _on_status(self, event) -> None:
        if event.data.get("peer") != self.peer:
            return
        status, at = event.data["status"], event.data.get("at")
        ids = set(event.data.get("ids") or ())
        up_to = event.data.get("up_to") or 0
        for message_id, message in self.messages.items():
            if message["from"] != self.me:
                continue
            if status == "delivered" and message_id in ids:
                message["delivered_at"] = message.get("delivered_at") or at
            elif status == "read" and message_id <= up_to:
                message["read_at"] = message.get("read_at") or at
                message["delivered_at"] = message.get("delivered_at") or at
            else:
                continue
            row = self.message_rows.get(message_id)
            if row is not None:
                self._set_meta(row, message)

    def _on_typing(self, event) -> None:
        if event.data.get("user_id") != self.peer:
            return
        if event.data.get("typing"):
            self.presence.configure(text="typing…", foreground=COLORS["accent"])
            if self._typing_clear is not None:
                self.after_cancel(self._typing_clear)
            self._typing_clear = self.after(int(TYPING_SHOW * 1000), self._clear_typing)
        else:
            self._clear_typing()

    def _clear_typing(self) -> None:
        if self._typing_clear is not None:
            self.after_cancel(self._typing_clear)
            self._typing_clear = None
        self.set_friend(self.friend)

    def _on_reconnected(self, _event) -> None:
        """A window opened while offline loads its history now."""
        self.set_friend(self.friend)
        if not self.history_loaded:
            self.load_older()

    # -- files ----------------------------------------------------------------------------------------
    def choose_file(self) -> None:
        path = ask_open_path(self)
        if path:
            self.send_file(path)

    def send_files(self, paths: list[str]) -> None:
        for path in paths:
            if os.path.isfile(path):
                self.send_file(path)
            else:
                self.error.configure(text=f"Cannot send {os.path.basename(path) or path}: not a file")

    def send_file(self, path: str) -> None:
        name = os.path.basename(path)
        self.error.configure(text=f"Preparing {name}…", foreground=COLORS["muted"])

        def done(_transfer_id: str) -> None:
            if self.error.cget("text") == f"Preparing {name}…":
                self.error.configure(text="", foreground=COLORS["danger"])

        def failed(exc: BaseException) -> None:
            self.error.configure(text=f"Cannot send {name}: {describe_error(exc)}", foreground=COLORS["danger"])
        self.bridge.call(self.kernel.files.send_file, self.peer, path, on_done=done, on_error=failed)

    def _file_row(self, transfer_id: str) -> FileRow | None:
        row = self.transfers.get(transfer_id)
        return row if row is not None and row.winfo_exists() else None

    def _show_file_state(self, row: FileRow, file: dict) -> None:
        """A file row as its message says (history) or as this client knows it (running here)."""
        nickname = self.friend.get("nickname", "?")
        offer = self.kernel.files.offers.get(row.transfer_id)
        if offer is not None:
            self._show_offer(row, offer)
            return
        state = str(file.get("state", ""))
        active = self.kernel.files.is_active(row.transfer_id)
        S = TransferState
        if not active and state in ((S.SENDING, S.UPLOADING) if row.mine else (S.SENDING,)):
            row.show("Interrupted (the app was closed during the transfer)", "danger")
        else:
            row.show(file_state_text(row.mine, state, nickname), "online" if state in (S.DONE, S.SPOOLED)
                     else "danger" if state in (S.FAILED, S.EXPIRED) else "muted")
        if state == S.DONE:
            row.state = "done"
            row.offer_opening()
        elif active:
            row.set_buttons(("Cancel", lambda: self.cancel_transfer(row)))
        elif row.mine and state in (S.OFFERED, S.SPOOLED, S.UPLOADING):
            row.set_buttons(("Cancel", lambda: self.cancel_transfer(row)))

    def _on_file_offered(self, event) -> None:
        row = self._file_row(event.data["transfer_id"])
        if row is None:
            return
        nickname = self.friend.get("nickname", "?")
        if event.data.get("mode") == "spool":
            row.show(f"{nickname} is offline: uploading for later delivery")
        else:
            row.show(f"Waiting for {nickname} to accept…")
        row.set_buttons(("Cancel", lambda: self.cancel_transfer(row)))

    def _on_file_offer(self, event) -> None:
        row = self._file_row(event.data["transfer_id"])
        if row is not None and event.data.get("from") == self.peer:
            self._show_offer(row, event.data)

    def _show_offer(self, row: FileRow, offer: dict) -> None:
        row.show(f"{self.friend.get('nickname', '?')} wants to send you this file")
        row.set_buttons(("Accept…", lambda: self.accept_offer(row, offer)), ("Decline", lambda: self.decline_offer(row)))

    def accept_offer(self, row: FileRow, offer: dict) -> None:
        path = ask_save_path(self, offer["name"])
        if not path:
            return
        row.set_buttons(("Cancel", lambda: self.cancel_transfer(row)))
        row.show("Starting…")

        def failed(exc: BaseException) -> None:
            row.finish(f"Could not accept: {describe_error(exc)}", ok=False)
        self.bridge.call(self.kernel.files.accept, offer["transfer_id"], None, path, on_error=failed)

    def decline_offer(self, row: FileRow) -> None:
        def done(_reply) -> None:
            row.finish("Declined", ok=False)
        self.bridge.call(self.kernel.files.decline, row.transfer_id, on_done=done,
                         on_error=lambda exc: row.show(describe_error(exc), "danger"))

    def cancel_transfer(self, row: FileRow) -> None:
        confirm(self, "Cancel transfer", f"Stop sending or receiving {row.name}?", "Stop",
                lambda: self.bridge.call(self.kernel.files.cancel, row.transfer_id,
                                         on_error=lambda exc: row.show(describe_error(exc), "danger")))

    def _on_file_accepted(self, event) -> None:
        row = self._file_row(event.data["transfer_id"])
        if row is not None:
            row.show("Accepted; sending…")

    def _on_file_progress(self, event) -> None:
        row = self._file_row(event.data["transfer_id"])
        if row is not None:
            row.progress(int(event.data["done"]), int(event.data["total"]), float(event.data.get("rate") or 0),
                         event.data.get("eta"))
            if "Cancel" not in row.button_widgets:
                row.set_buttons(("Cancel", lambda: self.cancel_transfer(row)))

    def _on_file_done(self, event) -> None:
        row = self._file_row(event.data["transfer_id"])
        if row is None:
            return
        if row.direction == "send":
            row.finish(f"Sent ✓  {format_size(row.size)}")
        else:
            row.finish(f"Saved to {event.data.get('path') or ''}")

    def _on_file_spooled(self, event) -> None:
        row = self._file_row(event.data["transfer_id"])
        if row is not None:
            row.finish(f"Uploaded ✓  {self.friend.get('nickname', '?')} gets it at next login")
            row.set_buttons()

    def _on_file_end(self, event) -> None:
        row = self._file_row(event.data["transfer_id"])
        if row is None:
            return
        texts = {EventKind.FILE_DECLINED: f"{self.friend.get('nickname', '?')} declined it",
                 EventKind.FILE_CANCELLED: "Cancelled",
                 EventKind.FILE_FAILED: f"Failed: {event.data.get('message') or event.data.get('error') or ''}"}
        row.finish(texts[event.kind], ok=False)
        row.set_buttons()

    # -- closing --------------------------------------------------------------------------------------
    def close(self) -> None:
        self._stop_typing()
        for kind, handler in self._subscriptions:
            self.bridge.unsubscribe(kind, handler)
        self._subscriptions.clear()
        self.main.chat_closed(self.peer)
        self.destroy()
