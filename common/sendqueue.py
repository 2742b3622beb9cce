"""Bytes queued for one socket, written with one system call for many frames.

Small frames are copied into a shared chunk as they are queued, so a queue of thousands of
tiny replies costs its bytes and a few chunk objects, not a Python object per frame (a
14-byte reply held alone costs ~250 bytes of objects); large frames (media, file chunks) are
queued as they are, without a copy, so one encoded media frame can sit in many receivers'
queues (their ~100 bytes of objects are under a tenth of their size). ``write`` hands
everything queued (up to ``IOV_MAX`` buffers) to one ``sendmsg`` (writev) call. TLS sockets
have no ``sendmsg``: they get one ``send`` per queued buffer, and since small frames are
already coalesced that is one call per chunk, not per frame.
"""
from __future__ import annotations

import collections
import socket
import ssl
from typing import Callable, Union

IOV_MAX = 1024                 # buffers per sendmsg (Linux's UIO_MAXIOV)
COALESCE_BELOW = 1024          # frames shorter than this are copied into the current chunk
CHUNK_SIZE = 64 * 1024         # a chunk takes copies until it holds this much

Buffer = Union[bytes, bytearray, memoryview]
_RETRY = (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError)


class SendQueue:
    """Not thread-safe: the owner serializes ``append`` and ``write``.

    ``recycle`` is called with each buffer queued with ``append(..., recycle=True)`` once all
    of it is written (a pool's ``give``)."""

    def __init__(self, recycle: Callable[[bytearray], None] | None = None) -> None:
        self._items: collections.deque[Buffer] = collections.deque()
        self._recycle = recycle
        self._recycled: set[int] = set()     # ids of queued buffers to hand to ``recycle``
        self._open_chunk: bytearray | None = None   # the last item, while it takes copies
        self.size = 0                        # bytes queued

    def __bool__(self) -> bool:
        return bool(self._items)

    def __len__(self) -> int:
        """Buffers queued (not bytes: see ``size``)."""
        return len(self._items)

    def append(self, data: Buffer, recycle: bool = False) -> None:
        length = len(data)
        if not length:
            return
        self.size += length
        chunk = self._open_chunk
        if length < COALESCE_BELOW and not recycle:
            if chunk is not None:
                chunk += data
                if len(chunk) >= CHUNK_SIZE:
                    self._open_chunk = None
                return
            chunk = self._open_chunk = bytearray(data)
            self._items.append(chunk)
            return
        self._open_chunk = None
        self._items.append(data)
        if recycle:
            self._recycled.add(id(data))

    def clear(self) -> None:
        self._items.clear()
        self._recycled.clear()
        self._open_chunk = None
        self.size = 0

    def write(self, sock: socket.socket) -> int:
        """Write as much as the socket takes now; returns the bytes written. Socket errors other
        than "try again later" propagate (the connection is then lost anyway)."""
        written = 0
        items = self._items
        tls = isinstance(sock, ssl.SSLSocket)
        while items:
            try:
                if tls or len(items) == 1:
                    sent = sock.send(items[0])
                else:
                    sent = sock.sendmsg(list(items) if len(items) <= IOV_MAX
                                        else [items[i] for i in range(IOV_MAX)])
            except _RETRY:
                break
            written += sent
            if not self._consume(sent):
                break
        self.size -= written
        return written

    def _consume(self, sent: int) -> bool:
        """Drop ``sent`` bytes from the front; False if a buffer was written only in part."""
        items = self._items
        while sent:
            head = items[0]
            length = len(head)
            if sent < length:
                if head is self._open_chunk:
                    del head[:sent]
                else:
                    items[0] = memoryview(head)[sent:]
                    if id(head) in self._recycled:
                        self._recycled.discard(id(head))
                        self._recycled.add(id(items[0]))
                return False
            sent -= length
            items.popleft()
            if head is self._open_chunk:
                self._open_chunk = None
            if self._recycled and id(head) in self._recycled:
                self._recycled.discard(id(head))
                if self._recycle is not None:
                    self._recycle(head.obj if isinstance(head, memoryview) else head)
        return True

