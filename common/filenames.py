"""File-name sanitiser, used by the server (on FILE_OFFER) and again by the receiving client.

A name that crosses the wire is only ever a label: the receiver must be able to use it as the
last component of a path in a directory it chose, and nothing else. So the result has no path
separators, no ``.`` or ``..`` components, no runs of dots, no control or invisible format
characters, no leading dot (hidden file) and no trailing dot or space, is not a reserved
Windows device name, and fits in ``MAX_NAME_BYTES`` of UTF-8 (below the usual 255-byte limit,
leaving room for the temporary-file prefix and suffix). Sanitising is idempotent.
"""
from __future__ import annotations

import re
import unicodedata

MAX_NAME_BYTES = 200
MAX_EXTENSION_CHARS = 16
FALLBACK_NAME = "file"

_SEPARATORS = re.compile(r"[/\\]+")
_DOT_RUNS = re.compile(r"\.{2,}")
_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", "CLOCK$"}
                      | {f"COM{i}" for i in range(10)} | {f"LPT{i}" for i in range(10)})


def sanitize_filename(name: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """Turn any string into a safe, non-empty single file name."""
    name = unicodedata.normalize("NFC", name)
    name = "".join("_" if _is_control(ch) else ch for ch in name)
    parts = [p for p in _SEPARATORS.split(name) if p.strip() not in ("", ".", "..")]
    name = "_".join(p.strip() for p in parts)
    name = _DOT_RUNS.sub(".", name)
    name = name.lstrip(". ").rstrip(". ")
    if not name:
        return FALLBACK_NAME
    if name.split(".")[0].upper() in _RESERVED:
        name = "_" + name
    return _truncate(name, max_bytes)


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls (newline, escape, NUL...); Cf: invisible formatting such as the
    # right-to-left override that makes "exe.txt" display as "txt.exe"; Zl/Zp: line breaks.
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def _truncate(name: str, max_bytes: int) -> str:
    """Cut to ``max_bytes`` of UTF-8 on a character boundary, keeping a short extension."""
    if len(name.encode("utf-8")) <= max_bytes:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or len(ext) > MAX_EXTENSION_CHARS:
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    budget = max_bytes - len(suffix.encode("utf-8"))
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore").rstrip(". ")
    return (cut or FALLBACK_NAME) + suffix
