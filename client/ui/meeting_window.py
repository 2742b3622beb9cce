"""The meeting window: video grid, controls, people list with host actions, room chat.

Room state comes from ``kernel.rooms`` (kept current by ROOM_MEMBERS_EVENT); the pictures
come from ``MeetingMedia`` (publishing my camera/microphone/screen, decoding the others off the
Tk thread). Every action goes through the bridge so the window never waits on the network.

While the connection is down the window stays open with a "Reconnecting…" bar: the server
keeps the place (and, across a restart, the meeting), and the client core takes it back.
"""
from __future__ import annotations

import logging
import time
import tkinter as tk
from pathlib import Path
from tkinter import ttk
from typing import Protocol

from client.events import EventKind
from client.kernel import ClientKernel
from common.media import MediaKind

from .bridge import Handler, UiBridge
from .icons import StateIcons
from .meeting_dialogs import SharePicker
from .settings import Settings
from .tooltip import Tooltip
from .video import VideoGrid
from .widgets import COLORS, FONT, AvatarCache, Dialog, confirm, describe_error, format_clock

log = logging.getLogger("client.ui")

TILE_AVATAR = 112
SHORTCUTS = {"microphone": "Alt+A", "camera": "Alt+V", "screen": "Alt+S", "panel": "Alt+P"}


def format_number(number: str) -> str:
    return " ".join(number[i:i + 3] for i in range(0, len(number), 3))


class MeetingHost(Protocol):
    """What the meeting window uses of the application that opens it (``app.App``)."""

    root: tk.Tk
    kernel: ClientKernel | None
    bridge: UiBridge
    settings: Settings
    settings_path: Path | None

    def meeting_closed(self, window: MeetingWindow) -> None: ...


class MeetingWindow(tk.Toplevel):
    def __init__(self, master: tk.Misc, app: MeetingHost, room: dict, media_factory=None) -> None:
        super().__init__(master)
        assert app.kernel is not None, "opened for a logged-in session"
        self.app = app
        self.kernel = app.kernel
        self.rooms = self.kernel.rooms
        self.bridge = app.bridge
        self.me = int(self.kernel.user["id"])
        self.room = room
        self.camera_on = True
        self.microphone_on = True
        self.screen_on = False
        self.share_target = None            # what I share: a sources.ShareTarget
        self.pinned: tuple[int, int] | None = None
        self.speaker_view = False
        self.panel_shown = True
        self.closed = False
        self.started = time.monotonic()
        self.title(f"Meeting {format_number(room['number'])}")
        self.configure(background="#0b0e13")
        self.geometry("1180x740")
        self.minsize(760, 480)
        self.icons = StateIcons(self)
        self.avatars = AvatarCache(self, loader=self.kernel.profile.avatar_png, fetch=self.bridge.call,
                                   on_loaded=lambda: self.closed or self.render_members(self.room))
        self._subscriptions: list[tuple[EventKind, Handler]] = []
        self._speaking: dict[int, bool] = {}
        self._build()
        self.media = None
        if media_factory is not None:
            try:
                self.media = media_factory(self)
            except Exception as exc:        # no codecs or devices: still a meeting with chat
                log.exception("audio and video are unavailable")
                self.show_notice(f"Audio and video are unavailable: {exc}")
        for kind, handler in (
                (EventKind.ROOM_MEMBERS, self._on_members), (EventKind.ROOM_CHAT, self._on_chat),
                (EventKind.ROOM_REMOVED, self._on_removed), (EventKind.ROOM_MUTE, self._on_muted),
                (EventKind.ROOM_CLOSED, self._on_closed), (EventKind.DISCONNECTED, self._on_link),
                (EventKind.RECONNECTED, self._on_link), (EventKind.ROOM_WAITING_LIST, self._on_waiting_list),
                (EventKind.ROOM_WAITING, self._on_waiting_again), (EventKind.ROOM_REFUSED, self._on_refused)):
            self._subscriptions.append((kind, self.bridge.subscribe(kind, handler)))
        self.protocol("WM_DELETE_WINDOW", self.ask_leave)
        self.visible = True
        self.bind("<Unmap>", lambda e: e.widget is self and self._set_visible(False), add="+")
        self.bind("<Map>", lambda e: e.widget is self and self._set_visible(True), add="+")
        self.bind("<Configure>", lambda e: e.widget is self and self._update_hidden_regions(), add="+")
        for key, action in (("a", self.toggle_microphone), ("v", self.toggle_camera),
                            ("s", self.toggle_screen), ("p", self.toggle_panel)):
            self.bind(f"<Alt-{key}>", lambda e, act=action: act() or "break")
            self.bind(f"<Alt-{key.upper()}>", lambda e, act=action: act() or "break")
        self.render_members(room)
        self.render_waiting(self.rooms.waiting_list)
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
        self.panel_button = ttk.Button(top, text="Hide panel", command=self.toggle_panel)
        self.panel_button.pack(side="right")
        Tooltip(self.panel_button, f"Show or hide the people and chat panel ({SHORTCUTS['panel']})")
        self.view_button = ttk.Button(top, text="Speaker view", command=self.toggle_speaker_view)
        self.view_button.pack(side="right", padx=6)
        Tooltip(self.view_button, "Speaker view: whoever talks fills the stage. Gallery: everyone the same size")

        # bars shown only when needed, under the header
        self.bars = tk.Frame(self, background="#0b0e13")
        self.bars.pack(side="top", fill="x")
        self.link_bar = tk.Label(self.bars, text="", background=COLORS["warning"], foreground="#1f2430",
                                 font=(FONT, 10, "bold"), pady=5)
        self.share_bar = tk.Frame(self.bars, background=COLORS["online"])
        self.share_label = tk.Label(self.share_bar, text="", background=COLORS["online"], foreground="white",
                                    font=(FONT, 10, "bold"))
        self.share_label.pack(side="left", padx=12, pady=4)
        self.stop_share_button = ttk.Button(self.share_bar, text="Stop sharing", style="Danger.TButton",
                                            command=self.stop_sharing)
        self.stop_share_button.pack(side="right", padx=8, pady=3)

        controls = tk.Frame(self, background="#151a23")
        controls.pack(side="bottom", fill="x")
        inner = tk.Frame(controls, background="#151a23")
        inner.pack(pady=10)
        self.mic_button = ttk.Button(inner, width=16, command=self.toggle_microphone)
        self.cam_button = ttk.Button(inner, width=16, command=self.toggle_camera)
        self.screen_button = ttk.Button(inner, width=16, command=self.toggle_screen)
        self.devices_button = ttk.Button(inner, text="Devices…", width=10, command=self.open_devices)
        self.leave_button = ttk.Button(inner, text="Leave", style="Danger.TButton", width=10, command=self.ask_leave)
        for button, tip in ((self.mic_button, f"Mute or unmute your microphone ({SHORTCUTS['microphone']})"),
                            (self.cam_button, f"Start or stop your camera ({SHORTCUTS['camera']})"),
                            (self.screen_button, f"Share your screen or a window ({SHORTCUTS['screen']})"),
                            (self.devices_button, "Camera, microphone and speakers: preview and test")):
            button.pack(side="left", padx=6)
            Tooltip(button, tip)
        self.leave_button.pack(side="left", padx=(30, 6))
        self.notice = tk.Label(controls, text="", background="#151a23", foreground="#cfd8ea", font=(FONT, 9))
        self.notice.place(relx=0.01, rely=0.5, anchor="w")
        self._update_control_labels()

        side = ttk.Frame(self, width=300)
        side.pack(side="right", fill="y")
        side.pack_propagate(False)
        self.side = side
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
        Tooltip(self.lock_button, "A locked meeting sends newcomers to a waiting room; you let them in")
        self.waiting_box = tk.Frame(people, background="#fffaf0", padx=8, pady=6)
        self.waiting_title = tk.Label(self.waiting_box, text="", background="#fffaf0", foreground=COLORS["text"],
                                      font=(FONT, 10, "bold"), anchor="w")
        self.waiting_title.pack(fill="x")
        self.waiting_rows: dict[int, tk.Frame] = {}
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

        self.grid_view = VideoGrid(self, me=self.me)
        self.grid_view.pack(side="left", fill="both", expand=True)

    def _update_control_labels(self) -> None:
        for button, on, on_text, off_text in (
                (self.mic_button, self.microphone_on, "Mute", "Unmute"),
                (self.cam_button, self.camera_on, "Stop video", "Start video"),
                (self.screen_button, self.screen_on, "Stop sharing", "Share screen")):
            button.configure(text=on_text if on else off_text,
                             style="TButton" if on or button is self.screen_button else "Off.Toggle.TButton")
        if self.screen_on:
            what = self.share_target.title if self.share_target is not None else "your screen"
            self.share_label.configure(text=f"●  You are sharing {what}")
            self.share_bar.pack(side="top", fill="x")
        else:
            self.share_bar.pack_forget()

    def _tick_clock(self) -> None:
        if self.closed:
            return
        elapsed = int(time.monotonic() - self.started)
        self.clock_label.configure(text=f"{elapsed // 3600:d}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}"
                                   if elapsed >= 3600 else f"{elapsed // 60:02d}:{elapsed % 60:02d}")
        self._update_hidden_regions()
        self.after(1000, self._tick_clock)

    def own_regions(self) -> list[tuple[int, int, int, int]]:
        """Where this window and its dialogs are on the screen (x, y, width, height)."""
        regions = []
        for window in [self, *[w for w in self.winfo_children() if isinstance(w, tk.Toplevel)]]:
            if window.winfo_ismapped():
                regions.append((window.winfo_rootx(), window.winfo_rooty(), window.winfo_width(), window.winfo_height()))
        return regions

    def _update_hidden_regions(self) -> None:
        """Sharing the screen: the capture paints over these (no hall of mirrors)."""
        if self.media is not None and self.screen_on:
            self.media.hidden_regions = self.own_regions()

    def _set_visible(self, visible: bool) -> None:
        if visible != self.visible and not self.closed:
            self.visible = visible
            if self.media is not None:
                self.media.set_visible(visible, self.bridge)

    def _tick_speakers(self) -> None:
        """Rings on the tiles and icons in the list for who is talking (voice activity from the
        media pipeline); in speaker view the stage follows the active speaker."""
        if self.closed:
            return
        if self.media is not None:
            talking = self.media.speaking()
            active = self.media.active_speaker()
            speaking = {}
            for (uid, kind), tile in self.grid_view.tiles.items():
                on = kind == MediaKind.CAMERA and (talking.get(uid, False) or uid == active) and not tile.muted
                tile.set_speaking(on)
                if kind == MediaKind.CAMERA:
                    speaking[uid] = on
            self.set_speaking(speaking)
            if self.speaker_view and active is not None and active != self.me:
                self.speaker = active
                self._update_stage()
        self.after(200, self._tick_speakers)

    def set_speaking(self, speaking: dict[int, bool]) -> None:
        """Who talks now: the microphone icon in their row turns green."""
        if speaking == self._speaking:
            return
        self._speaking = speaking
        for member in self.room.get("members", []):
            uid = int(member["user_id"])
            row = self.member_rows.get(uid)
            if row is not None and member.get("microphone"):
                row.mic.configure(image=self.icons["mic_speaking" if speaking.get(uid) else "mic_on"])
                row.mic.state = "speaking" if speaking.get(uid) else "on"

    def show_notice(self, text: str) -> None:
        self.notice.configure(text=text)
        self.after(6000, lambda: self.notice.configure(text="") if self.notice.cget("text") == text else None)

    # -- views ------------------------------------------------------------------------------------
    speaker: int | None = None

    def toggle_panel(self) -> None:
        self.panel_shown = not self.panel_shown
        if self.panel_shown:
            self.side.pack(side="right", fill="y", before=self.grid_view)
        else:
            self.side.pack_forget()
        self.panel_button.configure(text="Hide panel" if self.panel_shown else "Show panel")

    def toggle_speaker_view(self) -> None:
        self.speaker_view = not self.speaker_view
        self.view_button.configure(text="Gallery view" if self.speaker_view else "Speaker view")
        self._update_stage()

    def pin(self, user_id: int | None) -> None:
        """Pin one person's camera to the stage (None: unpin)."""
        self.pinned = (user_id, MediaKind.CAMERA) if user_id is not None else None
        for key, tile in self.grid_view.tiles.items():
            tile.set_pinned(key == self.pinned)
        self._update_stage()
        self.render_members(self.room)

    def _update_stage(self) -> None:
        """What takes the stage: a shared screen, else the pinned person, else (speaker view)
        the one who talks (the last speaker, or the first other member)."""
        tiles = self.grid_view.tiles
        screens = [k for k in tiles if k[1] == MediaKind.SCREEN]
        stage = None
        if screens:
            stage = screens[0]
        elif self.pinned in tiles:
            stage = self.pinned
        elif self.speaker_view:
            others = [k for k in self.grid_view.ordered() if k[0] != self.me and k[1] == MediaKind.CAMERA]
            speaker = (self.speaker, MediaKind.CAMERA)
            stage = speaker if speaker in tiles and speaker[0] != self.me else (others[0] if others else None)
        self.grid_view.set_stage(stage)

    # -- members ---------------------------------------------------------------------------------
    @property
    def i_am_host(self) -> bool:
        return int(self.room.get("host_id", 0)) == self.me

    def _user(self, member: dict) -> dict:
        return {"id": int(member["user_id"]), "nickname": member.get("nickname", "?"),
                "avatar": member.get("avatar")}

    def render_members(self, room: dict) -> None:
        self.room = room
        members = room.get("members", [])
        self.tabs.tab(self.people_tab, text=f"People ({len(members)})")
        self.lock_label.configure(text="LOCKED" if room.get("locked") else "")
        self.lock_button.configure(text="Unlock meeting" if room.get("locked") else "Lock meeting")
        if self.i_am_host:
            self.host_bar.pack(side="top", fill="x", before=self.member_list)
        else:
            self.host_bar.pack_forget()
            self.render_waiting([])
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
            tile.set_avatar(self.avatars.get(self._user(member), TILE_AVATAR))
            tile.set_muted(not member.get("microphone", False))
            tile.set_pinned(key == self.pinned)
            if not member.get("camera", False):
                tile.set_video(False)
            screen_key = (uid, MediaKind.SCREEN)
            if member.get("screen"):
                present.add(screen_key)
                self.grid_view.tile(screen_key, f"{member.get('nickname', '?')}'s screen", self_view=uid == self.me)
        for key in list(self.grid_view.tiles):
            if key not in present:
                self.grid_view.remove(key)
        if self.pinned not in present:
            self.pinned = None
        self._update_stage()
        self._speaking = {}
        if self.media is not None:
            self.media.members_changed(members)

    def _member_row(self, member: dict) -> tk.Frame:
        uid = int(member["user_id"])
        nickname = member.get("nickname", "?")
        row = tk.Frame(self.member_list, background="white", padx=8, pady=6)
        row.pack(fill="x", pady=(0, 2))
        tk.Label(row, image=self.avatars.get(self._user(member), 28), background="white").pack(side="left")
        name = nickname + (" (you)" if uid == self.me else "")
        away = member.get("away")
        tk.Label(row, text=name, background="white", foreground=COLORS["muted"] if away else COLORS["text"],
                 font=(FONT, 10, "bold" if uid == self.me else "normal"), anchor="w").pack(side="left", padx=(8, 0))
        if member.get("host"):
            tk.Label(row, text="host", background=COLORS["select"], foreground=COLORS["accent"],
                     font=(FONT, 8, "bold"), padx=4).pack(side="left", padx=(6, 0))
        if away:
            tk.Label(row, text="reconnecting", background="white", foreground=COLORS["warning"],
                     font=(FONT, 8, "bold")).pack(side="left", padx=(6, 0))
        menu_button = tk.Menubutton(row, text="⋯", background="white", relief="flat", indicatoron=False,
                                    font=(FONT, 12, "bold"), padx=4, cursor="hand2")
        menu = tk.Menu(menu_button, tearoff=False)
        pinned = self.pinned == (uid, MediaKind.CAMERA)
        menu.add_command(label="Unpin" if pinned else "Pin", command=lambda: self.pin(None if pinned else uid))
        if self.i_am_host and uid != self.me:
            menu.add_command(label="Ask to mute", command=lambda: self.mute_member(uid))
            menu.add_command(label="Make host", command=lambda: self.make_host(uid, nickname))
            menu.add_command(label="Remove from meeting…", command=lambda: self.remove_member(uid, nickname))
        menu_button["menu"] = menu
        menu_button.pack(side="right", padx=(6, 0))
        row.menu = menu  # type: ignore[attr-defined]
        camera = tk.Label(row, image=self.icons["cam_on" if member.get("camera") else "cam_off"], background="white")
        camera.state = "on" if member.get("camera") else "off"  # type: ignore[attr-defined]
        camera.pack(side="right", padx=(4, 0))
        mic = tk.Label(row, image=self.icons["mic_on" if member.get("microphone") else "mic_off"], background="white")
        mic.state = "on" if member.get("microphone") else "off"  # type: ignore[attr-defined]
        mic.pack(side="right", padx=(4, 0))
        row.mic, row.camera = mic, camera  # type: ignore[attr-defined]
        if member.get("screen"):
            tk.Label(row, text="sharing", background="white", foreground=COLORS["accent"],
                     font=(FONT, 8, "bold")).pack(side="right", padx=(4, 0))
        return row

    def _on_members(self, event) -> None:
        room = event.data.get("room")
        if room and not self.closed:
            self.render_members(room)

    # -- the waiting room (host) -----------------------------------------------------------------
    def render_waiting(self, waiting: list[dict]) -> None:
        for row in self.waiting_rows.values():
            row.destroy()
        self.waiting_rows.clear()
        if not waiting or not self.i_am_host:
            self.waiting_box.pack_forget()
            return
        self.waiting_title.configure(text=f"Waiting to join ({len(waiting)})")
        self.waiting_box.pack(side="top", fill="x", pady=(8, 0), before=self.member_list)
        for person in waiting:
            uid = int(person["user_id"])
            row = tk.Frame(self.waiting_box, background="#fffaf0")
            row.pack(fill="x", pady=(4, 0))
            tk.Label(row, text=person.get("nickname", "?"), background="#fffaf0", anchor="w",
                     font=(FONT, 10)).pack(side="left")
            row.refuse = ttk.Button(row, text="Refuse", width=7,  # type: ignore[attr-defined]
                                    command=lambda u=uid: self.admit(u, False))
            row.refuse.pack(side="right")
            row.admit = ttk.Button(row, text="Admit", style="Accent.TButton", width=7,  # type: ignore[attr-defined]
                                   command=lambda u=uid: self.admit(u, True))
            row.admit.pack(side="right", padx=(0, 4))
            self.waiting_rows[uid] = row

    def _on_waiting_list(self, event) -> None:
        if self.closed or event.data.get("number") != self.room.get("number"):
            return
        waiting = event.data.get("waiting", [])
        if len(waiting) > len(self.waiting_rows):
            self.show_notice(f"{waiting[-1].get('nickname', 'Somebody')} is waiting to join")
        self.render_waiting(waiting)

    def admit(self, user_id: int, admit: bool) -> None:
        self._run(self.rooms.admit, user_id, admit)

    def _on_waiting_again(self, event) -> None:
        """After a reconnect our place was gone and the meeting is locked: we wait again."""
        if not self.closed and event.data.get("number") == self.room.get("number"):
            self.link_bar.configure(text="The meeting is locked: waiting for the host to let you back in…")
            self.link_bar.pack(side="top", fill="x")

    def _on_refused(self, event) -> None:
        if not self.closed and event.data.get("number") == self.room.get("number"):
            self.close()
            Dialog(self.app.root, "Meeting ended", event.data.get("message") or "The host did not let you back in.",
                   icon="warning")

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
            self.media.set_publishing(camera=self.camera_on, microphone=self.microphone_on,
                                      screen=self.share_target if self.screen_on else None)

    def toggle_microphone(self) -> None:
        self.microphone_on = not self.microphone_on
        self._update_control_labels()
        self._send_media_state()

    def toggle_camera(self) -> None:
        self.camera_on = not self.camera_on
        self._update_control_labels()
        self._send_media_state()

    def toggle_screen(self) -> None:
        if self.screen_on:
            self.stop_sharing()
        else:
            SharePicker(self, self.bridge, on_choose=self.start_sharing)

    def start_sharing(self, target) -> None:
        """Share ``target`` (the screen or one window: a sources.ShareTarget)."""
        if self.closed:
            return
        self.share_target = target
        self.screen_on = True
        self._update_control_labels()
        self.update_idletasks()
        self._update_hidden_regions()
        self._send_media_state()

    def stop_sharing(self) -> None:
        if self.screen_on:
            self.screen_on = False
            self.share_target = None
            self._update_control_labels()
            self._send_media_state()

    def open_devices(self) -> None:
        from .device_settings import DeviceSettings
        self.device_settings = DeviceSettings(self, self.app.settings, self.app.settings_path,
                                              on_apply=self.apply_devices)

    def apply_devices(self, camera: str, microphone: str, speakers: str) -> None:
        """New devices chosen in the settings: the running meeting switches to them."""
        if self.media is not None:
            self.media.set_devices(camera, microphone, speakers)
            self.media.set_publishing(camera=self.camera_on, microphone=self.microphone_on,
                                      screen=self.share_target if self.screen_on else None)
        self.show_notice("Devices changed")

    def mute_member(self, user_id: int | None) -> None:
        self._run(self.rooms.mute, user_id, done_text="Asked to mute")

    def mute_everyone(self) -> None:
        self._run(self.rooms.mute, None, done_text="Asked everyone to mute")

    def toggle_lock(self) -> None:
        self._run(self.rooms.lock, not self.room.get("locked"))

    def make_host(self, user_id: int, nickname: str) -> None:
        confirm(self, "Make host", f"Make {nickname} the host? You will no longer be able to manage "
                "the meeting.", "Make host",
                lambda: self._run(self.rooms.hand_over, user_id, done_text=f"{nickname} is now the host"))

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
        if event.kind == EventKind.DISCONNECTED:
            self.link_bar.configure(text="⟳  Reconnecting…  your place in the meeting is kept")
            self.link_bar.pack(side="top", fill="x")
        else:
            self.link_bar.pack_forget()

    def _on_removed(self, event) -> None:
        reason = event.data.get("reason")
        text = event.data.get("message") or ("The host removed you from the meeting." if reason == "kicked"
                                             else "You are no longer in the meeting.")
        self.close()
        Dialog(self.app.root, "Meeting ended", text, icon="warning")

    def _on_closed(self, event) -> None:
        self.close()
        message = event.data.get("message") or "The meeting has ended."
        Dialog(self.app.root, "Meeting ended", message[:1].upper() + message[1:])

    def ask_leave(self) -> None:
        if self.closed:
            return
        others = len(self.room.get("members", [])) > 1
        if self.i_am_host and others:
            self.leave_dialog = Dialog(
                self, "Leave meeting", "End the meeting for everyone, or leave it to the others? "
                "If you leave, the host role passes to the next person.",
                [("Cancel", None, "TButton"), ("Leave meeting", self.leave, "TButton"),
                 ("End meeting for all", self.end_for_all, "Danger.TButton")], icon="question")
        elif self.i_am_host:
            confirm(self, "End meeting", "End this meeting?", "End meeting", self.leave)
        else:
            confirm(self, "Leave meeting", "Leave this meeting?", "Leave", self.leave)

    def end_for_all(self) -> None:
        if not self.closed:
            self.bridge.call(self.rooms.end, on_error=lambda exc: log.warning("ending the meeting failed: %s", exc))
            self.close()

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
