"""File transfers whose sender and recipient are on two nodes: the node bus carries them.

``server.transfers`` keeps each half of a live transfer on the node of its user (the owner,
which applies the window, where the sender is; the delivery where the recipient is). This
link carries what the halves say to each other:

* **calls** (``begin``, ``ack``, ``restart``, ``where``, ``end``) as USER_CALL records to the
  node holding a user's session (the bus looks the user up in the session directory; a user
  with no session anywhere gets nothing, and its half is built again when it resumes);
* **chunks** as FILE_CHUNK records to the node holding the recipient's session: the encoded
  frame with the delivery's epoch in front, published in the bus's batches with the rest of
  the node's events. The owner forwards at most ``file_window`` bytes past the recipient's
  last ack, so that is all one transfer can have in Redis and in the receiving node's queues.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .bus import FILE_CHUNK

if TYPE_CHECKING:
    from .node import ClusterNode

EPOCH = struct.Struct(">I")
OPS = ("begin", "ack", "restart", "where", "end")
CALL_PREFIX = "file_"
MARKS = ".nodes"        # in the spool directory: one empty file per node that uses it


class ClusterFileLink:
    def __init__(self, cluster: "ClusterNode") -> None:
        self.cluster = cluster

    def listen(self, run_op: Callable[[str, dict[str, Any]], None],
               deliver_chunk: Callable[[int, int, memoryview], None]) -> None:
        """Hand the calls and chunks that arrive for this node's users to the transfer service
        (reactor thread); the service calls this when it is built."""
        for op in OPS:
            self.cluster.calls[CALL_PREFIX + op] = lambda body, op=op: run_op(op, body)

        def chunk(recipient_id: int, payload: bytes) -> None:
            if len(payload) > EPOCH.size:
                deliver_chunk(recipient_id, EPOCH.unpack_from(payload)[0], memoryview(payload)[EPOCH.size:])
        self.cluster.record_handlers[FILE_CHUNK] = chunk

    def unshared_spool(self, directory: Path) -> list[str]:
        """Worker: leave this node's mark in the spool directory and return the live nodes
        whose mark is not there (they do not share it: a file spooled through one would not
        be found by the other)."""
        marks = directory / MARKS
        marks.mkdir(parents=True, exist_ok=True)
        (marks / self.cluster.name).touch()
        return sorted(node for node, info in self.cluster.registry.nodes().items()
                      if info["alive"] and node != self.cluster.name and not (marks / node).exists())

    def call_user(self, user_id: int, op: str, args: dict[str, Any]) -> None:
        self.cluster.call_user(user_id, CALL_PREFIX + op, **args)

    def send_chunk(self, recipient_id: int, epoch: int, frame: bytes) -> None:
        self.cluster.bus.send_to_users((recipient_id,), FILE_CHUNK, EPOCH.pack(epoch) + frame)
