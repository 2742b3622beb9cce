"""Checking and normalising uploaded avatar pictures with Pillow.

An upload is untrusted bytes. It must be a real PNG, JPEG, GIF or WebP picture of at most
``MAX_AVATAR_PIXELS`` pixels; the size is read from the header before any pixel is decoded, and
Pillow's decompression-bomb guard stays on with its warning turned into an error. The picture
is decoded fully (a truncated file fails here), centre-cropped to a square and scaled to
128x128, and stored as PNG.

The cost of a decode is bounded: a JPEG is decoded already scaled down (``draft``), the crop
and scale reduce by a whole factor first (``reducing_gap``) so no full-size copy is made, only
one picture is decoded at a time (a 5000x5000 one takes ~100 MB while it is), and the memory is
handed back to the system afterwards (glibc keeps freed blocks of worker threads otherwise).

The stored PNG must fit, base64-encoded, in a JSON reply (control frames are at most 64 KiB):
a full-colour 128x128 PNG of a noisy photo can be ~60 KB, so a PNG above ``MAX_STORED_PNG``
is saved again with an adaptive 256-colour palette, which is at most ~17 KB.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import io
import threading
import warnings

from PIL import Image, ImageOps

from common import limits
from common.errors import ApiError, ErrorCode

AVATAR_SIZE = 128
MAX_AVATAR_PIXELS = 25_000_000        # e.g. 5000x5000 (~100 MB decoded as RGBA)
DECODE_SLOTS = threading.BoundedSemaphore(1)   # one picture decoded at a time: bounded memory
REDUCING_GAP = 2.0                    # shrink by a whole factor first, down to twice the target
MAX_STORED_PNG = 40_000               # base64 of this is ~53 KB: fits a control frame
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "WEBP"})

# Process-wide: a picture over Pillow's pixel limit is an error, not a warning to log.
warnings.simplefilter("error", Image.DecompressionBombWarning)
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > 2 * MAX_AVATAR_PIXELS:
    Image.MAX_IMAGE_PIXELS = 2 * MAX_AVATAR_PIXELS


def normalize_avatar(data: bytes) -> bytes:
    """The 128x128 PNG to store for an uploaded picture; raises ApiError
    (AVATAR_TOO_LARGE over 2 MB, INVALID_AVATAR for anything that is not a sound picture)."""
    if len(data) > limits.MAX_AVATAR_BYTES:
        raise ApiError(ErrorCode.AVATAR_TOO_LARGE, size=len(data), limit=limits.MAX_AVATAR_BYTES)
    if not data:
        raise ApiError(ErrorCode.INVALID_AVATAR, "the picture is empty")
    try:
        image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(ErrorCode.INVALID_AVATAR, "the picture has too many pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ApiError(ErrorCode.INVALID_AVATAR, "not a PNG, JPEG, GIF or WebP picture",
                       reason=exc.__class__.__name__) from None
    with image:
        if image.format not in ALLOWED_FORMATS:
            raise ApiError(ErrorCode.INVALID_AVATAR, f"{image.format} pictures are not accepted: "
                           "use PNG, JPEG, GIF or WebP")
        width, height = image.size
        if width < 1 or height < 1 or width * height > MAX_AVATAR_PIXELS:
            raise ApiError(ErrorCode.INVALID_AVATAR, "the picture has too many pixels",
                           width=width, height=height)
        try:
            if image.format == "JPEG":
                image.draft("RGB", (AVATAR_SIZE * 2, AVATAR_SIZE * 2))  # decode big JPEGs scaled down
            with DECODE_SLOTS:
                try:
                    image.load()
                    square = _square(image)
                finally:
                    image.close()
                    release_memory()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ApiError(ErrorCode.INVALID_AVATAR, "the picture has too many pixels") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ApiError(ErrorCode.INVALID_AVATAR, "the picture is damaged or truncated",
                           reason=exc.__class__.__name__) from None
    return _encode(square)


def _square(image: Image.Image) -> Image.Image:
    """The centre square scaled to AVATAR_SIZE, upright, RGB or RGBA; no full-size copy is
    made of an RGB(A) or greyscale picture."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if has_alpha else "RGB")   # palettes and 16-bit cannot be resampled
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    small = image.resize((AVATAR_SIZE, AVATAR_SIZE), Image.Resampling.LANCZOS,
                         box=(left, top, left + side, top + side), reducing_gap=REDUCING_GAP)
    return ImageOps.exif_transpose(small).convert("RGBA" if has_alpha else "RGB")


def _malloc_trim() -> "ctypes._CFuncPtr | None":
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):   # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc only; elsewhere a no-op)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def _encode(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", optimize=True)
    if out.tell() <= MAX_STORED_PNG:
        return out.getvalue()
    method = Image.Quantize.FASTOCTREE if image.mode == "RGBA" else Image.Quantize.MEDIANCUT
    out = io.BytesIO()
    image.quantize(colors=256, method=method).save(out, "PNG", optimize=True)
    return out.getvalue()
