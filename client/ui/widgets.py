"""Look and feel shared by every window: theme, avatars, badges, dialogs, scrolled lists."""
from __future__ import annotations

import hashlib
import io
import logging
import time
from pathlib import Path
import tkinter as tk
from tkinter import ttk
from typing import Callable, Iterable

from PIL import Image, ImageDraw, ImageFont, ImageTk

from client.kernel import ConnectionLost, NotAMeetingServer
from client.link import ConnectError
from common.errors import ApiError

log = logging.getLogger("client.ui")

COLORS = {
    "bg": "#f3f5f8",
    "panel": "#ffffff",
    "header": "#1f2a44",
    "header_text": "#ffffff",
    "text": "#1f2430",
    "muted": "#7a8496",
    "accent": "#2f7cf6",
    "accent_dark": "#1f63d1",
    "online": "#22b35e",
    "offline": "#b5bcc8",
    "danger": "#e5484d",
    "select": "#e6efff",
    "mine": "#d9e8ff",
    "theirs": "#ffffff",
    "video_bg": "#11151c",
    "warning": "#f5a524",
}
FONT = "DejaVu Sans"
AVATAR_PALETTE = ["#f2994a", "#eb5757", "#9b51e0", "#2d9cdb", "#27ae60", "#e2b93b",
                  "#56ccf2", "#bb6bd9", "#6fcf97", "#f178b6", "#4f6bed", "#219653"]


def apply_theme(root: tk.Tk) -> ttk.Style:
    """A flat, light messenger look on top of ttk's 'clam' theme."""
    style = ttk.Style(root)
    style.theme_use("clam")
    root.configure(background=COLORS["bg"])
    root.option_add("*Font", (FONT, 10))
    style.configure(".", background=COLORS["bg"], foreground=COLORS["text"], font=(FONT, 10))
    style.configure("TFrame", background=COLORS["bg"])
    style.configure("Panel.TFrame", background=COLORS["panel"])
    style.configure("Header.TFrame", background=COLORS["header"])
    style.configure("TLabel", background=COLORS["bg"], foreground=COLORS["text"])
    style.configure("Panel.TLabel", background=COLORS["panel"])
    style.configure("Muted.TLabel", background=COLORS["bg"], foreground=COLORS["muted"])
    style.configure("PanelMuted.TLabel", background=COLORS["panel"], foreground=COLORS["muted"])
    style.configure("Title.TLabel", background=COLORS["bg"], font=(FONT, 18, "bold"))
    style.configure("Section.TLabel", background=COLORS["bg"], foreground=COLORS["muted"],
                    font=(FONT, 9, "bold"))
    style.configure("Header.TLabel", background=COLORS["header"], foreground=COLORS["header_text"],
                    font=(FONT, 12, "bold"))
    style.configure("HeaderMuted.TLabel", background=COLORS["header"], foreground="#aeb8cc")
    style.configure("Error.TLabel", background=COLORS["bg"], foreground=COLORS["danger"])
    style.configure("PanelError.TLabel", background=COLORS["panel"], foreground=COLORS["danger"])
    style.configure("Status.TLabel", background="#e8ebf0", foreground=COLORS["muted"], padding=(8, 3))
    style.configure("Warn.Status.TLabel", background="#fff4d6", foreground="#8a5a00")
    style.configure("TButton", padding=(10, 5), background="#e8ebf0", borderwidth=0)
    style.map("TButton", background=[("active", "#dde2ea"), ("disabled", "#eef0f3")])
    style.configure("Accent.TButton", background=COLORS["accent"], foreground="white")
    style.map("Accent.TButton", background=[("active", COLORS["accent_dark"]), ("disabled", "#9dbdf5")],
              foreground=[("disabled", "#eef3fd")])
    style.configure("Danger.TButton", background=COLORS["danger"], foreground="white")
    style.map("Danger.TButton", background=[("active", "#c93a3f")])
    style.configure("Toggle.TButton", padding=(12, 6))
    style.configure("Off.Toggle.TButton", background=COLORS["danger"], foreground="white")
    style.map("Off.Toggle.TButton", background=[("active", "#c93a3f")])
    style.configure("Link.TButton", background=COLORS["bg"], foreground=COLORS["accent"], padding=0)
    style.map("Link.TButton", background=[("active", COLORS["bg"])])
    style.configure("TEntry", padding=5, fieldbackground="white")
    style.configure("TCheckbutton", background=COLORS["bg"])
    style.configure("Horizontal.TProgressbar", troughcolor="#e3e7ee", background=COLORS["accent"],
                    thickness=8)
    return style


def describe_error(exc: BaseException) -> str:
    """What to tell a person about a failed action, in one line."""
    if isinstance(exc, ApiError):
        text = exc.message
        retry = exc.details.get("retry_after") if isinstance(exc.details, dict) else None
        if isinstance(retry, (int, float)):
            text += f" (try again in {int(retry) + 1} s)"
        return text[:1].upper() + text[1:]
    if isinstance(exc, NotAMeetingServer):
        return f"{exc}. Check the address and the port."
    if isinstance(exc, ConnectError):
        return f"Cannot reach the server: {exc}"
    if isinstance(exc, ConnectionLost):
        return f"The connection to the server was lost ({exc}); try again in a moment"
    if isinstance(exc, TimeoutError):
        return "The server did not answer in time"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}"
    return str(exc) or exc.__class__.__name__


def format_clock(ms: int | float | None) -> str:
    """'14:05' today, 'Mon 14:05' this week, '2026-11-03 14:05' before."""
    if not ms:
        return ""
    when = time.localtime(ms / 1000)
    now = time.localtime()
    if when[:3] == now[:3]:
        return time.strftime("%H:%M", when)
    if time.time() - ms / 1000 < 6 * 86400:
        return time.strftime("%a %H:%M", when)
    return time.strftime("%Y-%m-%d %H:%M", when)


def format_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


# -- avatars ---------------------------------------------------------------------------------------
def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def initials_avatar(name: str, size: int) -> Image.Image:
    """A coloured disc with the first letter, drawn 4× and scaled down for smooth edges."""
    big = size * 4
    colour = AVATAR_PALETTE[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(AVATAR_PALETTE)]
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.ellipse((0, 0, big - 1, big - 1), fill=colour)
    letter = (name.strip()[:1] or "?").upper()
    font = _font(int(big * 0.48))
    box = draw.textbbox((0, 0), letter, font=font)
    draw.text(((big - (box[2] - box[0])) / 2 - box[0], (big - (box[3] - box[1])) / 2 - box[1]),
              letter, font=font, fill="white")
    return img.resize((size, size), Image.LANCZOS)


def round_avatar(data: bytes, size: int) -> Image.Image:
    """Picture bytes → a round ``size``×``size`` RGBA image."""
    img = Image.open(io.BytesIO(data)).convert("RGBA")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img = img.crop((left, top, left + side, top + side)).resize((size * 4, size * 4), Image.LANCZOS)
    mask = Image.new("L", img.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, img.width - 1, img.height - 1), fill=255)
    img.putalpha(mask)
    return img.resize((size, size), Image.LANCZOS)


def with_presence_dot(img: Image.Image, online: bool) -> Image.Image:
    img = img.copy()
    size = img.width
    big = Image.new("RGBA", (size * 4, size * 4), (0, 0, 0, 0))
    d = ImageDraw.Draw(big)
    r = size * 4 // 3.6
    x0 = size * 4 - r - 2
    d.ellipse((x0, x0, x0 + r, x0 + r), fill=COLORS["online"] if online else COLORS["offline"],
              outline="white", width=max(4, size // 6))
    img.alpha_composite(big.resize(img.size, Image.LANCZOS))
    return img


class AvatarCache:
    """PhotoImages for avatars, keyed by (user, picture, size, presence).

    ``loader(user) -> bytes`` gives the picture (``kernel.profile.avatar_png``). Built-in
    pictures are local and loaded at once; a user's own picture may need a request, so it is
    fetched through ``fetch(fn, user, on_done)`` off the Tk thread, the initial is shown
    meanwhile, and ``on_loaded()`` asks the window to redraw. Tk needs PhotoImages to stay
    referenced, which this cache also does.
    """

    def __init__(self, master: tk.Misc, loader: Callable[[dict], bytes] | None = None,
                 fetch: Callable[..., object] | None = None, on_loaded: Callable[[], None] | None = None) -> None:
        self.master = master
        self.loader = loader
        self.fetch = fetch
        self.on_loaded = on_loaded
        self._pictures: dict[tuple, bytes | None] = {}
        self._fetching: set[tuple] = set()
        self._images: dict[tuple, ImageTk.PhotoImage] = {}

    @staticmethod
    def _picture_key(user: dict) -> tuple:
        avatar = user.get("avatar") or {}
        return (user.get("id"), int(avatar.get("builtin", 0) or 0), int(avatar.get("version", 0) or 0))

    def _picture(self, user: dict) -> bytes | None:
        key = self._picture_key(user)
        if key in self._pictures or self.loader is None or user.get("id") is None:
            return self._pictures.get(key)
        if key[1] > 0 or key[2] == 0 or self.fetch is None:      # built-in: a local file
            try:
                self._pictures[key] = self.loader(user)
            except Exception:
                self._pictures[key] = None
            return self._pictures[key]
        if key not in self._fetching:
            self._fetching.add(key)

            def done(data: bytes) -> None:
                self._fetching.discard(key)
                self._pictures[key] = data
                if self.on_loaded is not None:
                    self.on_loaded()

            def failed(_exc: BaseException) -> None:
                self._fetching.discard(key)
                self._pictures[key] = None
            self.fetch(self.loader, dict(user), on_done=done, on_error=failed)
        return None

    def get(self, user: dict, size: int, online: bool | None = None) -> ImageTk.PhotoImage:
        picture_key = self._picture_key(user)
        data = self._picture(user)
        key = (picture_key, user.get("nickname"), data is not None, size, online)
        photo = self._images.get(key)
        if photo is None:
            img = None
            if data:
                try:
                    img = round_avatar(data, size)
                except Exception:
                    img = None
            if img is None:
                img = initials_avatar(user.get("nickname") or "?", size)
            if online is not None:
                img = with_presence_dot(img, online)
            photo = ImageTk.PhotoImage(img, master=self.master)
            self._images[key] = photo
        return photo


# -- small widgets ---------------------------------------------------------------------------------
class Badge(tk.Canvas):
    """A red pill with a count; hidden at zero."""

    def __init__(self, master: tk.Misc, background: str = COLORS["panel"]) -> None:
        super().__init__(master, width=26, height=18, highlightthickness=0, background=background)
        self.count = 0

    def set(self, count: int) -> None:
        self.count = count
        self.delete("all")
        if count <= 0:
            return
        text = str(count) if count < 100 else "99+"
        width = 18 if len(text) == 1 else 8 + 7 * len(text)
        self.configure(width=width)
        self.create_oval(0, 0, 17, 17, fill=COLORS["danger"], outline="")
        self.create_oval(width - 18, 0, width - 1, 17, fill=COLORS["danger"], outline="")
        self.create_rectangle(9, 0, width - 9, 17, fill=COLORS["danger"], outline="")
        self.create_text(width / 2, 9, text=text, fill="white", font=(FONT, 8, "bold"))


class ScrollFrame(ttk.Frame):
    """A vertically scrolled frame; put children in ``.inner``."""

    def __init__(self, master: tk.Misc, background: str = COLORS["panel"], **kwargs) -> None:
        super().__init__(master, **kwargs)
        self.canvas = tk.Canvas(self, highlightthickness=0, background=background, borderwidth=0)
        self.bar = ttk.Scrollbar(self, orient="vertical", command=self.canvas.yview)
        self.inner = tk.Frame(self.canvas, background=background)
        self._window = self.canvas.create_window(0, 0, window=self.inner, anchor="nw")
        self.canvas.configure(yscrollcommand=self.bar.set)
        self.canvas.pack(side="left", fill="both", expand=True)
        self.bar.pack(side="right", fill="y")
        self.inner.bind("<Configure>", lambda e: self.canvas.configure(scrollregion=self.canvas.bbox("all")))
        self.canvas.bind("<Configure>", lambda e: self.canvas.itemconfigure(self._window, width=e.width))
        for widget in (self.canvas, self.inner):
            widget.bind("<Button-4>", lambda e: self.canvas.yview_scroll(-2, "units"))
            widget.bind("<Button-5>", lambda e: self.canvas.yview_scroll(2, "units"))

    def bind_wheel(self, widget: tk.Misc) -> None:
        widget.bind("<Button-4>", lambda e: self.canvas.yview_scroll(-2, "units"), add="+")
        widget.bind("<Button-5>", lambda e: self.canvas.yview_scroll(2, "units"), add="+")


class Dialog(tk.Toplevel):
    """A small modal-looking dialog that does not block the event loop (messagebox would).

    ``buttons`` are (label, callback or None, style); any button closes the dialog first.
    """

    def __init__(self, parent: tk.Misc, title: str, text: str,
                 buttons: Iterable[tuple[str, Callable[[], None] | None, str]] = (("OK", None, "Accent.TButton"),),
                 icon: str = "info") -> None:
        super().__init__(parent)
        self.withdraw()
        self.title(title)
        self.configure(background=COLORS["bg"])
        self.resizable(False, False)
        self.transient(parent.winfo_toplevel())
        self.text = text
        self.buttons: dict[str, ttk.Button] = {}
        body = ttk.Frame(self, padding=20)
        body.pack(fill="both", expand=True)
        glyph = {"info": ("i", COLORS["accent"]), "warning": ("!", COLORS["warning"]),
                 "question": ("?", COLORS["accent"]), "error": ("!", COLORS["danger"])}[icon]
        mark = tk.Canvas(body, width=36, height=36, highlightthickness=0, background=COLORS["bg"])
        mark.create_oval(1, 1, 35, 35, fill=glyph[1], outline="")
        mark.create_text(18, 18, text=glyph[0], fill="white", font=(FONT, 16, "bold"))
        mark.grid(row=0, column=0, rowspan=2, sticky="n", padx=(0, 14))
        ttk.Label(body, text=title, font=(FONT, 12, "bold")).grid(row=0, column=1, sticky="w")
        self.label = ttk.Label(body, text=text, wraplength=340, justify="left")
        self.label.grid(row=1, column=1, sticky="w", pady=(4, 16))
        row = ttk.Frame(body)
        row.grid(row=2, column=0, columnspan=2, sticky="e")
        first = None
        for label, callback, style in buttons:
            button = ttk.Button(row, text=label, style=style, command=lambda cb=callback: self._press(cb))
            button.pack(side="left", padx=(8, 0))
            self.buttons[label] = button
            first = first or button
        self.bind("<Escape>", lambda e: self._press(None))
        self.protocol("WM_DELETE_WINDOW", lambda: self._press(None))
        self.update_idletasks()
        top = parent.winfo_toplevel()
        x = top.winfo_rootx() + max(0, (top.winfo_width() - self.winfo_reqwidth()) // 2)
        y = top.winfo_rooty() + max(0, (top.winfo_height() - self.winfo_reqheight()) // 3)
        self.geometry(f"+{x}+{y}")
        self.deiconify()
        self.lift()
        if first is not None:
            first.focus_set()

    def _press(self, callback: Callable[[], None] | None) -> None:
        self.destroy()
        if callback is not None:
            callback()


def confirm(parent: tk.Misc, title: str, text: str, action: str, on_yes: Callable[[], None]) -> Dialog:
    return Dialog(parent, title, text, [("Cancel", None, "TButton"), (action, on_yes, "Danger.TButton")],
                  icon="question")


# -- windows, fields and files ----------------------------------------------------------------------
WINDOW_GAP = 12


def fit_on_screen(window: tk.Misc, x: int, y: int, width: int, height: int) -> tuple[int, int]:
    """The top-left corner nearest to (x, y) that keeps a ``width``×``height`` window whole on
    the screen (a little room is kept for the title bar)."""
    screen_w, screen_h = window.winfo_screenwidth(), window.winfo_screenheight()
    x = max(0, min(x, screen_w - width))
    y = max(0, min(y, screen_h - height - 30))
    return x, y


def place_beside(window: tk.Toplevel, anchor: tk.Misc, width: int, height: int, cascade: int = 0) -> None:
    """Put ``window`` to the right of ``anchor``'s window (to its left when there is no room),
    its top level with the anchor's, moved down ``cascade`` steps so stacked windows show."""
    anchor = anchor.winfo_toplevel()
    anchor.update_idletasks()
    left, top = anchor.winfo_rootx(), anchor.winfo_rooty()
    x = left + anchor.winfo_width() + WINDOW_GAP
    if x + width > window.winfo_screenwidth() and left - WINDOW_GAP - width >= 0:
        x = left - WINDOW_GAP - width
    x, y = fit_on_screen(window, x + 24 * cascade, top + 24 * cascade, width, height)
    window.geometry(f"{width}x{height}+{x}+{y}")


def keep_on_screen(window: tk.Toplevel) -> None:
    """Shrink and move ``window`` so that all of it is on the screen."""
    window.update_idletasks()
    size, _, _ = window.geometry().partition("+")       # what was asked for, mapped or not yet
    width, height = (int(n) for n in size.split("x"))
    if width <= 1:
        width, height = window.winfo_reqwidth(), window.winfo_reqheight()
    width = min(width, window.winfo_screenwidth())
    height = min(height, window.winfo_screenheight() - 30)
    x, y = fit_on_screen(window, window.winfo_rootx(), window.winfo_rooty(), width, height)
    window.geometry(f"{width}x{height}+{x}+{y}")


def _select_all_text(event) -> str:
    event.widget.tag_add("sel", "1.0", "end-1c")
    event.widget.mark_set("insert", "end-1c")
    return "break"


def _select_all_entry(event) -> str:
    event.widget.select_range(0, "end")
    event.widget.icursor("end")
    return "break"


def install_edit_shortcuts(root: tk.Misc) -> None:
    """Ctrl+A selects all in every text field (Tk's X11 default moves to the line start)."""
    for key in ("<Control-a>", "<Control-A>"):
        root.bind_class("Text", key, _select_all_text)
        for cls in ("Entry", "TEntry"):
            root.bind_class(cls, key, _select_all_entry)


def downloads_dir() -> Path:
    """Where file dialogs start: the user's Downloads folder (XDG name), else the home folder."""
    home = Path.home()
    configured = None
    try:
        for line in (home / ".config" / "user-dirs.dirs").read_text(encoding="utf-8").splitlines():
            if line.startswith("XDG_DOWNLOAD_DIR="):
                configured = Path(line.split("=", 1)[1].strip().strip('"').replace("$HOME", str(home)))
    except OSError:
        pass
    for candidate in (configured, home / "Downloads"):
        if candidate is not None and candidate.is_dir():
            return candidate
    return home


def hide_dot_files_in_dialogs(root: tk.Misc) -> None:
    """Tk's own (X11) file dialog lists dot files unless told not to; it then offers a
    "Show hidden files" switch. The dialog's Tcl code must be loaded to set its variables."""
    try:
        root.tk.call("tk_getOpenFile", "-no-such-option")
    except tk.TclError:
        pass
    try:
        root.tk.call("set", "::tk::dialog::file::showHiddenBtn", "1")
        root.tk.call("set", "::tk::dialog::file::showHiddenVar", "0")
    except tk.TclError as exc:      # another platform's native dialog
        log.debug("file dialog settings not applied: %s", exc)


def enable_file_drop(widget: tk.Misc, on_paths: Callable[[list[str]], None]) -> bool:
    """Let files dropped from a file manager onto ``widget`` call ``on_paths``; needs the
    tkdnd extension (the tkinterdnd2 package ships it). False when it is not available."""
    try:
        from tkinterdnd2 import DND_FILES, TkinterDnD
        TkinterDnD.require(widget._root())
    except (ImportError, RuntimeError) as exc:
        log.info("dropping files is not available: %s", exc)
        return False

    def dropped(event) -> str:
        on_paths(list(widget.tk.splitlist(event.data)))
        return event.action
    widget.drop_target_register(DND_FILES)
    widget.dnd_bind("<<Drop>>", dropped)
    return True
