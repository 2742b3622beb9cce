"""Small state icons for the meeting's people list: microphone (on, off, speaking) and camera
(on, off), drawn once with PIL at four times their size and scaled down (smooth edges without
image files)."""
from __future__ import annotations

import tkinter as tk

from PIL import Image, ImageDraw, ImageTk

from .widgets import COLORS

SCALE = 4
GREY = "#5b6577"


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw, int]:
    big = size * SCALE
    image = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    return image, ImageDraw.Draw(image), big


def _slash(draw: ImageDraw.ImageDraw, big: int, colour: str) -> None:
    draw.line((big * 0.15, big * 0.15, big * 0.85, big * 0.85), fill=colour, width=max(2, big // 10))


def microphone(size: int, state: str) -> Image.Image:
    """``state``: "on", "off" (red, struck through) or "speaking" (green, with sound waves)."""
    colour = {"on": GREY, "off": COLORS["danger"], "speaking": COLORS["online"]}[state]
    image, draw, big = _canvas(size)
    w = big // 10
    draw.rounded_rectangle((big * 0.36, big * 0.08, big * 0.64, big * 0.58), radius=big * 0.14, fill=colour)
    draw.arc((big * 0.22, big * 0.28, big * 0.78, big * 0.74), 0, 180, fill=colour, width=w)
    draw.line((big * 0.5, big * 0.74, big * 0.5, big * 0.9), fill=colour, width=w)
    draw.line((big * 0.34, big * 0.9, big * 0.66, big * 0.9), fill=colour, width=w)
    if state == "off":
        _slash(draw, big, colour)
    if state == "speaking":
        draw.arc((big * 0.02, big * 0.12, big * 0.3, big * 0.6), 120, 240, fill=colour, width=w)
        draw.arc((big * 0.7, big * 0.12, big * 0.98, big * 0.6), -60, 60, fill=colour, width=w)
    return image.resize((size, size), Image.LANCZOS)


def camera(size: int, state: str) -> Image.Image:
    """``state``: "on" or "off" (red, struck through)."""
    colour = GREY if state == "on" else COLORS["danger"]
    image, draw, big = _canvas(size)
    draw.rounded_rectangle((big * 0.06, big * 0.28, big * 0.68, big * 0.74), radius=big * 0.08, fill=colour)
    draw.polygon([(big * 0.7, big * 0.5), (big * 0.96, big * 0.3), (big * 0.96, big * 0.7)], fill=colour)
    if state == "off":
        _slash(draw, big, colour)
    return image.resize((size, size), Image.LANCZOS)


class StateIcons:
    """The PhotoImages, made once per window (Tk needs them referenced)."""

    def __init__(self, master: tk.Misc, size: int = 18) -> None:
        self.images = {f"mic_{s}": ImageTk.PhotoImage(microphone(size, s), master=master)
                       for s in ("on", "off", "speaking")}
        self.images.update({f"cam_{s}": ImageTk.PhotoImage(camera(size, s), master=master) for s in ("on", "off")})

    def __getitem__(self, name: str) -> ImageTk.PhotoImage:
        return self.images[name]
