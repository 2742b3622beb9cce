"""Counters of the whole server (connections, the worker pool, media frames), shown by the status."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    accepted: int = 0
    refused: int = 0
    pool_submitted: int = 0
    pool_completed: int = 0
    media_frames_in: int = 0
    media_frames_out: int = 0
    media_frames_dropped: int = 0
