"""Events between nodes: one Redis channel per node, published in batches.

The reactor hands records to ``NodeBus.send_*`` (cheap: a list append); once per reactor
iteration the gathered records go to the publisher thread, which routes a whole batch with one
Lua script: it looks each recipient up in the session directory and PUBLISHes one message per
node holding recipients (one PUBLISH per event costs ~23 µs of CPU across the processes; a
batch of 32 ~3.4 µs per event). A script call carries at most ``MAX_BATCH_RECORDS`` records and
``MAX_BATCH_BYTES`` bytes (Redis runs a script to the end before serving anyone else, so a
burst of file chunks is cut into several calls). One publisher thread, one channel per node and
Redis's FIFO delivery keep the order of events from one node to one user.

A subscriber thread per node reads its channel and hands each received batch to the reactor
(``call_soon_threadsafe``). When its connection breaks (Redis restarted) it reconnects with
backoff and calls ``on_reconnect`` so the node can register its live state again.

Pub/sub keeps nothing for a node that is not subscribed, so the script checks what PUBLISH
returns: a batch nobody received (the node is between a broken connection and its resubscribe)
goes to the node's backlog list instead (``node:NAME:backlog``, kept ``BACKLOG_TTL``, at most
``BACKLOG_MAX`` batches), and the subscriber, once subscribed again, delivers the backlog
before anything that arrives live (every batch in the backlog is older: it was pushed while
nobody listened). This costs nothing while the node listens. Records that cannot be published
at all (Redis down) are dropped and counted; chat messages are stored before their events, and
the node catches its users up from the database when Redis is back (``server/cluster/catchup.py``).

A record is ``kind (1 byte) | id (4 bytes) | length (4 bytes) | payload``, big-endian.
"""
from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from typing import Callable, Iterable

import redis

from .store import UNREACHABLE, Keys

log = logging.getLogger("server.cluster.bus")

RECORD = struct.Struct(">BII")
TO_USER = 0          # id: user id; payload: an encoded frame for the user's session
KICK = 1             # id: connection id; payload: the encoded KICKED frame
CALL = 2             # id: 0; payload: JSON {"op": ..., ...} for the node itself (room states)
USER_CALL = 3        # id: user id; payload: JSON {"op": ..., ...} for the node holding the user
FILE_CHUNK = 4       # id: recipient user id; payload: epoch (u32) + a FILE_CHUNK frame (cluster/files.py)

MAX_BATCH_RECORDS = 512
MAX_BATCH_BYTES = 1024 * 1024   # of records per script call (a larger single record goes alone)
RECONNECT_BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0)
BACKLOG_TTL_MS = 30_000      # a node not back within this is dead: its backlog goes (and it is reaped)
BACKLOG_MAX = 10_000         # batches kept for one node at most
SUBSCRIBE_TIMEOUT = 2.0      # seconds for Redis to confirm a subscription

_ROUTE = """
local batches, order = {}, {}
for i = 4, #ARGV, 2 do
  local target, node = ARGV[i], nil
  if string.sub(target, 1, 1) == '@' then
    node = string.sub(target, 2)
  else
    local holder = redis.call('HGET', KEYS[1], target)
    if holder then node = string.match(holder, '^([^|]*)') end
  end
  if node then
    local batch = batches[node]
    if not batch then batch = {}; batches[node] = batch; table.insert(order, node) end
    table.insert(batch, ARGV[i + 1])
  end
end
local backlogged = 0
for _, node in ipairs(order) do
  local data = table.concat(batches[node])
  if redis.call('PUBLISH', ARGV[1] .. node .. ':events', data) == 0 then
    local backlog = ARGV[1] .. node .. ':backlog'
    redis.call('RPUSH', backlog, data)
    redis.call('LTRIM', backlog, -tonumber(ARGV[2]), -1)
    redis.call('PEXPIRE', backlog, ARGV[3])
    backlogged = backlogged + 1
  end
end
return backlogged
"""

# The backlog of a node that just subscribed again, taken whole.
_TAKE_BACKLOG = """
local batches = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return batches
"""

Record = tuple[int, int, bytes]


def encode_record(kind: int, ident: int, payload: bytes) -> bytes:
    return RECORD.pack(kind, ident, len(payload)) + payload


def decode_records(data: bytes) -> list[Record]:
    records, offset, size = [], 0, RECORD.size
    view = memoryview(data)
    while offset < len(data):
        kind, ident, length = RECORD.unpack_from(data, offset)
        offset += size
        records.append((kind, ident, bytes(view[offset:offset + length])))
        offset += length
    return records


def split_batch(batch: list) -> list[list]:
    """``batch`` (target, record, target, record ...) cut in order into parts of at most
    ``MAX_BATCH_RECORDS`` records and ``MAX_BATCH_BYTES`` bytes of records (a part holds at
    least one record)."""
    parts: list[list] = []
    start, size = 0, 0
    for i in range(1, len(batch), 2):
        length = len(batch[i])
        if i > start + 1 and (size + length > MAX_BATCH_BYTES or (i - start) // 2 >= MAX_BATCH_RECORDS):
            parts.append(batch[start:i - 1])
            start, size = i - 1, 0
        size += length
    if start < len(batch):
        parts.append(batch[start:])
    return parts


class NodeBus:
    def __init__(self, client: redis.Redis, keys: Keys, node: str, *,
                 call_soon: Callable[..., None], call_soon_threadsafe: Callable[..., None],
                 deliver: Callable[[list[Record]], None], on_reconnect: Callable[[], None]) -> None:
        self.client = client
        self.keys = keys
        self.node = node
        self._call_soon = call_soon
        self._call_soon_threadsafe = call_soon_threadsafe
        self._deliver = deliver
        self._on_reconnect = on_reconnect
        self._route = client.register_script(_ROUTE)
        self._take_backlog = client.register_script(_TAKE_BACKLOG)
        self._pending: list[bytes | str] = []          # target, record, target, record ...
        self._outbox: queue.SimpleQueue[list | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._subscribed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.published_batches = 0
        self.published_records = 0
        self.received_batches = 0
        self.received_records = 0
        self.dropped_records = 0
        self.backlogged_batches = 0
        self.outages = 0
        self.lost_at = 0.0          # wall clock when the latest outage began

    # -- the reactor's side --------------------------------------------------------------------
    def send_to_users(self, user_ids: Iterable[int], kind: int, payload: bytes) -> None:
        """Reactor thread: route a record to each user's node (users without a session skipped)."""
        for user_id in user_ids:
            self._add(str(user_id), encode_record(kind, user_id, payload))

    def send_to_node(self, node: str, kind: int, ident: int, payload: bytes) -> None:
        """Reactor thread: a record for one node, in order with the users' records."""
        self._add("@" + node, encode_record(kind, ident, payload))

    def _add(self, target: str, record: bytes) -> None:
        if not self._pending:
            self._call_soon(self.flush)
        self._pending.append(target)
        self._pending.append(record)

    def flush(self) -> None:
        """Reactor thread, once per iteration: hand the gathered records to the publisher."""
        if self._pending:
            batch, self._pending = self._pending, []
            self._outbox.put(batch)

    # -- threads ---------------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> None:
        """Start the publisher and subscriber threads; returns once subscribed."""
        for target, name in ((self._publish_loop, "bus-publish"), (self._subscribe_loop, "bus-subscribe")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if not self._subscribed.wait(timeout):
            raise RuntimeError(f"cannot subscribe to {self.keys.channel(self.node)} within {timeout:g} s")

    def stop(self) -> None:
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(5)

    def _publish_loop(self) -> None:
        while True:
            batch = self._outbox.get()
            if batch is None:
                return
            stopping = False
            while len(batch) < 2 * MAX_BATCH_RECORDS:      # more batches waiting: fewer script calls
                try:
                    more = self._outbox.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.extend(more)
            for part in split_batch(batch):
                self._publish(part)
            if stopping:
                return

    def _publish(self, batch: list) -> None:
        records = len(batch) // 2
        try:
            backlogged = self._route(keys=[self.keys.directory],
                                     args=[self.keys.node_prefix, BACKLOG_MAX, BACKLOG_TTL_MS, *batch])
        except UNREACHABLE as exc:
            self.dropped_records += records
            log.warning("cannot publish %d events to other nodes (Redis unreachable: %s)", records, exc)
            return
        except redis.RedisError:
            self.dropped_records += records
            log.exception("publishing %d events to other nodes failed", records)
            return
        self.published_batches += 1
        self.published_records += records
        self.backlogged_batches += backlogged

    def _subscribe_loop(self) -> None:
        """One PubSub for the node's life: after a broken connection redis-py connects it again
        and subscribes again by itself (before it even raises), so batches already arriving on
        the new connection are never thrown away with a closed one."""
        channel = self.keys.channel(self.node)
        failures = 0
        pubsub = self.client.pubsub()
        try:
            while not self._stop.is_set():
                try:
                    held = self._subscribe(pubsub, channel)
                    if not self._subscribed.is_set():
                        self.client.delete(self.keys.backlog(self.node))   # a previous process's, stale
                    if failures:
                        missed = self._take_backlog(keys=[self.keys.backlog(self.node)])
                        for data in missed:
                            self._received(data)
                        log.warning("Redis is reachable again: resubscribed to %s (%d batches published meanwhile "
                                    "delivered from the backlog)", channel, len(missed))
                        self._call_soon_threadsafe(self._on_reconnect)
                    for data in held:
                        self._received(data)
                    failures = 0
                    self._subscribed.set()
                    while not self._stop.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None and message["type"] == "message":
                            self._received(message["data"])
                except UNREACHABLE as exc:
                    if not failures:
                        self.outages += 1
                        self.lost_at = time.time()
                        log.error("lost the connection to Redis (%s): events from other nodes stop until it is back",
                                  exc)
                    time.sleep(RECONNECT_BACKOFF[min(failures, len(RECONNECT_BACKOFF) - 1)])
                    failures += 1
        finally:
            try:
                pubsub.close()
            except Exception:     # closing a broken connection may fail again; nothing to do
                pass

    def _subscribe(self, pubsub: redis.client.PubSub, channel: str) -> list[bytes]:
        """Subscribe (again) and return once Redis confirmed it: from then on nothing published
        to the node goes to its backlog. Batches that came first (on a connection redis-py
        had subscribed again already) are returned, to be delivered after the backlog."""
        pubsub.subscribe(channel)
        held: list[bytes] = []
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is None:
                continue
            if message["type"] == "message":
                held.append(message["data"])
            elif message["type"] == "subscribe":
                return held
        raise redis.TimeoutError(f"no confirmation of the subscription to {channel}")

    def _received(self, data: bytes) -> None:
        records = decode_records(data)
        self.received_batches += 1
        self.received_records += len(records)
        self._call_soon_threadsafe(self._deliver, records)

    def status(self) -> dict[str, int]:
        return {"cluster_published_batches": self.published_batches,
                "cluster_published_events": self.published_records,
                "cluster_received_batches": self.received_batches,
                "cluster_received_events": self.received_records,
                "cluster_dropped_events": self.dropped_records,
                "cluster_backlogged_batches": self.backlogged_batches,
                "cluster_redis_outages": self.outages}
