"""The reactor: one thread, one selector, every socket.

Other threads never touch a socket: they hand work back with ``call_soon_threadsafe``, which
queues a callable and writes one byte to a wake-up socket the selector watches.

The reactor owns the one receive buffer every connection reads into (it decodes what it read
before the next read), and writes are gathered: a connection that queued output during a loop
iteration asks for ``flush_soon`` and is flushed once, after the iteration's I/O events, calls
and timers, with everything it queued in one system call.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from typing import Any, Callable, Protocol

log = logging.getLogger(__name__)


class Selectable(Protocol):
    def on_readable(self) -> None: ...
    def on_writable(self) -> None: ...


class Timer:
    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Flushable(Protocol):
    def flush(self) -> None: ...


READ_BUFFER_SIZE = 256 * 1024


class Reactor:
    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self.read_buffer = bytearray(READ_BUFFER_SIZE)   # shared by every connection's reads
        self._flushes: list[Flushable] = []
        self._calls: collections.deque[tuple[Callable[..., Any], tuple]] = collections.deque()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self._running = False
        self.thread_id: int | None = None
        self.loop_count = 0
        self._selector.register(self._wake_r, selectors.EVENT_READ, self)

    # -- the wake-up fd is itself a Selectable ---------------------------------------------
    def on_readable(self) -> None:
        try:
            self._wake_r.recv(4096)      # at most a few bytes: a wake-up is sent only when none is pending
        except BlockingIOError:
            pass
        self._wake_pending = False

    def on_writable(self) -> None:  # never registered for writing
        pass

    # -- what the selector watches (reactor thread only) ------------------------------------
    def add_reader(self, fileobj: Any, target: Selectable) -> None:
        """Call ``target.on_readable()`` whenever ``fileobj`` has something to read."""
        self._selector.register(fileobj, selectors.EVENT_READ, target)

    def set_events(self, fileobj: Any, target: Selectable, events: int, previous: int) -> None:
        """Watch ``fileobj`` for ``events`` (``selectors.EVENT_READ | EVENT_WRITE``) instead of
        ``previous`` (0: not watched yet); 0 stops watching it."""
        if previous == 0:
            self._selector.register(fileobj, events, target)
        elif events == 0:
            self._selector.unregister(fileobj)
        else:
            self._selector.modify(fileobj, events, target)

    def remove(self, fileobj: Any) -> None:
        """Stop watching ``fileobj`` (nothing happens if it was not watched or is closed)."""
        try:
            self._selector.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    # -- scheduling -------------------------------------------------------------------------
    def in_reactor_thread(self) -> bool:
        return self.thread_id == threading.get_ident()

    def call_here_or_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """From any thread: run ``fn`` now if this is the reactor thread, otherwise as soon as
        the reactor wakes (in the order of the calls)."""
        if self.in_reactor_thread():
            fn(*args)
        else:
            self.call_soon_threadsafe(fn, *args)

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        self._calls.append((fn, args))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):
                pass

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """From the reactor thread: run after the current event, before the next select."""
        self._calls.append((fn, args))

    def flush_soon(self, target: Flushable) -> None:
        """Reactor thread only: call ``target.flush()`` once at the end of this iteration."""
        self._flushes.append(target)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Reactor thread only."""
        timer = Timer(time.monotonic() + max(0.0, delay), fn, args)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_every(self, interval: float, fn: Callable[[], Any]) -> None:
        """Run ``fn`` every ``interval`` seconds on the reactor thread, for the reactor's life."""
        def tick() -> None:
            try:
                fn()
            finally:
                self.call_later(interval, tick)
        self.call_later(interval, tick)

    # -- the loop ---------------------------------------------------------------------------
    def stop(self) -> None:
        self._running = False
        self.call_soon_threadsafe(lambda: None)

    def run(self) -> None:
        self.thread_id = threading.get_ident()
        self._running = True
        while self._running:
            self.run_once()

    def run_once(self) -> None:
        self.loop_count += 1
        timeout: float | None = 1.0
        if self._calls or self._flushes:
            timeout = 0
        elif self._timers:
            timeout = min(1.0, max(0.0, self._timers[0][0] - time.monotonic()))
        for key, mask in self._selector.select(timeout):
            target = key.data
            try:
                if mask & selectors.EVENT_READ:
                    target.on_readable()
                if mask & selectors.EVENT_WRITE and key.fileobj.fileno() != -1:
                    target.on_writable()
            except Exception:
                log.exception("unhandled error in an I/O callback for %r", target)
        self._run_calls()
        self._run_timers()
        self._run_flushes()

    def _run_calls(self) -> None:
        for _ in range(len(self._calls)):
            fn, args = self._calls.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("unhandled error in a reactor callback %r", fn)

    def _run_flushes(self) -> None:
        flushes, self._flushes = self._flushes, []
        for target in flushes:
            try:
                target.flush()
            except Exception:
                log.exception("unhandled error flushing %r", target)

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            try:
                timer.callback(*timer.args)
            except Exception:
                log.exception("unhandled error in a timer %r", timer.callback)

    def close(self) -> None:
        self._run_calls()
        self._run_flushes()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
