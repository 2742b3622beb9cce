"""Reusable byte buffers for the bulk paths (file chunks).

Allocating and freeing a fresh 256 KiB buffer per chunk on one thread and freeing it on
another makes glibc hand the memory back to the kernel and fault every page in again for the
next chunk: measured, that was a third of a file recipient's CPU. A pool keeps a few buffers
of each size in use and hands them out again.
"""
from __future__ import annotations

import collections
import threading


class BufferPool:
    """Buffers by exact size, thread-safe; at most ``max_bytes`` are kept for reuse.

    A buffer handed out may hold old bytes: callers overwrite all of it. Giving a buffer back
    is optional (one never given back is simply freed); giving one back while anything still
    reads it is a bug, since the next ``take`` of that size overwrites it.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.kept = 0
        self._free: dict[int, collections.deque[bytearray]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self._lock:
            free = self._free.get(size)
            if free:
                self.kept -= size
                return free.pop()
        return bytearray(size)

    def give(self, buffer: bytearray) -> None:
        size = len(buffer)
        with self._lock:
            if self.kept + size <= self.max_bytes:
                self._free[size].append(buffer)
                self.kept += size
