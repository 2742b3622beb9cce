"""Video tiles for the meeting window.

Frames arrive on decoder threads; Tk may only paint on the main thread. Each tile has a
one-frame mailbox: a decoder thread scales its newest picture to the tile's size and drops it in
(replacing any picture not yet shown), and the grid's paint loop, run by ``after()`` at the
display rate, pastes whatever is new into the tile's PhotoImage. Work never piles up: a slow
window shows fewer frames, it does not fall behind.
"""
from __future__ import annotations

import math
import threading
import time
import tkinter as tk
from typing import Callable

from PIL import Image, ImageTk

from .widgets import COLORS, FONT

PAINT_INTERVAL_MS = 15   # ~60 Hz: at least the display rate of any stream
# Pasting into Tk photos is the Tk thread's main work; on a starved machine one paste can take
# tens of milliseconds. One round of the paint loop stops pasting after this long and goes on
# with the next tile in the following round, so other events (a click, a key) are not held up
# behind every tile's paste. See docs/PERFORMANCE.md ("Tk event loop during a meeting").
PAINT_BUDGET_S = 0.012


class FrameSlot:
    """Latest-picture mailbox shared by one producer thread and the Tk thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._image: Image.Image | None = None
        self.size = (320, 240)          # the tile's box; set by Tk, read by producers
        self.replaced = 0       # pictures overwritten before the Tk thread took them

    def put(self, image: Image.Image) -> None:
        with self._lock:
            if self._image is not None:
                self.replaced += 1
            self._image = image

    def take(self) -> Image.Image | None:
        with self._lock:
            image, self._image = self._image, None
            return image


def fit(width: int, height: int, box: tuple[int, int]) -> tuple[int, int]:
    """The largest even size with the picture's aspect ratio inside ``box``."""
    scale = min(box[0] / max(1, width), box[1] / max(1, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


class VideoTile(tk.Frame):
    """One participant's picture with a name label, a muted mark and an active-speaker ring.
    Without video it shows the person's avatar picture (``set_avatar``), or their initial until
    the picture is known."""

    def __init__(self, master: tk.Misc, name: str, *, self_view: bool = False) -> None:
        super().__init__(master, background=COLORS["video_bg"], highlightthickness=3,
                         highlightbackground=COLORS["video_bg"], highlightcolor=COLORS["video_bg"])
        self.name = name
        self.self_view = self_view
        self.slot = FrameSlot()
        self.paints = 0
        self.canvas = tk.Canvas(self, background=COLORS["video_bg"], highlightthickness=0)
        self.canvas.pack(fill="both", expand=True)
        self._photo: ImageTk.PhotoImage | None = None
        self._image_item = self.canvas.create_image(0, 0, anchor="center")
        self._placeholder = self.canvas.create_text(0, 0, text=self._initial(), fill="#5b6577",
                                                    font=(FONT, 36, "bold"))
        self._avatar_item = self.canvas.create_image(0, 0, anchor="center", state="hidden")
        self.avatar: ImageTk.PhotoImage | None = None
        self.pinned = False
        self._label_bg = self.canvas.create_rectangle(0, 0, 0, 0, fill="#000000", outline="", stipple="gray50")
        self._label = self.canvas.create_text(0, 0, anchor="sw", fill="white", font=(FONT, 10, "bold"))
        self.muted = False
        self.speaking = False
        self.has_video = False
        self._set_label()
        self.canvas.bind("<Configure>", self._on_resize)

    def _initial(self) -> str:
        return (self.name.strip()[:1] or "?").upper()

    def _set_label(self) -> None:
        text = (self.name + (" (you)" if self.self_view else "")
                + ("  · muted" if self.muted else "") + ("  · pinned" if self.pinned else ""))
        self.canvas.itemconfigure(self._label, text=text)
        self._place_label()

    def _place_label(self) -> None:
        h = self.canvas.winfo_height()
        self.canvas.coords(self._label, 10, h - 8)
        box = self.canvas.bbox(self._label)
        if box:
            self.canvas.coords(self._label_bg, box[0] - 6, box[1] - 3, box[2] + 6, box[3] + 3)
        self.canvas.tag_raise(self._label_bg)
        self.canvas.tag_raise(self._label)

    def _on_resize(self, event) -> None:
        w, h = max(16, event.width), max(16, event.height)
        self.slot.size = (w, h)         # producers fit each picture into this box, keeping its shape
        self.canvas.coords(self._image_item, w // 2, h // 2)
        self.canvas.coords(self._placeholder, w // 2, h // 2)
        self.canvas.coords(self._avatar_item, w // 2, h // 2)
        self._place_label()

    def set_name(self, name: str) -> None:
        if name != self.name:
            self.name = name
            self.canvas.itemconfigure(self._placeholder, text=self._initial())
            self._set_label()

    def set_avatar(self, photo: ImageTk.PhotoImage) -> None:
        """The picture shown while there is no video (instead of the initial)."""
        if photo is not self.avatar:
            self.avatar = photo
            self.canvas.itemconfigure(self._avatar_item, image=photo)
            self._show_placeholder(not self.has_video)

    def _show_placeholder(self, shown: bool) -> None:
        avatar = shown and self.avatar is not None
        self.canvas.itemconfigure(self._avatar_item, state="normal" if avatar else "hidden")
        self.canvas.itemconfigure(self._placeholder, state="normal" if shown and not avatar else "hidden")

    @property
    def showing_avatar(self) -> bool:
        return self.canvas.itemcget(self._avatar_item, "state") == "normal"

    def set_pinned(self, pinned: bool) -> None:
        if pinned != self.pinned:
            self.pinned = pinned
            self._set_label()

    def set_muted(self, muted: bool) -> None:
        if muted != self.muted:
            self.muted = muted
            self._set_label()

    def set_speaking(self, speaking: bool) -> None:
        if speaking != self.speaking:
            self.speaking = speaking
            colour = COLORS["online"] if speaking else COLORS["video_bg"]
            self.configure(highlightbackground=colour, highlightcolor=colour)

    def set_video(self, on: bool) -> None:
        """Camera off: forget the picture and show the avatar."""
        self.has_video = on
        if not on:
            self.slot.take()
            self.canvas.itemconfigure(self._image_item, state="hidden")
            self._show_placeholder(True)

    def paint(self) -> bool:
        """Tk thread: show the newest picture if there is one; True if something was drawn."""
        image = self.slot.take()
        if image is None:
            return False
        if self._photo is None or (self._photo.width(), self._photo.height()) != image.size:
            self._photo = ImageTk.PhotoImage(image, master=self)
            self.canvas.itemconfigure(self._image_item, image=self._photo)
        else:
            self._photo.paste(image)
        if not self.has_video or self.canvas.itemcget(self._image_item, "state") == "hidden":
            self.has_video = True
            self.canvas.itemconfigure(self._image_item, state="normal")
            self._show_placeholder(False)
        self.paints += 1
        return True


class VideoGrid(tk.Frame):
    """Tiles laid out in a near-square grid, my own first (top left: the same place for every
    member); a shared screen, a pinned person or the speaker takes the big stage with the others
    in a strip beside it. Runs the paint loop for all its tiles."""

    def __init__(self, master: tk.Misc, me: int = 0) -> None:
        super().__init__(master, background="#0b0e13")
        self.me = me
        self.tiles: dict[tuple[int, int], VideoTile] = {}
        self.stage: tuple[int, int] | None = None
        self.on_paint: Callable[[], None] | None = None
        self._next = 0              # the tile the next paint round starts with
        self._after = self.after(PAINT_INTERVAL_MS, self._paint_loop)
        self.bind("<Destroy>", self._on_destroy, add="+")

    def _on_destroy(self, event) -> None:
        if event.widget is self and self._after:
            try:
                self.after_cancel(self._after)
            except tk.TclError:
                pass
            self._after = None

    def tile(self, key: tuple[int, int], name: str, self_view: bool = False) -> VideoTile:
        tile = self.tiles.get(key)
        if tile is None:
            tile = VideoTile(self, name, self_view=self_view)
            self.tiles[key] = tile
            self.relayout()
        else:
            tile.set_name(name)
        return tile

    def remove(self, key: tuple[int, int]) -> None:
        tile = self.tiles.pop(key, None)
        if tile is not None:
            tile.destroy()
            if self.stage == key:
                self.stage = None
            self.relayout()

    def set_stage(self, key: tuple[int, int] | None) -> None:
        if key != self.stage:
            self.stage = key
            self.relayout()

    def relayout(self) -> None:
        for tile in self.tiles.values():
            tile.place_forget()
        keys = self.ordered()
        if not keys:
            return
        gap = 0.006
        if self.stage in self.tiles and len(keys) > 1:
            others = [k for k in keys if k != self.stage]
            self.tiles[self.stage].place(relx=gap, rely=gap, relwidth=0.75 - 2 * gap, relheight=1 - 2 * gap)
            h = min(0.25, 1 / len(others))
            for i, key in enumerate(others):
                self.tiles[key].place(relx=0.75, rely=i * h + gap, relwidth=0.25 - gap, relheight=h - 2 * gap)
            return
        cols = math.ceil(math.sqrt(len(keys)))
        rows = math.ceil(len(keys) / cols)
        for i, key in enumerate(keys):
            r, c = divmod(i, cols)
            in_row = min(cols, len(keys) - r * cols)
            offset = (cols - in_row) / cols / 2       # centre a short last row
            self.tiles[key].place(relx=offset + c / cols + gap, rely=r / rows + gap,
                                  relwidth=1 / cols - 2 * gap, relheight=1 / rows - 2 * gap)

    def ordered(self) -> list[tuple[int, int]]:
        """My tiles first, then the others in the order they came."""
        return sorted(self.tiles, key=lambda key: key[0] != self.me)

    def _paint_loop(self) -> None:
        tiles = list(self.tiles.values())
        started = time.perf_counter()
        for i in range(len(tiles)):
            tiles[(self._next + i) % len(tiles)].paint()
            if time.perf_counter() - started > PAINT_BUDGET_S:
                self._next = (self._next + i + 1) % len(tiles)
                break
        if self.on_paint is not None:
            self.on_paint()
        self._after = self.after(PAINT_INTERVAL_MS, self._paint_loop)
