"""The meeting window: video grid, controls, member list with host actions, room chat.

Room state comes from ``kernel.rooms`` (kept current by ROOM_MEMBERS_EVENT); the pictures
come from ``MeetingMedia`` (publishing my camera/microphone/screen, decoding the others off the
Tk thread). Every action goes through the bridge so the window never waits on the network.
"""
from __future__ import annotations

import logging
import time
import tkinter as tk
from tkinter import ttk
from typing import TYPE_CHECKING

from common.media import MediaKind

from .video import VideoGrid
from .widgets import COLORS, FONT, Dialog, confirm, describe_error, format_clock

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("client.ui")


def format_number(number: str) -> str:
    return " ".join(number[i:i + 3] for i in range(0, len(number), 3))


class MeetingWindow(tk.Toplevel):
    def __init__(self, master: tk.Misc, app: "App", room: dict, media_factory=None) -> None:
        super().__init__(master)
        self.app = app
        self.kernel = app.kernel
        self.rooms = self.kernel.rooms
        self.bridge = app.bridge
        self.me = int(self.kernel.user["id"])
        self.room = room
        self.camera_on = True
        self.microphone_on = True
        self.screen_on = False
        self.closed = False
        self.started = time.monotonic()
        self.title(f"Meeting {format_number(room['number'])}")
        self.configure(background="#0b0e13")
        self.geometry("1180x740")
        self.minsize(760, 480)
        self._subscriptions: list[tuple[str, object]] = []
        self._build()
        self.media = None
        if media_factory is not None:
            try:
                self.media = media_factory(self)
            except Exception as exc:        # no codecs or devices: still a meeting with chat
                log.exception("audio and video are unavailable")
                self.show_notice(f"Audio and video are unavailable: {exc}")
        for kind, handler in (("room_members", self._on_members), ("room_chat", self._on_chat),
                              ("room_removed", self._on_removed), ("room_mute", self._on_muted),
                              ("room_closed", self._on_closed), ("disconnected", self._on_link),
                              ("reconnected", self._on_link)):
            self._subscriptions.append((kind, self.bridge.subscribe(kind, handler)))
        self.protocol("WM_DELETE_WINDOW", self.ask_leave)
        self.visible = True
        self.bind("<Unmap>", lambda e: e.widget is self and self._set_visible(False), add="+")
        self.bind("<Map>", lambda e: e.widget is self and self._set_visible(True), add="+")
        self.render_members(room)
        self._send_media_state()
        self._tick_clock()
        self._tick_speakers()

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        top = tk.Frame(self, background=COLORS["header"])
        top.pack(side="top", fill="x")
        self.title_label = tk.Label(top, text=self.room.get("title") or "Meeting", background=COLORS["header"],
                                    foreground="white", font=(FONT, 13, "bold"))
        self.title_label.pack(side="left", padx=(16, 12), pady=10)
        self.number_label = tk.Label(top, text=f"#  {format_number(self.room['number'])}",
                                     background=COLORS["header"], foreground="#cfd8ea", font=(FONT, 11))
        self.number_label.pack(side="left")
        self.copy_button = ttk.Button(top, text="Copy number", command=self.copy_number)
        self.copy_button.pack(side="left", padx=10)
        self.lock_label = tk.Label(top, text="", background=COLORS["header"], foreground=COLORS["warning"],
                                   font=(FONT, 10, "bold"))
        self.lock_label.pack(side="left")
        self.clock_label = tk.Label(top, text="00:00", background=COLORS["header"], foreground="#cfd8ea",
                                    font=(FONT, 11))
        self.clock_label.pack(side="right", padx=16)
        self.link_label = tk.Label(top, text="", background=COLORS["header"], foreground=COLORS["warning"],
                                   font=(FONT, 10, "bold"))
        self.link_label.pack(side="right")

        controls = tk.Frame(self, background="#151a23")
        controls.pack(side="bottom", fill="x")
        inner = tk.Frame(controls, background="#151a23")
        inner.pack(pady=10)
        self.mic_button = ttk.Button(inner, width=16, command=self.toggle_microphone)
        self.cam_button = ttk.Button(inner, width=16, command=self.toggle_camera)
        self.screen_button = ttk.Button(inner, width=16, command=self.toggle_screen)
        self.leave_button = ttk.Button(inner, text="Leave", style="Danger.TButton", width=10, command=self.ask_leave)
        for button in (self.mic_button, self.cam_button, self.screen_button):
            button.pack(side="left", padx=6)
        self.leave_button.pack(side="left", padx=(30, 6))
        self.notice = tk.Label(controls, text="", background="#151a23", foreground="#cfd8ea", font=(FONT, 9))
        self.notice.place(relx=0.01, rely=0.5, anchor="w")
        self._update_control_labels()

        side = ttk.Frame(self, width=300)
        side.pack(side="right", fill="y")
        side.pack_propagate(False)
        self.tabs = ttk.Notebook(side)
        self.tabs.pack(fill="both", expand=True)
        people = ttk.Frame(self.tabs, padding=8)
        chat = ttk.Frame(self.tabs, padding=8)
        self.tabs.add(people, text="People")
        self.tabs.add(chat, text="Chat")
        self.people_tab, self.chat_tab = people, chat
        self.tabs.bind("<<NotebookTabChanged>>", lambda e: self.tabs.select() == str(chat)
                       and self.tabs.tab(chat, text="Chat"))
        self.host_bar = ttk.Frame(people)
        self.mute_all_button = ttk.Button(self.host_bar, text="Mute everyone", command=self.mute_everyone)
        self.lock_button = ttk.Button(self.host_bar, text="Lock meeting", command=self.toggle_lock)
        self.mute_all_button.pack(side="left")
        self.lock_button.pack(side="left", padx=6)
        self.member_list = tk.Frame(people, background=COLORS["bg"])
        self.member_list.pack(side="bottom", fill="both", expand=True, pady=(8, 0))
        self.member_rows: dict[int, tk.Frame] = {}

        self.chat_text = tk.Text(chat, wrap="word", state="disabled", relief="flat", background="white",
                                 font=(FONT, 10), padx=8, pady=6, height=10)
        self.chat_text.tag_configure("who", foreground=COLORS["accent"], font=(FONT, 9, "bold"))
        self.chat_text.tag_configure("time", foreground=COLORS["muted"], font=(FONT, 8))
        self.chat_text.tag_configure("body", spacing3=6)
        entry_row = ttk.Frame(chat)
        entry_row.pack(side="bottom", fill="x", pady=(6, 0))
        self.chat_text.pack(fill="both", expand=True)
        self.chat_entry = ttk.Entry(entry_row)
        self.chat_entry.pack(side="left", fill="x", expand=True)
        self.chat_entry.bind("<Return>", lambda e: self.send_chat())
        ttk.Button(entry_row, text="Send", style="Accent.TButton", command=self.send_chat).pack(side="left", padx=(6, 0))
        self.chat_error = ttk.Label(chat, text="", style="Error.TLabel", wraplength=270)
        self.chat_error.pack(side="bottom", fill="x")

        self.grid_view = VideoGrid(self)
        self.grid_view.pack(side="left", fill="both", expand=True)

    def _update_control_labels(self) -> None:
        for button, on, on_text, off_text in (
                (self.mic_button, self.microphone_on, "Mute", "Unmute"),
                (self.cam_button, self.camera_on, "Stop video", "Start video"),
                (self.screen_button, self.screen_on, "Stop sharing", "Share screen")):
            button.configure(text=on_text if on else off_text,
                             style="TButton" if on or button is self.screen_button else "Off.Toggle.TButton")

    def _tick_clock(self) -> None:
        if self.closed:
            return
        elapsed = int(time.monotonic() - self.started)
        self.clock_label.configure(text=f"{elapsed // 3600:d}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
                                   if elapsed >= 3600 else f"{elapsed // 60:02d}:{elapsed % 60:02d}")
        self.after(1000, self._tick_clock)

    def _set_visible(self, visible: bool) -> None:
        if visible != self.visible and not self.closed:
            self.visible = visible
            if self.media is not None:
                self.media.set_visible(visible, self.bridge)

    def _tick_speakers(self) -> None:
        """Rings on the tiles of who is talking (voice activity from the media pipeline)."""
        if self.closed:
            return
        if self.media is not None:
            talking = self.media.speaking()
            active = self.media.active_speaker()
            for (uid, kind), tile in self.grid_view.tiles.items():
                tile.set_speaking(kind == MediaKind.CAMERA and (talking.get(uid, False) or uid == active)
                                  and not tile.muted)
        self.after(200, self._tick_speakers)

    def show_notice(self, text: str) -> None:
        self.notice.configure(text=text)
        self.after(6000, lambda: self.notice.configure(text="") if self.notice.cget("text") == text else None)

    # -- members ---------------------------------------------------------------------------------
    @property
    def i_am_host(self) -> bool:
        return int(self.room.get("host_id", 0)) == self.me

    def render_members(self, room: dict) -> None:
        self.room = room
        members = room.get("members", [])
        self.tabs.tab(self.people_tab, text=f"People ({len(members)})")
        self.lock_label.configure(text="LOCKED" if room.get("locked") else "")
        self.lock_button.configure(text="Unlock meeting" if room.get("locked") else "Lock meeting")
        if self.i_am_host:
            self.host_bar.pack(side="top", fill="x")
        else:
            self.host_bar.pack_forget()
        for row in self.member_rows.values():
            row.destroy()
        self.member_rows.clear()
        ordered = sorted(members, key=lambda m: (not m.get("host"), int(m["user_id"]) != self.me,
                                                 m.get("nickname", "").lower()))
        for member in ordered:
            self.member_rows[int(member["user_id"])] = self._member_row(member)
        present = set()
        for member in members:
            uid = int(member["user_id"])
            key = (uid, MediaKind.CAMERA)
            present.add(key)
            tile = self.grid_view.tile(key, member.get("nickname", "?"), self_view=uid == self.me)
            tile.set_muted(not member.get("microphone", False))
            if not member.get("camera", False):
                tile.set_video(False)
            screen_key = (uid, MediaKind.SCREEN)
            if member.get("screen"):
                present.add(screen_key)
                self.grid_view.tile(screen_key, f"{member.get('nickname', '?')}'s screen", self_view=uid == self.me)
        for key in list(self.grid_view.tiles):
            if key not in present:
                self.grid_view.remove(key)
        sharing = [k for k in present if k[1] == MediaKind.SCREEN]
        self.grid_view.set_stage(sharing[0] if sharing else None)
        if self.media is not None:
            self.media.members_changed(members)

    def _member_row(self, member: dict) -> tk.Frame:
        uid = int(member["user_id"])
        row = tk.Frame(self.member_list, background="white", padx=8, pady=6)
        row.pack(fill="x", pady=(0, 2))
        avatar = tk.Label(row, image=self.app.main_window.avatars.get(
            {"id": uid, "nickname": member.get("nickname", "?"), "avatar": member.get("avatar")}, 28)
            if self.app.main_window else "", background="white")
        avatar.pack(side="left")
        name = member.get("nickname", "?") + (" (you)" if uid == self.me else "")
        tk.Label(row, text=name, background="white", font=(FONT, 10, "bold" if uid == self.me else "normal"),
                 anchor="w").pack(side="left", padx=(8, 0))
        if member.get("host"):
            tk.Label(row, text="host", background=COLORS["select"], foreground=COLORS["accent"],
                     font=(FONT, 8, "bold"), padx=4).pack(side="left", padx=(6, 0))
        if self.i_am_host and uid != self.me:
            menu_button = ttk.Menubutton(row, text="⋯", width=2)
            menu = tk.Menu(menu_button, tearoff=False)
            menu.add_command(label="Ask to mute", command=lambda: self.mute_member(uid))
            menu.add_command(label="Remove from meeting…",
                             command=lambda: self.remove_member(uid, member.get("nickname", "?")))
            menu_button["menu"] = menu
            menu_button.pack(side="right", padx=(0, 6))
            row.menu = menu  # type: ignore[attr-defined]
        tags = []
        if not member.get("microphone"):
            tags.append(("muted", COLORS["danger"]))
        if member.get("screen"):
            tags.append(("sharing", COLORS["accent"]))
        if not member.get("camera"):
            tags.append(("no video", COLORS["muted"]))
        for text, colour in tags:
            tk.Label(row, text=text, background="white", foreground=colour, font=(FONT, 8, "bold")).pack(side="right", padx=(4, 0))
        return row

    def _on_members(self, event) -> None:
        room = event.data.get("room")
        if room and not self.closed:
            self.render_members(room)

    # -- actions -----------------------------------------------------------------------------------
    def copy_number(self) -> None:
        self.clipboard_clear()
        self.clipboard_append(self.room["number"])
        self.copy_button.configure(text="Copied ✓")
        self.after(2000, lambda: self.copy_button.configure(text="Copy number"))

    def _run(self, fn, *args, done_text: str = "") -> None:
        self.bridge.call(fn, *args, on_done=lambda _r: done_text and self.show_notice(done_text),
                         on_error=lambda exc: self.show_notice(describe_error(exc)))

    def _send_media_state(self) -> None:
        self._run(self.rooms.set_media_state, self.camera_on, self.microphone_on, self.screen_on)
        if self.media is not None:
            self.media.set_publishing(camera=self.camera_on, microphone=self.microphone_on, screen=self.screen_on)

    def toggle_microphone(self) -> None:
        self.microphone_on = not self.microphone_on
        self._update_control_labels()
        self._send_media_state()

    def toggle_camera(self) -> None:
        self.camera_on = not self.camera_on
        self._update_control_labels()
        self._send_media_state()

    def toggle_screen(self) -> None:
        self.screen_on = not self.screen_on
        self._update_control_labels()
        self._send_media_state()

    def mute_member(self, user_id: int | None) -> None:
        self._run(self.rooms.mute, user_id, done_text="Asked to mute")

    def mute_everyone(self) -> None:
        self._run(self.rooms.mute, None, done_text="Asked everyone to mute")

    def toggle_lock(self) -> None:
        self._run(self.rooms.lock, not self.room.get("locked"))

    def remove_member(self, user_id: int, nickname: str) -> None:
        confirm(self, "Remove member", f"Remove {nickname} from the meeting?", "Remove",
                lambda: self._run(self.rooms.kick, user_id, done_text=f"{nickname} was removed"))

    def send_chat(self) -> None:
        text = self.chat_entry.get().strip()
        if not text:
            return
        self.chat_entry.delete(0, "end")
        self.chat_error.configure(text="")
        self.bridge.call(self.rooms.chat, text,
                         on_error=lambda exc: self.chat_error.configure(text=describe_error(exc)))

    def _on_chat(self, event) -> None:
        data = event.data
        who = "You" if int(data.get("user_id", 0)) == self.me else data.get("nickname", "?")
        self.chat_text.configure(state="normal")
        self.chat_text.insert("end", f"{who}  ", "who")
        self.chat_text.insert("end", format_clock(data.get("time")) + "\n", "time")
        self.chat_text.insert("end", data.get("text", "") + "\n", "body")
        self.chat_text.configure(state="disabled")
        self.chat_text.see("end")
        if self.tabs.select() != str(self.chat_tab):
            self.tabs.tab(self.chat_tab, text="Chat •")

    def _on_muted(self, event) -> None:
        if self.microphone_on:
            self.microphone_on = False
            self._update_control_labels()
            self._send_media_state()
        self.show_notice("The host muted your microphone")

    def _on_link(self, event) -> None:
        self.link_label.configure(text="⟳ Reconnecting…" if event.kind == "disconnected" else "")

    def _on_removed(self, event) -> None:
        reason = event.data.get("reason")
        text = event.data.get("message") or ("The host removed you from the meeting." if reason == "kicked"
                                             else "You are no longer in the meeting.")
        self.close()
        Dialog(self.app.root, "Meeting ended", text, icon="warning")

    def _on_closed(self, event) -> None:
        self.close()
        Dialog(self.app.root, "Meeting ended", event.data.get("message") or "The meeting has ended.")

    def ask_leave(self) -> None:
        if self.closed:
            return
        confirm(self, "Leave meeting", "Leave this meeting?", "Leave", self.leave)

    def leave(self) -> None:
        if not self.closed:
            self.bridge.call(self.rooms.leave)
            self.close()

    def close(self) -> None:
        """Stop media and close the window (the room is left by ``leave``)."""
        if self.closed:
            return
        self.closed = True
        for kind, handler in self._subscriptions:
            self.bridge.unsubscribe(kind, handler)
        if self.media is not None:
            self.media.close()
        self.app.meeting_closed(self)
        self.destroy()
