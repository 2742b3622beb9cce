"""The cyclic garbage collector, tuned for a long-running server.

By default CPython runs a young-generation collection every 700 net container allocations:
on the chat path (a dict per JSON body, a frame tuple per packet, a closure per job) that is a
collection every few dozen messages, and each one also walks whatever survived into the
young generation since. The server's objects are long-lived (connections, sessions, rooms) or
die by reference counting; cycles are rare. So: collect once after start-up and freeze what
is there (modules, configuration, the schema: never scanned again), and collect the young
generation every ``GEN0`` allocations instead of 700.
"""
from __future__ import annotations

import gc

GEN0 = 50_000     # net container allocations between young collections (CPython default 700)
GEN1 = 20         # young collections between middle ones (default 10)
GEN2 = 20         # middle collections between full ones (default 10)


def tune_for_server() -> None:
    """Call once, after start-up and before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
