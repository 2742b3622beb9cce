"""Logging to stderr in a form journald keeps readable, or to a file that SIGHUP reopens.

Under journald (``$JOURNAL_STREAM`` set) lines carry no timestamp, since the journal adds
its own, and the level travels as a ``<N>`` syslog prefix so ``journalctl -p warning``
filters on it. Connection lines carry ``peer=… user=…`` (``Connection.who``).
"""
from __future__ import annotations

import logging
import os
import sys

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(syslog_prefix)s%(levelname)s %(name)s: %(message)s"

_SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """Prefixes each line with ``<priority>`` (sd-daemon(3) style) for journald."""

    def __init__(self, fmt: str = JOURNAL_FORMAT) -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        record.syslog_prefix = f"<{priority}>"
        text = super().format(record)
        # One journal entry per record: continuation lines (tracebacks) keep the priority.
        return text.replace("\n", f"\n<{priority}>")


def _under_journald() -> bool:
    """True when stderr is the journal stream systemd handed us (not merely inherited)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    if ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return stream == f"{st.st_dev}:{st.st_ino}"


def setup_logging(level: str, log_file: str = "", tag: str = "") -> None:
    """(Re)configure the root logger; called at start and again on SIGHUP, which reopens
    ``log_file`` (so logrotate can move it away) and applies a new level. ``tag`` (a cluster
    node's name) goes before the logger name, so the lines of several processes sharing one log
    can be told apart."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    prefix = f"[{tag.replace('%', '%%')}] " if tag else ""
    plain = PLAIN_FORMAT.replace("%(name)s", prefix + "%(name)s")
    if log_file:
        handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8")
        handler.setFormatter(logging.Formatter(plain))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JournalFormatter(JOURNAL_FORMAT.replace("%(name)s", prefix + "%(name)s"))
                             if _under_journald() else logging.Formatter(plain))
    root.addHandler(handler)
    root.setLevel(level.upper())
