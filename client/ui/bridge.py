"""The one door between the client core's threads and Tk.

Tk may only be touched from the main thread. The kernel emits events on its network and task
threads; blocking calls (login, sending a message, creating a room) must not freeze the window.
Both go through a queue that the Tk thread drains with ``after()``:

* ``listener`` is added to the kernel and queues every event;
* ``call(fn, ...)`` runs a blocking function on a small worker pool and queues its outcome;
* ``post(fn, ...)`` queues a function to run on the Tk thread (from any thread).
"""
from __future__ import annotations

import logging
import queue
import threading
import tkinter as tk
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from client.events import Event, EventKind

log = logging.getLogger("client.ui")

Handler = Callable[[Event], None]


class KernelListener:
    """What a kernel gets as its listener: it holds only the queue (never a widget, which a
    kernel thread might otherwise free), and can be switched off when its session ends."""

    def __init__(self, events: queue.SimpleQueue) -> None:
        self._events = events
        self.active = True

    def __call__(self, event: Event) -> None:
        if self.active:
            self._events.put(("event", event))


class UiBridge:
    def __init__(self, root: tk.Misc, poll_ms: int = 15) -> None:
        self.root = root
        self.poll_ms = poll_ms
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._handlers: dict[EventKind, list[Handler]] = {}
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ui-work")
        self._tk_thread = threading.current_thread()
        self._closed = False
        self._after = root.after(poll_ms, self._drain)

    # -- any thread ----------------------------------------------------------------------------
    def kernel_listener(self) -> KernelListener:
        """A listener for ``kernel.add_listener``; it only enqueues."""
        return KernelListener(self._queue)

    def post(self, fn: Callable[..., Any], *args: Any) -> None:
        self._queue.put(("call", fn, args))

    def call(self, fn: Callable[..., Any], *args: Any,
             on_done: Callable[[Any], None] | None = None,
             on_error: Callable[[BaseException], None] | None = None) -> Future:
        """Run ``fn(*args)`` off the Tk thread; ``on_done(result)`` / ``on_error(exc)`` run on Tk."""
        future = self._pool.submit(fn, *args)
        # The callbacks often hold widgets and PhotoImages; the worker thread must never drop
        # the last reference to them (a PhotoImage freed off the Tk thread aborts Tcl), so the
        # done-callback hands them to the queue and keeps none itself.
        box = [on_done, on_error]

        def finished(fut: Future) -> None:
            done_cb, error_cb = box
            box.clear()
            if fut.cancelled():
                self._queue.put(("drop", done_cb, error_cb))
                return
            error = fut.exception()
            if error is not None:
                if error_cb is not None:
                    self.post(error_cb, error)
                else:
                    log.warning("background call %s failed: %s", getattr(fn, "__name__", fn), error)
            elif done_cb is not None:
                self.post(done_cb, fut.result())
            del done_cb, error_cb
        future.add_done_callback(finished)
        return future

    # -- Tk thread ------------------------------------------------------------------------------
    def subscribe(self, kind: EventKind, handler: Handler) -> Handler:
        """Call ``handler(event)`` on the Tk thread for every event of ``kind``."""
        self._handlers.setdefault(kind, []).append(handler)
        return handler

    def unsubscribe(self, kind: EventKind, handler: Handler) -> None:
        handlers = self._handlers.get(kind, [])
        if handler in handlers:
            handlers.remove(handler)

    def dispatch(self, event: Event) -> None:
        for handler in list(self._handlers.get(event.kind, ())):
            try:
                handler(event)
            except tk.TclError as exc:      # a window closed between the event and its handling
                log.debug("handler for %s hit a closed widget: %s", event.kind, exc)
            except Exception:
                log.exception("UI handler for %s failed", event.kind)

    def _drain(self, budget: int = 500) -> None:
        for _ in range(budget):
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item[0] == "event":
                self.dispatch(item[1])
            elif item[0] == "call":
                try:
                    item[1](*item[2])
                except tk.TclError as exc:
                    log.debug("posted call hit a closed widget: %s", exc)
                except Exception:
                    log.exception("posted UI call %s failed", getattr(item[1], "__name__", item[1]))
        if not self._closed:
            self._after = self.root.after(self.poll_ms, self._drain)

    def close(self) -> None:
        self._closed = True
        try:
            self.root.after_cancel(self._after)
        except tk.TclError:
            pass
        self._pool.shutdown(wait=False, cancel_futures=True)
