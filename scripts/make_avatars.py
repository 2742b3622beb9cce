#!/usr/bin/env python3
"""Draw the built-in avatars: client/assets/avatars/01.png .. 12.png (128x128, palette PNG).

Each is a person silhouette on its own background colour with a different accent shape, so
twelve friends in a list are told apart at a glance. The output is deterministic; run this
again after changing it and commit the PNGs (they ship as package data).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 128
COLOURS = [  # (background, accent)
    ("#e57373", "#ffcdd2"), ("#f06292", "#f8bbd0"), ("#ba68c8", "#e1bee7"), ("#7986cb", "#c5cae9"),
    ("#4fc3f7", "#b3e5fc"), ("#4db6ac", "#b2dfdb"), ("#81c784", "#c8e6c9"), ("#dce775", "#f0f4c3"),
    ("#ffb74d", "#ffe0b2"), ("#a1887f", "#d7ccc8"), ("#90a4ae", "#cfd8dc"), ("#ff8a65", "#ffccbc"),
]
OUT = Path(__file__).resolve().parents[1] / "client" / "assets" / "avatars"


def accent(draw: ImageDraw.ImageDraw, kind: int, colour: str) -> None:
    """One of six small shapes in the top-left corner; with the colours, every avatar differs."""
    box = (10, 10, 38, 38)
    if kind == 0:
        draw.ellipse(box, fill=colour)
    elif kind == 1:
        draw.rectangle(box, fill=colour)
    elif kind == 2:
        draw.polygon([(24, 8), (40, 38), (8, 38)], fill=colour)
    elif kind == 3:
        draw.polygon([(24, 8), (40, 24), (24, 40), (8, 24)], fill=colour)
    elif kind == 4:
        draw.line([(10, 10), (38, 38)], fill=colour, width=6)
        draw.line([(38, 10), (10, 38)], fill=colour, width=6)
    else:
        draw.ellipse(box, outline=colour, width=6)


def avatar(number: int) -> Image.Image:
    background, light = COLOURS[number - 1]
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    accent(draw, (number - 1) % 6, light)
    draw.ellipse((40, 26, 88, 74), fill="#ffffff")              # head
    draw.pieslice((18, 80, 110, 172), 180, 360, fill="#ffffff")  # shoulders
    return image.quantize(colors=16)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output directory (default {OUT})")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for number in range(1, len(COLOURS) + 1):
        path = args.out / f"{number:02d}.png"
        avatar(number).save(path, "PNG", optimize=True)
        print(f"{path} {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
