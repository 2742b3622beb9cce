"""In-flight file transfers: relay between online users, flow control, spool upload/download.

Flow control is end to end with a window of ``file_window`` bytes: a byte counts as in flight
from the moment it is forwarded (or read from the spool) until the recipient confirms it with
FILE_ACK (or, for an upload to the spool, until it is written). The server forwards a chunk
only if it starts exactly at the next expected offset and stays inside the window; anything
else (a stale chunk after a reconnect, a sender ignoring the window) is dropped without being
buffered. So per transfer the server never holds more than one window, whatever the sender
does, and the recipient's connection never has more than a window of file data queued ahead
of its chat and heartbeat replies.

**Two halves, each on the node of its user.** A transfer is held in memory by up to two
halves, each on the node (process) where the session of the user it serves is:

* the *owner* (``Transfer``), on the node of the user who feeds the bytes in: the sender's
  node for a live transfer or an upload to the spool, the recipient's node for a download from
  the spool. It applies the window and forwards, writes or reads the bytes;
* for a live transfer, the *delivery* (``Delivery``) on the recipient's node. It passes the
  owner's chunks to the recipient's connection in order, counts what it passed (so it knows
  where the recipient stands without asking it), and sends the recipient's acks to the owner.

With one process both halves are in this table and talk by direct calls. In a cluster the
halves of a transfer whose users are on two nodes talk through ``link``
(``server.cluster.files.ClusterFileLink``): small calls (``begin``, ``ack``, ``restart``,
``where``, ``end``) are run on the node holding a given user's session, and chunks travel
in the node bus's batches to the recipient's node. Either way the window bounds what is in
flight: the owner forwards nothing past ``confirmed + window``.

**Resume.** Because a file's bytes at a given offset never change, "forward only the chunk at
the expected offset" is all the resume logic the relay needs. A half is forgotten when its
user's session leaves the node (the user may come back on any node); the halves are built
again from the database when the user resumes. A recipient that resumes says how many bytes
it holds: its new delivery tells the owner to continue from there (``restart``, and the
sender gets FILE_PULL_EVENT). A sender that resumes where the owner is not takes the owner up
again and asks the recipient's node where the recipient stands (``where``), which answers
with ``restart``. Each ``restart`` carries a new *epoch*: the delivery passes on only chunks
of its current epoch, so chunks an earlier owner had in flight (on a node the sender left)
cannot interleave with the new owner's.

Live chunks and acks are pure routing on the reactor; spool writes and reads run on the worker
pool, in order per transfer (``Strand``). The tables are shared by both and guarded by one lock.
"""
from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from common import frame as wire
from common import limits, messages
from common.chunks import CHUNK_HEADER, FRAME_PREFIX, chunk_frame, unpack_chunk
from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from .clock import now_ms
from .spool import Spool, SpoolWriter, Strand, disk_error
from .storage.files import LIVE_STATES

if TYPE_CHECKING:
    from .config import ServerConfig
    from .connection import Connection
    from .reactor import Reactor
    from .router import Router
    from .sessions import Sessions
    from .storage import Storage
    from .storage.files import FileRecord

log = logging.getLogger("server.files")

IDLE_CHECK_INTERVAL = 5.0
RESYNC_AFTER = 5.0     # seconds a starved delivery waits before it pulls the sender again


def new_epoch() -> int:
    return secrets.randbits(32)


class FileLink(Protocol):
    """How the halves of a transfer on two nodes reach each other (a cluster's node bus)."""

    def listen(self, run_op: Callable[[str, dict[str, Any]], None],
               deliver_chunk: Callable[[int, int, memoryview], None]) -> None:
        """Hand what arrives for this node's users to the service (called when it is built)."""

    def unshared_spool(self, directory: Path) -> list[str]:
        """Worker: the live nodes that do not use ``directory`` as their spool."""

    def call_user(self, user_id: int, op: str, args: dict[str, Any]) -> None:
        """Reactor thread: run ``op`` on the node holding the user's session (none: dropped)."""

    def send_chunk(self, recipient_id: int, epoch: int, frame: bytes) -> None:
        """Reactor thread: carry a FILE_CHUNK frame to the node holding the recipient's session."""


@dataclass(eq=False)
class Transfer:
    """The owner half of a transfer. States: ``offered`` and ``sending`` (live, sender to online
    recipient), ``uploading`` (sender to spool), ``downloading`` (spool to recipient)."""

    id: str
    sender_id: int
    recipient_id: int
    sender_nickname: str
    name: str
    size: int
    sha256: str
    state: str
    expected: int = 0      # next offset to forward / write / read
    confirmed: int = 0     # confirmed by the recipient (or written to the spool)
    epoch: int = 0         # of the recipient's delivery (live)
    last_activity: float = field(default_factory=time.monotonic)
    strand: Strand | None = None
    writer: SpoolWriter | None = None
    reader: int = -1
    pumping: bool = False
    awaiting_recipient: bool = False   # live, taken up again: the recipient's offset is unknown
    raw_id: bytes = b""

    def __post_init__(self) -> None:
        self.raw_id = bytes.fromhex(self.id)

    @property
    def spooled(self) -> bool:
        return self.state in ("uploading", "downloading")

    @property
    def owner_id(self) -> int:
        """The user whose session this half follows."""
        return self.recipient_id if self.state == "downloading" else self.sender_id


@dataclass(eq=False)
class Delivery:
    """The recipient's half of a live transfer: what was passed to the recipient's connection."""

    id: str
    sender_id: int
    recipient_id: int
    size: int
    delivered: int         # bytes passed to the recipient's connection
    epoch: int
    acked: int = 0         # bytes the recipient has acknowledged
    last_activity: float = field(default_factory=time.monotonic)
    nudged: float = field(default_factory=time.monotonic)
    raw_id: bytes = b""

    def __post_init__(self) -> None:
        self.raw_id = bytes.fromhex(self.id)
        self.acked = self.delivered


@dataclass
class FileStats:
    chunks_relayed: int = 0
    bytes_relayed: int = 0
    chunks_dropped: int = 0
    bytes_spooled: int = 0
    peak_in_flight: int = 0
    chunks_across_nodes: int = 0


class TransferService:
    def __init__(self, config: "ServerConfig", storage: "Storage", router: "Router", sessions: "Sessions",
                 reactor: "Reactor", pool: Executor, link: FileLink | None) -> None:
        """``link``: the other nodes of a cluster (None for one process)."""
        self.config = config
        self.storage = storage
        self.router = router
        self.sessions = sessions
        self.reactor = reactor
        self.pool = pool
        self.link = link
        self.window = config.file_window
        self.spool = Spool(config.spool_path, config.spool_quota, config.spool_quota_per_user)
        self.stats = FileStats()
        self._lock = threading.Lock()
        self._by_id: dict[str, Transfer] = {}
        self._by_raw: dict[bytes, Transfer] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._deliveries_raw: dict[bytes, Delivery] = {}
        self._ops: dict[str, Callable[[dict[str, Any]], None]] = {
            "begin": self._op_begin, "ack": self._op_ack, "restart": self._op_restart,
            "where": self._op_where, "end": self._op_end}
        if link is not None:
            link.listen(self.run_op, self.deliver_chunk)

    # -- the table -------------------------------------------------------------------------------
    def add(self, transfer: Transfer) -> None:
        with self._lock:
            self._by_id[transfer.id] = transfer
            self._by_raw[transfer.raw_id] = transfer

    def adopt(self, transfer: Transfer) -> Transfer:
        """Take up a live transfer known only from the database (the server restarted, or its
        user came back on this node): the one already in the table if another request got
        there first. A ``sending`` transfer waits for the recipient's position (FILE_RESUME,
        or the answer to ``locate``) before chunks flow."""
        with self._lock:
            existing = self._by_id.get(transfer.id)
            if existing is not None:
                return existing
            transfer.awaiting_recipient = transfer.state == "sending"
            self._by_id[transfer.id] = transfer
            self._by_raw[transfer.raw_id] = transfer
            return transfer

    def get(self, file_id: str) -> Transfer | None:
        with self._lock:
            return self._by_id.get(file_id)

    def pop(self, file_id: str) -> Transfer | None:
        with self._lock:
            return self._pop_locked(file_id)

    def _pop_locked(self, file_id: str) -> Transfer | None:
        transfer = self._by_id.pop(file_id, None)
        if transfer is not None:
            self._by_raw.pop(transfer.raw_id, None)
        return transfer

    def _pop_delivery_locked(self, file_id: str) -> Delivery | None:
        delivery = self._deliveries.pop(file_id, None)
        if delivery is not None:
            self._deliveries_raw.pop(delivery.raw_id, None)
        return delivery

    def __len__(self) -> int:
        return len(self._by_id)

    def figures(self) -> dict[str, Any]:
        return {"file_transfers": len(self._by_id), "file_deliveries": len(self._deliveries),
                "file_chunks_relayed": self.stats.chunks_relayed, "file_bytes_relayed": self.stats.bytes_relayed,
                "file_chunks_dropped": self.stats.chunks_dropped, "file_bytes_spooled": self.stats.bytes_spooled,
                "file_peak_in_flight": self.stats.peak_in_flight,
                "file_chunks_across_nodes": self.stats.chunks_across_nodes}

    # -- reaching the node of a user -----------------------------------------------------------------
    def _on_reactor(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.reactor.in_reactor_thread():
            fn(*args)
        else:
            self.reactor.call_soon_threadsafe(fn, *args)

    def to_node_of(self, user_id: int, op: str, **args: Any) -> None:
        """Run ``op`` where the user's session is: here, on another node, or nowhere (offline:
        the user's half is built again when it resumes). Thread-safe."""
        self._on_reactor(self._route_op, user_id, op, args)

    def _route_op(self, user_id: int, op: str, args: dict[str, Any]) -> None:
        if self.sessions.get(user_id) is not None:
            self.run_op(op, args)
        elif self.link is not None:
            self.link.call_user(user_id, op, args)

    def run_op(self, op: str, args: dict[str, Any]) -> None:
        """Reactor thread: a call from the other half of a transfer (this node or another)."""
        handler = self._ops.get(op)
        if handler is None:
            log.error("unknown file call %r", op)
            return
        handler(args)

    # -- chunks (reactor thread) ------------------------------------------------------------------------
    def on_chunk(self, user_id: int, body: bytes) -> None:
        """A FILE_CHUNK from a sender: forward it, queue it for the spool, or drop it."""
        chunk = unpack_chunk(body)
        with self._lock:
            transfer = self._by_raw.get(chunk[0].raw_id) if chunk is not None else None
            if (chunk is None or transfer is None or transfer.sender_id != user_id
                    or transfer.state not in ("sending", "uploading") or transfer.awaiting_recipient):
                self.stats.chunks_dropped += 1
                return
            (_, offset), data = chunk
            size = len(data)
            end = offset + size
            if offset != transfer.expected or end > transfer.size or end - transfer.confirmed > self.window:
                self.stats.chunks_dropped += 1
                return
            transfer.expected = end
            transfer.last_activity = time.monotonic()
            in_flight = end - transfer.confirmed
            if in_flight > self.stats.peak_in_flight:
                self.stats.peak_in_flight = in_flight
            live = transfer.state == "sending"
            epoch = transfer.epoch
        if live:
            self.stats.chunks_relayed += 1
            self.stats.bytes_relayed += size
            frame = wire.encode_frame(PacketType.FILE_CHUNK, body)
            if self.sessions.get(transfer.recipient_id) is not None or self.link is None:
                self.deliver_chunk(transfer.recipient_id, epoch, frame)
            else:
                self.stats.chunks_across_nodes += 1
                self.link.send_chunk(transfer.recipient_id, epoch, frame)
        else:
            assert transfer.strand is not None
            transfer.strand.submit(self._write_chunk, transfer, data)

    def deliver_chunk(self, recipient_id: int, epoch: int, frame: bytes | memoryview) -> None:
        """Reactor thread: a live chunk for a recipient of this node (from this node's owner or
        another's): passed on if it is the next one of the delivery's epoch, else dropped."""
        if len(frame) <= FRAME_PREFIX:
            return
        raw_id, offset = CHUNK_HEADER.unpack_from(frame, wire.HEADER.size)
        end = offset + len(frame) - FRAME_PREFIX
        with self._lock:
            delivery = self._deliveries_raw.get(raw_id)
            if (delivery is None or delivery.recipient_id != recipient_id or delivery.epoch != epoch
                    or offset != delivery.delivered or end > delivery.size):
                self.stats.chunks_dropped += 1
                return
            delivery.delivered = end
            delivery.last_activity = time.monotonic()
        conn = self.sessions.get(recipient_id)
        if conn is not None and not conn.closed:
            conn.send(frame)

    # -- acks (reactor thread) ------------------------------------------------------------------------
    def on_ack(self, user_id: int, file_id: str, offset: int, complete: bool) -> None:
        """A FILE_ACK from a recipient: it has ``offset`` bytes (and verified them if complete)."""
        with self._lock:
            transfer = self._by_id.get(file_id)
            if transfer is not None and transfer.state == "downloading":
                if transfer.recipient_id != user_id or offset > transfer.expected:
                    return
                if offset > transfer.confirmed:
                    transfer.confirmed = offset
                transfer.last_activity = time.monotonic()
                finished = complete and transfer.confirmed == transfer.size
                if finished:
                    self._pop_locked(file_id)
            else:
                transfer = None
                delivery = self._deliveries.get(file_id)
                if delivery is not None and delivery.recipient_id == user_id and not complete:
                    delivery.last_activity = time.monotonic()
                    delivery.acked = max(delivery.acked, min(offset, delivery.delivered))
                    sender_id, epoch = delivery.sender_id, delivery.epoch
                else:
                    delivery = None
        if transfer is not None:
            if finished:
                self.run_job(self._delivered, transfer)
            else:
                self.kick_pump(transfer)
        elif delivery is not None:
            self.to_node_of(sender_id, "ack", file_id=file_id, offset=offset, epoch=epoch)
        elif complete:
            self.run_job(self._confirm, user_id, file_id, offset)

    def _op_ack(self, args: dict[str, Any]) -> None:
        """The owner's side of a recipient's ack: the window moves on, the sender is told."""
        file_id, offset = args["file_id"], args["offset"]
        with self._lock:
            transfer = self._by_id.get(file_id)
            if (transfer is None or transfer.state != "sending" or transfer.awaiting_recipient
                    or transfer.epoch != args["epoch"] or offset > transfer.expected):
                return
            if offset > transfer.confirmed:
                transfer.confirmed = offset
            transfer.last_activity = time.monotonic()
            confirmed, sender_id = transfer.confirmed, transfer.sender_id
        self.router.event_to_user(sender_id, PacketType.FILE_ACK, messages.FileAck(transfer_id=file_id,
                                                                                  offset=confirmed))

    def _confirm(self, user_id: int, file_id: str, offset: int) -> None:
        """Worker: the recipient's final ack (it verified the file) where this node holds no
        download of it: a live transfer (taken where the recipient is, whatever became of the
        owner), or a file from the spool whose recipient came to this node (or this node
        restarted) before it could say so. A recipient whose delivery is here cannot claim
        more than was passed to it."""
        record = self.storage.get_file(file_id)
        if (record is None or record.recipient_id != user_id or record.state not in ("sending", "spooled")
                or offset != record.size):
            return
        with self._lock:
            delivery = self._deliveries.get(file_id)
            if delivery is not None and delivery.delivered != record.size:
                return
        if not self.storage.set_file_state(file_id, "done", only_from=(record.state,)):
            return
        self.forget(file_id, remove_data=True)
        if record.spooled:
            self.spool.remove(file_id)
        self.to_node_of(record.sender_id, "end", file_id=file_id)
        log.info("file %s delivered to user %d (%d bytes)", file_id, record.recipient_id, record.size)
        self.router.event_to_user(record.sender_id, PacketType.FILE_DONE_EVENT,
                                  messages.FileDoneEvent(transfer_id=file_id, stage="delivered", size=record.size))

    def _delivered(self, transfer: Transfer) -> None:
        """Worker: a download from the spool was confirmed whole."""
        self.storage.set_file_state(transfer.id, "done")
        if transfer.strand is not None:
            transfer.strand.submit(self._release, transfer, True)
        log.info("file %s delivered to user %d (%d bytes)", transfer.id, transfer.recipient_id, transfer.size)
        self.router.event_to_user(transfer.sender_id, PacketType.FILE_DONE_EVENT,
                                  messages.FileDoneEvent(transfer_id=transfer.id, stage="delivered",
                                                         size=transfer.size))

    # -- accepting and resuming a live transfer ------------------------------------------------------
    def expect(self, record: "FileRecord", offset: int) -> int:
        """The recipient (on this node) accepted or resumed at ``offset``: its delivery half
        starts there, with a new epoch, which is returned."""
        delivery = Delivery(record.id, record.sender_id, record.recipient_id, record.size, offset, new_epoch())
        with self._lock:
            self._pop_delivery_locked(record.id)
            self._deliveries[record.id] = delivery
            self._deliveries_raw[delivery.raw_id] = delivery
        return delivery.epoch

    def accepted(self, record: "FileRecord") -> None:
        """The recipient accepted a live offer (the database says ``sending``): its delivery
        starts here, and the owner, on the sender's node, lets chunks flow from 0."""
        epoch = self.expect(record, 0)
        self.to_node_of(record.sender_id, "begin", file_id=record.id, epoch=epoch)

    def _op_begin(self, args: dict[str, Any]) -> None:
        file_id, epoch = args["file_id"], args["epoch"]
        with self._lock:
            transfer = self._by_id.get(file_id)
            if transfer is not None and transfer.state == "offered":
                transfer.state = "sending"
                transfer.expected = transfer.confirmed = 0
                transfer.epoch = epoch
                transfer.last_activity = time.monotonic()
                return
        if transfer is None:
            self.run_job(self._begin_here, file_id, epoch)
        elif transfer.state == "sending" and transfer.awaiting_recipient:
            self._restart(transfer, 0, epoch)

    def _begin_here(self, file_id: str, epoch: int) -> None:
        """Worker: the offer was accepted while the sender's owner half was not in the table
        (the sender has just come back to this node): take it up and pull the sender from 0."""
        record = self.storage.get_file(file_id)
        if record is None or record.state != "sending" or self.sessions.get(record.sender_id) is None:
            return
        self.adopt(self.transfer_of(record, "sending"))
        self._on_reactor(self._op_begin, {"file_id": file_id, "epoch": epoch})

    def resume_recipient(self, record: "FileRecord", offset: int) -> None:
        """A recipient (on this node) resumed a live transfer holding ``offset`` bytes."""
        transfer = self.get(record.id)
        if transfer is not None and transfer.state == "sending":
            with self._lock:
                if offset > transfer.expected and not transfer.awaiting_recipient:
                    raise ApiError(ErrorCode.BAD_OFFSET, f"the server sent only {transfer.expected} bytes",
                                   expected=transfer.expected)
            self._restart(transfer, offset, self.expect(record, offset))
        else:
            epoch = self.expect(record, offset)
            self.to_node_of(record.sender_id, "restart", file_id=record.id, offset=offset, epoch=epoch)

    def _op_restart(self, args: dict[str, Any]) -> None:
        transfer = self.get(args["file_id"])
        if transfer is not None and transfer.state in ("offered", "sending"):
            self._restart(transfer, args["offset"], args["epoch"])

    def _restart(self, transfer: Transfer, offset: int, epoch: int) -> None:
        """Continue a live transfer from the recipient's ``offset``: the sender is pulled there.
        (An owner still ``offered`` was taken up just before the recipient accepted.)"""
        with self._lock:
            transfer.state = "sending"
            transfer.awaiting_recipient = False
            transfer.expected = transfer.confirmed = offset
            transfer.epoch = epoch
            transfer.last_activity = time.monotonic()
        self.router.event_to_user(transfer.sender_id, PacketType.FILE_PULL_EVENT,
                                  messages.FilePullEvent(transfer_id=transfer.id, offset=offset))

    def locate(self, transfer: Transfer) -> None:
        """The owner was taken up without knowing the recipient's position: ask the recipient's
        node (it answers with ``restart`` if the recipient's delivery is there)."""
        self.to_node_of(transfer.recipient_id, "where", file_id=transfer.id)

    def _op_where(self, args: dict[str, Any]) -> None:
        with self._lock:
            delivery = self._deliveries.get(args["file_id"])
            if delivery is None:
                return
            delivery.last_activity = time.monotonic()
        self._pull_to(delivery)

    def _pull_to(self, delivery: Delivery) -> None:
        """Have the owner, wherever it is, continue from what this delivery passed on, in a
        new epoch (chunks an earlier owner still has in flight are stale)."""
        with self._lock:
            delivery.epoch = new_epoch()
            delivery.nudged = time.monotonic()
            sender_id, offset, epoch = delivery.sender_id, delivery.delivered, delivery.epoch
        self.to_node_of(sender_id, "restart", file_id=delivery.id, offset=offset, epoch=epoch)

    def sender_position(self, transfer: Transfer) -> tuple[int, int]:
        """Where a reconnected sender continues: (next offset the server expects, confirmed)."""
        with self._lock:
            transfer.last_activity = time.monotonic()
            return transfer.expected, transfer.confirmed

    def transfer_of(self, record: "FileRecord", state: str) -> Transfer:
        user = self.storage.get_user(record.sender_id)
        return Transfer(record.id, record.sender_id, record.recipient_id, user.nickname if user else "",
                        record.name, record.size, record.sha256, state)

    # -- the spool upload (worker pool, in order per transfer) --------------------------------------
    def start_upload(self, transfer: Transfer, resume: bool) -> None:
        """Open the spool file (continuing a partial one: after a restart, or written by
        another node before the sender came here) and register."""
        transfer.writer = self.spool.open_writer(transfer.id, resume=resume)
        transfer.strand = Strand(self.pool)
        transfer.expected = transfer.confirmed = transfer.writer.size
        self.add(transfer)
        if transfer.writer.size == transfer.size:
            transfer.strand.submit(self._finish_upload, transfer)

    def _write_chunk(self, transfer: Transfer, data: memoryview) -> None:
        writer = transfer.writer
        if transfer.state != "uploading" or writer is None or writer.fd < 0:
            return
        try:
            writer.write(data)
        except OSError as exc:
            log.warning("spool write for file %s failed: %s", transfer.id, exc)
            self.fail(transfer, disk_error(exc))
            return
        with self._lock:
            transfer.confirmed = writer.size
        self.stats.bytes_spooled += len(data)
        self.router.event_to_user(transfer.sender_id, PacketType.FILE_ACK,
                                  messages.FileAck(transfer_id=transfer.id, offset=writer.size))
        if writer.size == transfer.size:
            self._finish_upload(transfer)

    def _finish_upload(self, transfer: Transfer) -> None:
        assert transfer.writer is not None
        try:
            digest = transfer.writer.finish()
            if digest != transfer.sha256:
                raise ApiError(ErrorCode.CHECKSUM_MISMATCH, "the uploaded file does not match its SHA-256")
            self.spool.commit(transfer.id)
        except OSError as exc:
            self.fail(transfer, disk_error(exc))
            return
        except ApiError as exc:
            self.fail(transfer, exc)
            return
        if self.pop(transfer.id) is None or not self.storage.set_file_state(
                transfer.id, "spooled", only_from=("uploading",), spooled_bytes=transfer.size):
            self.spool.remove(transfer.id)   # cancelled while the last bytes were written
            return
        log.info("file %s spooled for offline user %d (%d bytes)", transfer.id, transfer.recipient_id,
                 transfer.size)
        self.router.event_to_user(transfer.sender_id, PacketType.FILE_DONE_EVENT,
                                  messages.FileDoneEvent(transfer_id=transfer.id, stage="spooled", size=transfer.size))
        self.router.event_to_user(transfer.recipient_id, PacketType.FILE_OFFER_EVENT, messages.Offer(
            transfer_id=transfer.id, from_id=transfer.sender_id, from_nickname=transfer.sender_nickname,
            name=transfer.name, size=transfer.size, sha256=transfer.sha256, spooled=True))

    # -- the spool download (from the node where the recipient is) -------------------------------------
    def start_download(self, transfer: Transfer, offset: int) -> None:
        transfer.reader = self.spool.open_reader(transfer.id)
        transfer.strand = Strand(self.pool)
        transfer.expected = transfer.confirmed = offset
        self.add(transfer)
        self.kick_pump(transfer)

    def restart_download(self, transfer: Transfer, offset: int) -> None:
        """The recipient reconnected to this node holding ``offset`` bytes of a download."""
        with self._lock:
            if offset > transfer.expected:
                raise ApiError(ErrorCode.BAD_OFFSET, f"the server sent only {transfer.expected} bytes",
                               expected=transfer.expected)
            transfer.expected = transfer.confirmed = offset
            transfer.last_activity = time.monotonic()
        self.kick_pump(transfer)

    def kick_pump(self, transfer: Transfer) -> None:
        with self._lock:
            if transfer.pumping or transfer.state != "downloading":
                return
            transfer.pumping = True
        assert transfer.strand is not None
        transfer.strand.submit(self._pump, transfer)

    def _pump(self, transfer: Transfer) -> None:
        """Read from the spool and send while the window has room and the recipient is here."""
        while True:
            with self._lock:
                size = min(limits.MAX_FILE_CHUNK, transfer.size - transfer.expected)
                if (transfer.state != "downloading" or size <= 0
                        or transfer.expected + size - transfer.confirmed > self.window
                        or self.sessions.get(transfer.recipient_id) is None):
                    transfer.pumping = False
                    return
                offset = transfer.expected
                transfer.expected += size
            try:
                data = os.pread(transfer.reader, size, offset)
            except OSError as exc:
                log.warning("spool read for file %s failed: %s", transfer.id, exc)
                data = b""
            if len(data) != size:
                self.fail(transfer, ApiError(ErrorCode.INTERNAL, "the server could not read the spooled file"))
                return
            self.reactor.call_soon_threadsafe(self._send_here, transfer.recipient_id,
                                              chunk_frame(transfer.raw_id, offset, data))

    def _send_here(self, user_id: int, frame: bytes) -> None:
        conn = self.sessions.get(user_id)
        if conn is not None and not conn.closed:
            conn.send(frame)

    # -- endings ---------------------------------------------------------------------------------------
    def fail(self, transfer: Transfer, error: ApiError) -> None:
        """End a transfer the server cannot go on with; both sides are told (worker thread)."""
        self.fail_id(transfer.id, transfer.sender_id, transfer.recipient_id, error,
                     tell_recipient=transfer.state != "uploading")

    def fail_id(self, file_id: str, sender_id: int, recipient_id: int, error: ApiError,
                tell_recipient: bool = True) -> None:
        """Worker: mark the transfer failed, unless it has ended already (on this node or
        another), forget its halves everywhere and tell both users."""
        self.forget(file_id, remove_data=True)
        if not self.storage.set_file_state(file_id, "failed"):
            return
        for user_id in (sender_id, recipient_id):
            self.to_node_of(user_id, "end", file_id=file_id)
        log.info("file %s failed: %s", file_id, error.message)
        told = [sender_id, recipient_id] if tell_recipient else [sender_id]
        self.router.event_to_users(told, PacketType.FILE_CANCEL_EVENT, messages.FileCancelEvent(
            transfer_id=file_id, by=0, reason=error.message, error=error.code.name))

    def ended(self, record: "FileRecord") -> None:
        """The transfer ended (the caller updated the database): forget it here and on the
        users' nodes, and delete its spooled data."""
        self.forget(record.id, remove_data=True)
        if record.spooled:
            self.spool.remove(record.id)
        for user_id in (record.sender_id, record.recipient_id):
            self.to_node_of(user_id, "end", file_id=record.id)

    def _op_end(self, args: dict[str, Any]) -> None:
        self.forget(args["file_id"], remove_data=False)

    def forget(self, file_id: str, remove_data: bool = False) -> None:
        """Drop this node's halves of a transfer (thread-safe)."""
        with self._lock:
            transfer = self._pop_locked(file_id)
            self._pop_delivery_locked(file_id)
        if transfer is not None:
            self.discard(transfer, remove_data)

    def discard(self, transfer: Transfer, remove_data: bool) -> None:
        """Forget an ended transfer's in-memory part (the caller updated the database)."""
        self.pop(transfer.id)
        if transfer.strand is not None:
            transfer.strand.submit(self._release, transfer, remove_data)
        elif remove_data and transfer.spooled:
            self.spool.remove(transfer.id)

    def _release(self, transfer: Transfer, remove_data: bool) -> None:
        with self._lock:
            transfer.state = "ended"
        if transfer.writer is not None:
            transfer.writer.close()
        if transfer.reader >= 0:
            os.close(transfer.reader)
            transfer.reader = -1
        if remove_data:
            self.spool.remove(transfer.id)

    def session_ended(self, conn: "Connection", reason: str, went_offline: bool) -> None:
        """Reactor hook: the user's session left this node (offline, or moved to another node).
        Its halves here are forgotten, not ended: they are built again where it resumes."""
        user_id = conn.user_id
        if user_id is None or self.sessions.get(user_id) is not None:
            return
        with self._lock:
            owned = [t for t in self._by_id.values() if t.owner_id == user_id]
            for transfer in owned:
                self._pop_locked(transfer.id)
            for delivery in [d for d in self._deliveries.values() if d.recipient_id == user_id]:
                self._pop_delivery_locked(delivery.id)
        for transfer in owned:
            self._let_go(transfer)

    def _let_go(self, transfer: Transfer) -> None:
        """Release a transfer's files but keep its data: a partial upload stays for the next
        writer (after a restart, or on the node where the sender comes back), which may open
        it at once (the writer is closed here, between two chunks, not after the queued ones)."""
        with self._lock:
            transfer.state = "ended"
        if transfer.writer is not None:
            transfer.writer.close()
        if transfer.strand is not None:
            transfer.strand.submit(self._release, transfer, False)

    # -- timers ------------------------------------------------------------------------------------
    def idle_limit(self, transfer: Transfer) -> float:
        """Seconds a transfer may make no progress. An upload to the spool holds a reservation
        of its whole size, which other users cannot have meanwhile, so it gets less time."""
        if transfer.state == "uploading":
            return min(self.config.file_idle_timeout, self.config.spool_upload_idle_timeout)
        return self.config.file_idle_timeout

    def check_idle(self) -> None:
        """Reactor timer: end transfers that made no progress for their ``idle_limit``."""
        now = time.monotonic()
        limit = self.config.file_idle_timeout
        with self._lock:
            stale = [(t, self.idle_limit(t)) for t in self._by_id.values()
                     if now - t.last_activity > self.idle_limit(t)]
            waiting = [d for d in self._deliveries.values() if now - d.last_activity > limit]
            starved = [d for d in self._deliveries.values() if d not in waiting and self._starved(d, now)]
        for delivery in starved:
            self._pull_to(delivery)
        for transfer, idle in stale:
            if transfer.state == "downloading":
                # The file stays spooled; it is offered again at the recipient's next login.
                self.run_job(self.discard, transfer, False)
            else:
                self.run_job(self.fail, transfer, ApiError(
                    ErrorCode.TIMEOUT, f"the transfer made no progress for {idle:g} s"))
        for delivery in waiting:
            self.run_job(self.fail_id, delivery.id, delivery.sender_id, delivery.recipient_id, ApiError(
                ErrorCode.TIMEOUT, f"the transfer made no progress for {limit:g} s"))

    def _starved(self, delivery: Delivery, now: float) -> bool:
        """The recipient waits for chunks that do not come although it acknowledged what it
        got (less than an ack step is unacknowledged): the chunks or the acks were lost
        between the nodes (Redis restarted or cut a subscriber off), or the owner went away
        without its sender resuming. Nudged again at most every ``RESYNC_AFTER`` seconds."""
        return (delivery.delivered < delivery.size and delivery.delivered - delivery.acked <= self.window // 2
                and now - max(delivery.last_activity, delivery.nudged) > RESYNC_AFTER)

    def sweep_spool(self) -> None:
        """Worker job: expire old spooled files and live transfers, remove orphans."""
        for record in self.spool.sweep_expired(self.storage, now_ms()):
            self.forget(record.id, remove_data=True)
            log.info("spooled file %s for user %d expired", record.id, record.recipient_id)
            self.router.event_to_user(record.sender_id, PacketType.FILE_CANCEL_EVENT, messages.FileCancelEvent(
                transfer_id=record.id, by=0, reason="the recipient did not fetch the file in time",
                error=ErrorCode.TIMEOUT.name))
        for record in self.storage.expired_live_files(now_ms()):
            if not self.storage.set_file_state(record.id, "expired", only_from=LIVE_STATES):
                continue
            self.ended(record)
            log.info("live file %s for user %d expired unfinished", record.id, record.recipient_id)
            self.router.event_to_users((record.sender_id, record.recipient_id), PacketType.FILE_CANCEL_EVENT,
                                       messages.FileCancelEvent(transfer_id=record.id, by=0,
                                                                reason="the transfer was not finished in time",
                                                                error=ErrorCode.TIMEOUT.name))
        removed = self.spool.remove_orphans(self.storage.spool_file_ids())
        if removed:
            log.info("removed %d orphaned spool files", removed)

    def close_all(self) -> None:
        """Server shutdown: release files; partial uploads stay for a resume after restart."""
        with self._lock:
            transfers = list(self._by_id.values())
        for transfer in transfers:
            self._let_go(transfer)

    def run_job(self, fn: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("file job %r failed", fn)
        try:
            self.pool.submit(run)
        except RuntimeError:
            log.info("server stopping: file job %r skipped", fn)
