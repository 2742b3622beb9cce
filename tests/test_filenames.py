"""The file-name sanitiser shared by the server and the receiving client."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.filenames import FALLBACK_NAME, MAX_NAME_BYTES, sanitize_filename


@pytest.mark.parametrize("hostile, expected", [
    ("../../etc/passwd", "etc_passwd"),
    ("a/b", "a_b"),
    ("..\\..\\windows\\system32\\cmd.exe", "windows_system32_cmd.exe"),
    ("/absolute/path.txt", "absolute_path.txt"),
    ("..", FALLBACK_NAME),
    (".", FALLBACK_NAME),
    ("", FALLBACK_NAME),
    ("   ", FALLBACK_NAME),
    (".bashrc", "bashrc"),
    ("evil\nname\x00.txt", "evil_name_.txt"),
    ("\x1b[31mred.txt", "_[31mred.txt"),
    ("invoice\u202etxt.exe", "invoice_txt.exe"),
    ("file....txt", "file.txt"),
    ("trailing. . ", "trailing"),
    ("CON.txt", "_CON.txt"),
    ("report.pdf", "report.pdf"),
    ("小明的照片 😀.jpg", "小明的照片 😀.jpg"),
])
def test_hostile_names_are_neutralised(hostile, expected):
    assert sanitize_filename(hostile) == expected


def test_long_names_are_cut_keeping_the_extension():
    name = sanitize_filename("x" * 300 + ".tar.gz")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.endswith(".gz") and name.startswith("xxx")
    assert len(sanitize_filename("y" * 300)) == MAX_NAME_BYTES


def test_multibyte_names_are_cut_on_character_boundaries():
    name = sanitize_filename("字" * 300 + ".txt")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.endswith(".txt")
    name.encode("utf-8").decode("utf-8")


@given(st.text(max_size=400))
def test_any_input_gives_one_safe_component(raw):
    name = sanitize_filename(raw)
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and ".." not in name
    assert not name.startswith((".", " ")) and not name.endswith((".", " "))
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name)
    assert sanitize_filename(name) == name
