"""The main window: who I am, my friends (online first), friend requests, meetings, status."""
from __future__ import annotations

import tkinter as tk
from pathlib import Path
from tkinter import ttk
from typing import Protocol

from client.events import EventKind, SessionState
from client.kernel import ClientKernel
from common.validation import normalize_phone
from common.errors import ApiError

from .bridge import Handler, UiBridge
from .settings import Settings
from .widgets import COLORS, FONT, AvatarCache, Badge, ScrollFrame, confirm, describe_error, format_clock


ADD_HINT = "Enter their phone number"


def preview(text: str, limit: int = 38) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def message_preview(message: dict) -> str:
    return f"[File] {message['file'].get('name', '')}" if message.get("file") else message.get("text", "")


def unread_key(message: dict) -> object:
    """A file message and its offer event count once: both are keyed by the transfer."""
    return message["file"]["transfer_id"] if message.get("file") else message["id"]


class MainHost(Protocol):
    """What the main window uses of the application that shows it (``app.App``)."""

    root: tk.Tk
    kernel: ClientKernel | None
    bridge: UiBridge
    settings: Settings
    settings_path: Path | None

    def logout(self) -> None: ...

    def quit(self) -> None: ...

    def start_meeting(self, mode: str) -> None: ...


class MainWindow(ttk.Frame):
    def __init__(self, master: tk.Misc, app: MainHost) -> None:
        super().__init__(master)
        assert app.kernel is not None, "opened for a logged-in session"
        self.app = app
        self.kernel = app.kernel
        self.bridge = app.bridge
        self.me = int(self.kernel.user["id"])
        self.avatars = AvatarCache(self, loader=self.kernel.profile.avatar_png, fetch=self.bridge.call,
                                   on_loaded=self._schedule_render)
        self.friends: list[dict] = self.kernel.friends.friend_list()
        self.incoming: list[dict] = list(self.kernel.friends.incoming.values())
        self.outgoing: list[dict] = list(self.kernel.friends.outgoing.values())
        # Unread message ids (and file offer ids) per friend: a set, so a message counted from
        # the core's state at start and then again from its (queued) event counts once.
        self.unread: dict[int, set] = {}
        self.last: dict[int, dict] = {}          # peer -> newest message seen
        self._last_asked: set[int] = set()
        self._waiting_for: int | None = None      # the user my last friend request went to
        self.presence_known = True                # false from a disconnect until the list is fetched again
        self.rows: dict[int, tk.Frame] = {}
        self.badges: dict[int, Badge] = {}
        self.chats: dict[int, object] = {}       # peer -> ChatWindow
        self.profile_window = None
        self._subscriptions: list[tuple[EventKind, Handler]] = []
        self._notice_after: str | None = None
        self._render_after: str | None = None
        self._build()
        for kind, handler in (
                (EventKind.DISCONNECTED, self._on_disconnected), (EventKind.RECONNECTING, self._on_reconnecting),
                (EventKind.RECONNECTED, self._on_reconnected), (EventKind.GOING_AWAY, self._on_going_away),
                (EventKind.FRIENDS_CHANGED, self._on_friends), (EventKind.FRIEND_REQUESTS_CHANGED, self._on_requests),
                (EventKind.FRIEND_REQUEST, self._on_friend_request), (EventKind.FRIEND_ANSWER, self._on_friend_answer),
                (EventKind.FRIEND_ONLINE, self._on_presence), (EventKind.FRIEND_OFFLINE, self._on_presence),
                (EventKind.FRIEND_REMOVED, self._on_friend_removed), (EventKind.PROFILE_CHANGED, self._on_profile),
                (EventKind.CHAT_MESSAGE, self._on_chat_message), (EventKind.CHAT_SENT, self._on_chat_sent),
                (EventKind.FILE_OFFER, self._on_file_offer)):
            self._subscribe(kind, handler)
        self.bind("<Destroy>", self._on_destroy, add="+")
        self._load_unread()
        self.render_friends()
        self.render_requests()

    def _subscribe(self, kind: EventKind, handler: Handler) -> None:
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
        for widget in (self.me_avatar, names, self.me_name, self.me_signature):
            widget.bind("<Button-1>", lambda e: self.open_profile())
        self.menu_button = ttk.Menubutton(header, text="☰", style="TButton", width=2)
        self.menu = tk.Menu(self.menu_button, tearoff=False)
        self.menu.add_command(label="Profile and settings…", command=self.open_profile)
        self.menu.add_separator()
        self.menu.add_command(label="Log out", command=self.app.logout)
        self.menu.add_command(label="Quit", command=self.app.quit, accelerator="Ctrl+Q")
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

        ttk.Label(self.body, text="ADD A FRIEND", style="Section.TLabel").pack(anchor="w", pady=(14, 2))
        add = ttk.Frame(self.body)
        add.pack(fill="x")
        self.add_entry = ttk.Entry(add)
        self.add_entry.pack(side="left", fill="x", expand=True)
        self.add_entry.bind("<Return>", lambda e: self.add_friend())
        self.add_button = ttk.Button(add, text="Add", command=self.add_friend)
        self.add_button.pack(side="left", padx=(6, 0))
        self.add_info = ttk.Label(self.body, text=ADD_HINT, style="Muted.TLabel", font=(FONT, 9))
        self.add_info.pack(anchor="w")

        self.requests_box = ttk.Frame(self.body)
        self.friends_title = ttk.Label(self.body, text="FRIENDS", style="Section.TLabel")
        self.friends_title.pack(anchor="w", pady=(12, 2))
        self.list = ScrollFrame(self.body, background="#e9ecf1")
        self.list.pack(fill="both", expand=True)
        self.empty_label = tk.Label(self.list.inner, text="No friends yet.\nAdd one by phone number above.",
                                    background=COLORS["panel"], foreground=COLORS["muted"], pady=30)
        self.refresh_me()
        self.show_state()

    def refresh_me(self) -> None:
        user = self.kernel.user or {}
        self.me_avatar.configure(image=self.avatars.get(user, 48))
        self.me_name.configure(text=user.get("nickname", ""))
        self.me_signature.configure(text=user.get("signature") or "Click to set a signature")

    # -- friend list ------------------------------------------------------------------------------
    def presence_of(self, friend: dict) -> bool | None:
        """Online or not, or None (unknown) while the connection to the server is down."""
        if not self.presence_known or self.kernel.state != SessionState.ONLINE:
            return None
        return bool(friend.get("online"))

    def sorted_friends(self) -> list[dict]:
        return sorted(self.friends, key=lambda f: (not f.get("online"), f.get("nickname", "").lower()))

    def _schedule_render(self) -> None:
        if self._render_after is None:
            self._render_after = self.after(30, self._render_now)

    def _render_now(self) -> None:
        self._render_after = None
        self.refresh_me()
        self.render_friends()
        self.render_requests()

    def render_friends(self) -> None:
        for row in self.rows.values():
            row.destroy()
        self.rows.clear()
        self.badges.clear()
        online = sum(1 for f in self.friends if f.get("online"))
        if not self.friends:
            title = "FRIENDS"
        elif not self.presence_known or self.kernel.state != SessionState.ONLINE:
            title = f"FRIENDS — {len(self.friends)} · STATUS UNKNOWN"
        else:
            title = f"FRIENDS — {online} ONLINE OF {len(self.friends)}"
        self.friends_title.configure(text=title)
        if not self.friends:
            self.empty_label.pack(fill="x")
            return
        self.empty_label.pack_forget()
        for friend in self.sorted_friends():
            self.rows[friend["id"]] = self._friend_row(friend)
        self._ask_last_messages()

    def _friend_row(self, friend: dict) -> tk.Frame:
        uid = friend["id"]
        bg = COLORS["panel"]
        online = self.presence_of(friend)
        row = tk.Frame(self.list.inner, background=bg, padx=10, pady=7, cursor="hand2")
        row.pack(fill="x", pady=(0, 1))     # the list's grey shows through as a divider
        avatar = tk.Label(row, image=self.avatars.get(friend, 40, online=online), background=bg)
        avatar.pack(side="left")
        text = tk.Frame(row, background=bg)
        text.pack(side="left", fill="x", expand=True, padx=(10, 0))
        top = tk.Frame(text, background=bg)
        top.pack(fill="x")
        name = tk.Label(top, text=friend.get("nickname", "?"), background=bg, font=(FONT, 10, "bold"),
                        foreground=COLORS["text"] if online else COLORS["offline"] if online is None else "#5d6678",
                        anchor="w")
        name.pack(side="left")
        last = self.last.get(uid)
        when = tk.Label(top, text=format_clock(last.get("time")) if last else "", background=bg,
                        foreground=COLORS["muted"], font=(FONT, 8))
        when.pack(side="right")
        bottom = tk.Frame(text, background=bg)
        bottom.pack(fill="x")
        if last:
            line = self.preview_line(last)
        else:
            line = friend.get("signature") or {True: "online", False: "offline", None: "…"}[online]
        sub = tk.Label(bottom, text=line, background=bg, foreground=COLORS["muted"], font=(FONT, 9), anchor="w")
        sub.pack(side="left", fill="x", expand=True)
        badge = Badge(bottom, background=bg)
        badge.set(len(self.unread.get(uid, ())))
        badge.pack(side="right")
        self.badges[uid] = badge
        row.preview = sub  # type: ignore[attr-defined]
        row.name_label = name  # type: ignore[attr-defined]
        row.avatar = avatar  # type: ignore[attr-defined]
        row.when = when  # type: ignore[attr-defined]
        row.online = online  # type: ignore[attr-defined]
        menu = tk.Menu(row, tearoff=False)
        menu.add_command(label="Send message", command=lambda: self.open_chat(uid))
        menu.add_command(label="Send file…", command=lambda: self.open_chat(uid).choose_file())
        menu.add_separator()
        menu.add_command(label="Delete friend…", command=lambda: self.delete_friend(uid))
        row.menu = menu  # type: ignore[attr-defined]
        for widget in (row, avatar, text, top, name, when, bottom, sub, badge):
            widget.bind("<Button-1>", lambda e: self.open_chat(uid))
            widget.bind("<Button-3>", lambda e: menu.tk_popup(e.x_root, e.y_root))
            widget.bind("<Enter>", lambda e: self._hover(row, True))
            widget.bind("<Leave>", lambda e: self._hover(row, False))
            self.list.bind_wheel(widget)
        return row

    def _hover(self, row: tk.Frame, on: bool) -> None:
        colour = COLORS["select"] if on else COLORS["panel"]
        stack = [row]
        while stack:
            widget = stack.pop()
            try:
                widget.configure(background=colour)
            except tk.TclError:
                pass
            stack.extend(widget.winfo_children())

    def _ask_last_messages(self) -> None:
        """The newest message of each conversation, for the previews (once per friend)."""
        for friend in self.friends:
            uid = friend["id"]
            if uid in self._last_asked or uid in self.last:
                continue
            self._last_asked.add(uid)

            def done(reply: dict, uid: int = uid) -> None:
                if reply.get("messages"):
                    self._set_last(uid, reply["messages"][-1])
            self.bridge.call(self.kernel.chat.history, uid, None, 1, on_done=done,
                             on_error=lambda exc, uid=uid: self._last_asked.discard(uid))

    def preview_line(self, message: dict) -> str:
        return ("You: " if message["from"] == self.me else "") + preview(message_preview(message))

    def _set_last(self, peer: int, message: dict) -> None:
        """The newest message of a conversation: its row's preview changes in place (the
        order of the list does not depend on it, and redrawing the list per message is slow)."""
        known = self.last.get(peer)
        if known is None or message.get("id", 0) >= known.get("id", 0):
            self.last[peer] = message
            row = self.rows.get(peer)
            if row is None or not row.winfo_exists():
                self._schedule_render()
                return
            row.preview.configure(text=self.preview_line(message))
            row.when.configure(text=format_clock(message.get("time")))

    def add_unread(self, peer: int, key: object) -> None:
        self.unread.setdefault(peer, set()).add(key)
        self._show_unread(peer)

    def clear_unread(self, peer: int) -> None:
        self.unread.pop(peer, None)
        self._show_unread(peer)

    def _show_unread(self, peer: int) -> None:
        badge = self.badges.get(peer)
        if badge is not None:
            badge.set(len(self.unread.get(peer, ())))

    def _load_unread(self) -> None:
        """What the core already holds when the window opens (the backlog may come first)."""
        for peer, messages in list(self.kernel.chat.conversations.items()):
            for message in list(messages.values()):
                if message["from"] == peer and not message.get("read_at"):
                    self.unread.setdefault(peer, set()).add(unread_key(message))
                self._set_last(peer, message)
        for offer in list(self.kernel.files.offers.values()):
            self.unread.setdefault(offer["from"], set()).add(offer["transfer_id"])

    def friend(self, user_id: int) -> dict | None:
        return next((f for f in self.friends if f["id"] == user_id), None)

    # -- requests -----------------------------------------------------------------------------------
    def render_requests(self) -> None:
        for child in self.requests_box.winfo_children():
            child.destroy()
        if not self.incoming and not self.outgoing:
            self.requests_box.pack_forget()
            return
        self.requests_box.pack(fill="x", before=self.friends_title)
        ttk.Label(self.requests_box, text="FRIEND REQUESTS", style="Section.TLabel").pack(anchor="w", pady=(12, 2))
        for request in sorted(self.incoming, key=lambda r: r["id"]):
            user = request.get("user") or {"id": request["from"], "nickname": "?"}
            row = tk.Frame(self.requests_box, background="#fffaf0", padx=10, pady=7,
                           highlightthickness=1, highlightbackground="#f3e3bf")
            row.pack(fill="x", pady=(0, 4))
            tk.Label(row, image=self.avatars.get(user, 32), background="#fffaf0").pack(side="left")
            refuse = ttk.Button(row, text="Refuse", width=7, command=lambda r=request: self.answer(r, False))
            accept = ttk.Button(row, text="Accept", width=7, style="Accent.TButton",
                                command=lambda r=request: self.answer(r, True))
            refuse.pack(side="right")
            accept.pack(side="right", padx=(0, 4))
            text = tk.Frame(row, background="#fffaf0")
            text.pack(side="left", fill="x", expand=True, padx=(8, 0))
            tk.Label(text, text=user.get("nickname", "?"), background="#fffaf0",
                     font=(FONT, 9, "bold"), anchor="w").pack(fill="x")
            tk.Label(text, text=f"“{preview(request['greeting'], 28)}”" if request.get("greeting")
                     else "wants to be your friend", background="#fffaf0",
                     foreground=COLORS["muted"], font=(FONT, 9), anchor="w").pack(fill="x")
            row.accept, row.refuse, row.request = accept, refuse, request  # type: ignore[attr-defined]
        for request in sorted(self.outgoing, key=lambda r: r["id"]):
            user = request.get("user") or {"nickname": "?"}
            ttk.Label(self.requests_box, text=f"Waiting for {user.get('nickname', '?')} to accept…",
                      style="Muted.TLabel", font=(FONT, 9)).pack(anchor="w")

    def request_rows(self) -> list[tk.Frame]:
        return [w for w in self.requests_box.winfo_children() if hasattr(w, "request")]

    def answer(self, request: dict, accept: bool) -> None:
        nickname = (request.get("user") or {}).get("nickname", "?")
        self.bridge.call(self.kernel.friends.answer, request["id"], accept,
                         on_done=lambda _r: self.notify(f"You and {nickname} are now friends" if accept
                                                        else f"Request from {nickname} refused"),
                         on_error=lambda exc: self.notify(describe_error(exc)))

    def add_friend(self) -> None:
        raw = self.add_entry.get()
        try:
            phone = normalize_phone(raw)
        except ApiError as exc:
            self.add_info.configure(text=describe_error(exc), style="Error.TLabel")
            return
        self.add_button.configure(state="disabled")
        self.add_info.configure(text="Sending request…", style="Muted.TLabel")

        def done(reply: dict) -> None:
            self.add_button.configure(state="normal")
            self.add_entry.delete(0, "end")
            if reply.get("status") == "friends":
                self.add_info.configure(text="You are now friends", style="Muted.TLabel", foreground=COLORS["online"])
            else:
                self._waiting_for = reply["request"]["to"]
                self.add_info.configure(text="Request sent; waiting for them to accept", style="Muted.TLabel",
                                        foreground=COLORS["online"])

        def failed(exc: BaseException) -> None:
            self.add_button.configure(state="normal")
            self.add_info.configure(text=describe_error(exc), style="Error.TLabel", foreground=COLORS["danger"])
        self.bridge.call(self.kernel.friends.add, None, phone, on_done=done, on_error=failed)

    def delete_friend(self, user_id: int) -> None:
        friend = self.friend(user_id) or {"nickname": "this friend"}
        nickname = friend.get("nickname", "?")
        confirm(self, "Delete friend", f"Remove {nickname} from your friends? Your chat history stays.",
                "Delete", lambda: self.bridge.call(self.kernel.friends.remove, user_id,
                                                   on_done=lambda _r: self.notify(f"{nickname} was removed"),
                                                   on_error=lambda exc: self.notify(describe_error(exc))))

    # -- chat and profile windows ---------------------------------------------------------------------
    def open_chat(self, user_id: int):
        from .chat_window import ChatWindow
        window = self.chats.get(user_id)
        if window is None or not window.winfo_exists():
            friend = self.friend(user_id) or {"id": user_id, "nickname": "?"}
            window = ChatWindow(self.app.root, self, friend,
                                cascade=sum(1 for w in self.chats.values() if w.winfo_exists()))
            self.chats[user_id] = window
        else:
            window.deiconify()
            window.lift()
        self.clear_unread(user_id)
        return window

    def chat_closed(self, user_id: int) -> None:
        self.chats.pop(user_id, None)

    def open_profile(self):
        from .profile import ProfileWindow
        if self.profile_window is None or not self.profile_window.winfo_exists():
            self.profile_window = ProfileWindow(self.app.root, self.kernel, self.bridge, self.avatars,
                                                self.app.settings, self.app.settings_path)
        else:
            self.profile_window.lift()
        return self.profile_window

    def close_children(self) -> None:
        """Close the windows this one opened (chats, profile)."""
        for window in list(self.chats.values()):
            if window.winfo_exists():
                window.close()
        self.chats.clear()
        if self.profile_window is not None and self.profile_window.winfo_exists():
            self.profile_window.destroy()

    # -- events ---------------------------------------------------------------------------------------
    def _on_friends(self, event) -> None:
        self.friends = list(event.data.get("friends", []))
        self.presence_known = self.presence_known or self.kernel.state == SessionState.ONLINE
        for peer, window in self.chats.items():
            friend = self.friend(peer)
            if friend is not None and window.winfo_exists():
                window.set_friend(friend)
        self._schedule_render()

    def _on_requests(self, event) -> None:
        self.incoming = list(event.data.get("incoming", []))
        self.outgoing = list(event.data.get("outgoing", []))
        if self._waiting_for is not None and not any(r.get("to") == self._waiting_for for r in self.outgoing):
            self._waiting_for = None          # answered (or withdrawn): the note has done its job
            self.add_info.configure(text=ADD_HINT, style="Muted.TLabel", foreground="")
        self._schedule_render()

    def _on_friend_request(self, event) -> None:
        user = event.data["request"].get("user") or {}
        self.notify(f"New friend request from {user.get('nickname', '?')}")

    def _on_friend_answer(self, event) -> None:
        user = event.data.get("user") or {}
        verb = "accepted" if event.data.get("accepted") else "refused"
        self.notify(f"{user.get('nickname', '?')} {verb} your friend request")

    def _on_presence(self, event) -> None:
        uid = event.data["user_id"]
        online = event.kind == EventKind.FRIEND_ONLINE
        friend = self.friend(uid)
        if friend is None:
            return
        friend["online"] = online
        self.notify(f"{friend.get('nickname', '?')} {'came online' if online else 'went offline'}")
        window = self.chats.get(uid)
        if window is not None and window.winfo_exists():
            window.set_friend(friend)
        self._schedule_render()

    def _on_friend_removed(self, event) -> None:
        window = self.chats.get(event.data["user_id"])
        if window is not None and window.winfo_exists():
            window.friend_removed()

    def _on_profile(self, event) -> None:
        """My own or a friend's new nickname, picture or signature, shown at once."""
        user = event.data.get("user") or {}
        if user.get("id") == self.me:
            self.app.root.title(f"Real-Time Meeting — {user.get('nickname', '')}")
        friend = self.friend(user.get("id"))
        if friend is not None:
            friend.update({k: v for k, v in user.items() if k != "online"})
            window = self.chats.get(friend["id"])
            if window is not None and window.winfo_exists():
                window.set_friend(friend)
        self._schedule_render()

    def _on_chat_message(self, event) -> None:
        message = event.data["message"]
        peer = message["to"] if message["from"] == self.me else message["from"]
        self._set_last(peer, message)
        if message["from"] == self.me or message.get("read_at"):
            return
        window = self.chats.get(peer)
        if window is not None and window.winfo_exists():
            return                      # the open window shows it and marks it read
        self.add_unread(peer, unread_key(message))
        if not event.data.get("backlog") and not message.get("file"):   # a file offer has its own notice
            friend = self.friend(peer) or {}
            self.notify(f"{friend.get('nickname', '?')}: {preview(message_preview(message), 40)}")

    def _on_chat_sent(self, event) -> None:
        message = event.data["message"]
        self._set_last(message["to"], message)

    def _on_file_offer(self, event) -> None:
        peer = event.data["from"]
        window = self.chats.get(peer)
        if window is None or not window.winfo_exists():
            self.add_unread(peer, event.data["transfer_id"])
            self.notify(f"{event.data.get('from_nickname') or 'A friend'} wants to send you {event.data['name']}")

    # -- connection state and notices ------------------------------------------------------------
    def show_state(self) -> None:
        state = self.kernel.state if self.kernel else SessionState.OFFLINE
        if state == SessionState.ONLINE:
            self.status.configure(text="●  Online", style="Status.TLabel", foreground=COLORS["online"])
        elif state == SessionState.RECONNECTING:
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
        if self._notice_after is not None:
            self.after_cancel(self._notice_after)
            self._notice_after = None
        self.show_state()
        self.presence_known = False     # until the server tells it again after the reconnect
        self._schedule_render()
        for window in self.chats.values():
            if window.winfo_exists():
                window.set_friend(self.friend(window.peer) or window.friend)

    def _on_reconnecting(self, event) -> None:
        if self._notice_after is None:
            self.status.configure(text=f"⟳  Reconnecting… (attempt {event.data.get('attempt', 1)})",
                                  style="Warn.Status.TLabel", foreground="#8a5a00")

    def _on_reconnected(self, event) -> None:
        self.notify("✓  Reconnected", 3.0)
        self._schedule_render()

    def _on_going_away(self, event) -> None:
        self.notify("The server is restarting; reconnecting shortly…", 4.0)
