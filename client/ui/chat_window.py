"""A conversation with one friend: messages with read marks, typing, history on scroll-up, files.

Messages come from ``kernel.chat`` (history pages, live events, the outbox's acknowledgements);
file transfers from ``kernel.files``. The window only draws them and forwards what the user
does; everything that waits on the network runs through the bridge.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import tkinter as tk
from pathlib import Path
from tkinter import filedialog, ttk
from typing import TYPE_CHECKING

from .widgets import COLORS, FONT, confirm, describe_error, format_clock, format_size

if TYPE_CHECKING:
    from .main_window import MainWindow

PAGE = 30
TYPING_SEND_EVERY = 3.0      # seconds between "typing" packets while keys are pressed
TYPING_IDLE = 4.0            # quiet this long: tell the friend typing stopped
TYPING_SHOW = 6.0            # show the friend's "typing…" at most this long without news


def ask_save_path(parent: tk.Misc, name: str) -> str:
    return filedialog.asksaveasfilename(parent=parent, initialfile=name, title="Save file as")


def ask_open_path(parent: tk.Misc) -> str:
    return filedialog.askopenfilename(parent=parent, title="Send a file")


def open_folder(path: str) -> None:
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen([opener, path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        pass


class TransferRow(tk.Frame):
    """One file transfer: name, progress bar, figures, and the buttons that fit its state."""

    def __init__(self, master: tk.Misc, window: "ChatWindow", transfer_id: str, name: str, size: int,
                 direction: str) -> None:
        super().__init__(master, background="white", padx=10, pady=6, highlightthickness=1,
                         highlightbackground="#e3e7ee")
        self.window = window
        self.transfer_id = transfer_id
        self.direction = direction
        self.size = size
        self.state = "waiting"
        arrow = "↑" if direction == "send" else "↓"
        top = tk.Frame(self, background="white")
        top.pack(fill="x")
        self.title = tk.Label(top, text=f"{arrow}  {name}", background="white", font=(FONT, 9, "bold"), anchor="w")
        self.title.pack(side="left")
        self.buttons = tk.Frame(top, background="white")
        self.buttons.pack(side="right")
        self.bar = ttk.Progressbar(self, maximum=max(1, size), value=0, mode="determinate")
        self.bar.pack(fill="x", pady=(4, 2))
        self.info = tk.Label(self, text="", background="white", foreground=COLORS["muted"], font=(FONT, 8), anchor="w")
        self.info.pack(fill="x")
        self.button_widgets: dict[str, ttk.Button] = {}

    def set_buttons(self, *specs: tuple[str, object]) -> None:
        for child in self.buttons.winfo_children():
            child.destroy()
        self.button_widgets = {}
        for label, command in specs:
            button = ttk.Button(self.buttons, text=label, command=command,
                                style="Accent.TButton" if label.startswith("Accept") else "TButton")
            button.pack(side="left", padx=(4, 0))
            self.button_widgets[label] = button

    def progress(self, done: int, total: int, rate: float, eta: float | None) -> None:
        self.state = "running"
        self.bar.configure(maximum=max(1, total), value=done)
        left = f" · {int(eta)} s left" if eta is not None and eta >= 0 and done < total else ""
        self.info.configure(text=f"{format_size(done)} of {format_size(total)} · {format_size(rate)}/s{left}",
                            foreground=COLORS["muted"])

    def finish(self, text: str, ok: bool = True) -> None:
        self.state = "done" if ok else "failed"
        if ok:
            self.bar.configure(value=self.bar.cget("maximum"))
        self.info.configure(text=text, foreground=COLORS["online"] if ok else COLORS["danger"])


class ChatWindow(tk.Toplevel):
    def __init__(self, master: tk.Misc, main: "MainWindow", friend: dict) -> None:
        super().__init__(master)
        self.main = main
        self.kernel = main.kernel
        self.bridge = main.bridge
        self.me = main.me
        self.friend = friend
        self.peer = int(friend["id"])
        self.message_rows: dict[object, tk.Frame] = {}     # message id or client_msg_id -> bubble row
        self.messages: dict[int, dict] = {}
        self.oldest: int | None = None
        self.more_history = True
        self.loading = False
        self.scrolled_in = False    # the first page is shown at the bottom: scrolling up may load more
        self.transfers: dict[str, TransferRow] = {}
        self._typing_sent = 0.0
        self._typing_stop: str | None = None
        self._typing_clear: str | None = None
        self._read_after: str | None = None
        self._subscriptions: list[tuple[str, object]] = []
        self.title(f"Chat with {friend.get('nickname', '?')}")
        self.geometry("560x640")
        self.minsize(420, 420)
        self.configure(background=COLORS["bg"])
        self._build()
        for kind, handler in (("chat_message", self._on_message), ("chat_pending", self._on_pending),
                              ("chat_sent", self._on_sent), ("chat_failed", self._on_failed),
                              ("chat_status", self._on_status), ("typing", self._on_typing),
                              ("file_offer", self._on_file_offer), ("file_offered", self._on_file_offered),
                              ("file_accepted", self._on_file_accepted), ("file_progress", self._on_file_progress),
                              ("file_done", self._on_file_done), ("file_spooled", self._on_file_spooled),
                              ("file_declined", self._on_file_end), ("file_cancelled", self._on_file_end),
                              ("file_failed", self._on_file_end)):
            self._subscriptions.append((kind, self.bridge.subscribe(kind, handler)))
        self.protocol("WM_DELETE_WINDOW", self.close)
        self.set_friend(friend)
        for offer in list(self.kernel.files.offers.values()):
            if offer["from"] == self.peer:
                self._show_offer(offer)
        self.load_older(first=True)
        self.input.focus_set()

    # -- layout -----------------------------------------------------------------------------------
    def _build(self) -> None:
        header = tk.Frame(self, background="white", padx=12, pady=8)
        header.pack(side="top", fill="x")
        self.avatar = tk.Label(header, background="white")
        self.avatar.pack(side="left")
        names = tk.Frame(header, background="white")
        names.pack(side="left", padx=(10, 0))
        self.name_label = tk.Label(names, background="white", font=(FONT, 12, "bold"), anchor="w")
        self.name_label.pack(fill="x")
        self.presence = tk.Label(names, background="white", foreground=COLORS["muted"], font=(FONT, 9), anchor="w")
        self.presence.pack(fill="x")
        ttk.Button(header, text="Send file…", command=self.choose_file).pack(side="right")
        tk.Frame(self, background="#e3e7ee", height=1).pack(side="top", fill="x")

        composer = tk.Frame(self, background="white", padx=10, pady=8)
        composer.pack(side="bottom", fill="x")
        notes = tk.Frame(composer, background="white")
        notes.pack(side="top", fill="x")
        tk.Label(notes, text="Enter to send · Shift+Enter for a new line", background="white",
                 foreground=COLORS["muted"], font=(FONT, 7)).pack(side="right")
        self.error = tk.Label(notes, text="", background="white", foreground=COLORS["danger"], font=(FONT, 9),
                              anchor="w")
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

        self.files_box = tk.Frame(self, background=COLORS["bg"], padx=10)
        self.files_box.pack(side="bottom", fill="x")

        area = tk.Frame(self, background=COLORS["bg"])
        area.pack(side="top", fill="both", expand=True)
        self.text = tk.Text(area, wrap="none", state="disabled", relief="flat", background=COLORS["bg"],
                            cursor="arrow", padx=10, pady=8, spacing1=2, spacing3=2, highlightthickness=0)
        self.scrollbar = ttk.Scrollbar(area, orient="vertical", command=self.text.yview)
        self.text.configure(yscrollcommand=self._on_scroll)
        self.scrollbar.pack(side="right", fill="y")
        self.text.pack(side="left", fill="both", expand=True)
        self.text.tag_configure("mine", justify="right")
        self.text.tag_configure("theirs", justify="left")
        self.text.tag_configure("note", justify="center", foreground=COLORS["muted"], font=(FONT, 8))

    def set_friend(self, friend: dict) -> None:
        self.friend = friend
        self.title(f"Chat with {friend.get('nickname', '?')}")
        self.avatar.configure(image=self.main.avatars.get(friend, 36, online=bool(friend.get("online"))))
        self.name_label.configure(text=friend.get("nickname", "?"))
        if self._typing_clear is None:
            self.presence.configure(text="online" if friend.get("online") else "offline",
                                    foreground=COLORS["online"] if friend.get("online") else COLORS["muted"])

    def friend_removed(self) -> None:
        self.error.configure(text=f"{self.friend.get('nickname', '?')} is no longer your friend")
        self.send_button.configure(state="disabled")

    # -- messages -----------------------------------------------------------------------------------
    def _bubble(self, message: dict, pending: bool = False) -> tk.Frame:
        mine = message["from"] == self.me
        row = tk.Frame(self.text, background=COLORS["bg"])
        bubble = tk.Label(row, text=message.get("text", ""), wraplength=330, justify="left", anchor="w",
                          background=COLORS["mine"] if mine else COLORS["theirs"], padx=10, pady=6,
                          font=(FONT, 10), highlightthickness=0 if mine else 1, highlightbackground="#e3e7ee")
        bubble.pack(anchor="e" if mine else "w")
        meta = tk.Label(row, text="", background=COLORS["bg"], foreground=COLORS["muted"], font=(FONT, 7))
        meta.pack(anchor="e" if mine else "w")
        row.bubble, row.meta, row.mine = bubble, meta, mine  # type: ignore[attr-defined]
        for widget in (row, bubble, meta):
            widget.bind("<Button-4>", lambda e: self._scroll(-2))
            widget.bind("<Button-5>", lambda e: self._scroll(2))
        self._set_meta(row, message, pending)
        return row

    def _set_meta(self, row: tk.Frame, message: dict, pending: bool = False) -> None:
        when = format_clock(message.get("time")) if message.get("time") else ""
        if not row.mine:
            row.meta.configure(text=when)
            return
        if pending:
            row.meta.configure(text="sending…", foreground=COLORS["muted"])
        elif message.get("read_at"):
            row.meta.configure(text=f"{when}  ✓✓ read", foreground=COLORS["accent"])
        elif message.get("delivered_at"):
            row.meta.configure(text=f"{when}  ✓✓ delivered", foreground=COLORS["muted"])
        else:
            row.meta.configure(text=f"{when}  ✓ sent", foreground=COLORS["muted"])
        row.status = "pending" if pending else ("read" if message.get("read_at") else  # type: ignore[attr-defined]
                                                "delivered" if message.get("delivered_at") else "sent")

    def _insert(self, index: str, row: tk.Frame, mine: bool) -> None:
        self.text.configure(state="normal")
        self.text.insert(index, "\n", "mine" if mine else "theirs")
        self.text.window_create(index, window=row, align="top")
        self.text.tag_add("mine" if mine else "theirs", f"{index} linestart", f"{index} lineend")
        self.text.configure(state="disabled")

    def _append(self, message: dict, pending: bool = False) -> tk.Frame:
        at_bottom = self.text.yview()[1] >= 0.999
        row = self._bubble(message, pending)
        self._insert("end-1c", row, message["from"] == self.me)
        if at_bottom or message["from"] == self.me:
            self.text.after_idle(lambda: self.text.yview_moveto(1.0))
        return row

    def add_message(self, message: dict) -> None:
        """Show a stored message once (history, live, or the ack of my own)."""
        if message["id"] in self.messages:
            return
        self.messages[message["id"]] = message
        if self.oldest is None or message["id"] < self.oldest:
            self.oldest = message["id"]
        pending_row = self.message_rows.pop(message.get("client_msg_id"), None)
        if pending_row is not None:
            self.message_rows[message["id"]] = pending_row
            self._set_meta(pending_row, message)
            return
        self.message_rows[message["id"]] = self._append(message)

    def bubbles(self) -> list[tuple[bool, str, str]]:
        """What the conversation shows, top to bottom: (mine, text, meta)."""
        rows = []
        for name in self.text.window_names():
            row = self.nametowidget(name)
            rows.append((self.text.index(row), row.mine, row.bubble.cget("text"), row.meta.cget("text")))
        rows.sort(key=lambda r: tuple(int(p) for p in r[0].split(".")))
        return [r[1:] for r in rows]

    def load_older(self, first: bool = False) -> None:
        if self.loading or not self.more_history:
            return
        self.loading = True

        def done(reply: dict) -> None:
            self.loading = False
            self.more_history = bool(reply.get("more"))
            older = [m for m in reply.get("messages", []) if m["id"] not in self.messages]
            if first:
                for message in older:
                    self.add_message(message)
                self.text.update_idletasks()
                self.text.yview_moveto(1.0)
                self.after(300, lambda: setattr(self, "scrolled_in", True))
                self.mark_read_soon()
                return
            anchor = self.text.index("1.0")
            for message in reversed(older):          # newest of the page first, each at the top
                self.messages[message["id"]] = message
                self.oldest = min(self.oldest or message["id"], message["id"])
                row = self._bubble(message)
                self.message_rows[message["id"]] = row
                self._insert("1.0", row, message["from"] == self.me)
            if older:
                self.text.yview(f"{anchor} + {len(older)} lines")

        def failed(exc: BaseException) -> None:
            self.loading = False
            self.error.configure(text=describe_error(exc))
        self.bridge.call(self.kernel.chat.history, self.peer, None if first else self.oldest, PAGE,
                         on_done=done, on_error=failed)

    def _on_scroll(self, first: str, last: str) -> None:
        self.scrollbar.set(first, last)
        if float(first) <= 0.0 and self.scrolled_in and not self.loading and self.more_history \
                and float(last) < 1.0:
            self.load_older()

    def _scroll(self, units: int) -> str:
        self.text.yview_scroll(units, "units")
        if units < 0 and self.scrolled_in and self.text.yview()[0] <= 0.0:
            self.load_older()
        return "break"

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
        message = {"from": self.me, "to": self.peer, "text": event.data.get("text", ""), "time": None}
        self.message_rows[event.data["client_msg_id"]] = self._append(message, pending=True)

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

    # -- files ----------------------------------------------------------------------------------------
    def choose_file(self) -> None:
        path = ask_open_path(self)
        if path:
            self.send_file(path)

    def send_file(self, path: str) -> None:
        name = os.path.basename(path)
        self.error.configure(text="")
        note = tk.Label(self.files_box, text=f"Preparing {name}…", background=COLORS["bg"],
                        foreground=COLORS["muted"], font=(FONT, 8))
        note.pack(fill="x")

        def failed(exc: BaseException) -> None:
            note.destroy()
            self.error.configure(text=f"Cannot send {name}: {describe_error(exc)}")
        self.bridge.call(self.kernel.files.send_file, self.peer, path,
                         on_done=lambda _tid: note.destroy(), on_error=failed)

    def _row(self, transfer_id: str) -> TransferRow | None:
        row = self.transfers.get(transfer_id)
        return row if row is not None and row.winfo_exists() else None

    def _add_transfer(self, transfer_id: str, name: str, size: int, direction: str) -> TransferRow:
        row = TransferRow(self.files_box, self, transfer_id, name, size, direction)
        row.pack(fill="x", pady=(6, 0))
        self.transfers[transfer_id] = row
        return row

    def _on_file_offered(self, event) -> None:
        if event.data.get("to") != self.peer:
            return
        row = self._add_transfer(event.data["transfer_id"], event.data["name"], int(event.data["size"]), "send")
        if event.data.get("mode") == "spool":
            row.info.configure(text=f"{self.friend.get('nickname', '?')} is offline: uploading for later delivery")
        else:
            row.info.configure(text=f"Waiting for {self.friend.get('nickname', '?')} to accept…")
        row.set_buttons(("Cancel", lambda: self.cancel_transfer(row)))

    def _on_file_offer(self, event) -> None:
        if event.data.get("from") == self.peer:
            self._show_offer(event.data)

    def _show_offer(self, offer: dict) -> None:
        if self._row(offer["transfer_id"]) is not None:
            return
        row = self._add_transfer(offer["transfer_id"], offer["name"], int(offer["size"]), "receive")
        row.info.configure(text=f"{self.friend.get('nickname', '?')} wants to send you this file "
                                f"({format_size(int(offer['size']))})")
        row.set_buttons(("Accept…", lambda: self.accept_offer(row, offer)), ("Decline", lambda: self.decline_offer(row)))

    def accept_offer(self, row: TransferRow, offer: dict) -> None:
        path = ask_save_path(self, offer["name"])
        if not path:
            return
        row.set_buttons(("Cancel", lambda: self.cancel_transfer(row)))
        row.info.configure(text="Starting…")

        def failed(exc: BaseException) -> None:
            row.finish(f"Could not accept: {describe_error(exc)}", ok=False)
            row.set_buttons(("Dismiss", row.destroy))
        self.bridge.call(self.kernel.files.accept, offer["transfer_id"], None, path, on_error=failed)

    def decline_offer(self, row: TransferRow) -> None:
        self.bridge.call(self.kernel.files.decline, row.transfer_id,
                         on_done=lambda _r: row.destroy(),
                         on_error=lambda exc: row.info.configure(text=describe_error(exc)))

    def cancel_transfer(self, row: TransferRow) -> None:
        confirm(self, "Cancel transfer", f"Stop sending or receiving {row.title.cget('text')[3:]}?", "Stop",
                lambda: self.bridge.call(self.kernel.files.cancel, row.transfer_id,
                                         on_error=lambda exc: row.info.configure(text=describe_error(exc))))

    def _on_file_accepted(self, event) -> None:
        row = self._row(event.data["transfer_id"])
        if row is not None:
            row.info.configure(text="Accepted; sending…")

    def _on_file_progress(self, event) -> None:
        row = self._row(event.data["transfer_id"])
        if row is not None:
            row.progress(int(event.data["done"]), int(event.data["total"]), float(event.data.get("rate") or 0),
                         event.data.get("eta"))

    def _on_file_done(self, event) -> None:
        row = self._row(event.data["transfer_id"])
        if row is None:
            return
        if row.direction == "send":
            row.finish(f"Sent ✓  {format_size(row.size)}")
            row.set_buttons(("Dismiss", row.destroy))
        else:
            path = event.data.get("path") or ""
            row.finish(f"Saved to {path}")
            row.saved_path = path  # type: ignore[attr-defined]
            row.set_buttons(("Open folder", lambda: open_folder(str(Path(path).parent))), ("Dismiss", row.destroy))

    def _on_file_spooled(self, event) -> None:
        row = self._row(event.data["transfer_id"])
        if row is not None:
            row.finish(f"Uploaded ✓  {self.friend.get('nickname', '?')} gets it at next login")
            row.set_buttons(("Dismiss", row.destroy))

    def _on_file_end(self, event) -> None:
        row = self._row(event.data["transfer_id"])
        if row is None:
            return
        texts = {"file_declined": "Declined", "file_cancelled": "Cancelled",
                 "file_failed": f"Failed: {event.data.get('message') or event.data.get('error') or ''}"}
        row.finish(texts[event.kind], ok=False)
        row.set_buttons(("Dismiss", row.destroy))

    # -- closing --------------------------------------------------------------------------------------
    def close(self) -> None:
        self._stop_typing()
        for kind, handler in self._subscriptions:
            self.bridge.unsubscribe(kind, handler)
        self._subscriptions.clear()
        self.main.chat_closed(self.peer)
        self.destroy()
