"""In-flight file transfers: relay between online users, flow control, spool upload/download.

Flow control is end to end with a window of ``file_window`` bytes: a byte counts as in flight
from the moment it is forwarded (or read from the spool) until the recipient confirms it with
FILE_ACK (or, for an upload to the spool, until it is written). The server forwards a chunk
only if it starts exactly at the next expected offset and stays inside the window; anything
else (a stale chunk after a reconnect, a sender ignoring the window) is dropped without being
buffered. So per transfer the server never holds more than one window, whatever the sender
does, and the recipient's connection never has more than a window of file data queued ahead
of its chat and heartbeat replies.

Because a file's bytes at a given offset never change, "forward only the chunk at the
expected offset" is all the resume logic the relay needs: after either side reconnects the
expected offset is reset to what the recipient really has, the sender is told to continue
from there (FILE_PULL_EVENT), and duplicates are dropped on the way. After a server restart
the live transfers are taken up again from the database (``adopt``) and forward nothing until
the recipient has said what it holds.

Live chunks and acks are pure routing on the reactor; spool writes and reads run on the worker
pool, in order per transfer (``Strand``). The transfer table is shared by both and guarded by
one lock.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from common import frame as wire
from common import limits, messages
from common.errors import ApiError, ErrorCode
from common.chunks import chunk_frame, unpack_chunk
from common.packets import PacketType

from .spool import Spool, SpoolWriter, Strand, disk_error

if TYPE_CHECKING:
    from .app import Server

log = logging.getLogger("server.files")

IDLE_CHECK_INTERVAL = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Transfer:
    """One transfer the server is moving bytes for. States: ``offered`` and ``sending`` (live,
    sender to online recipient), ``uploading`` (sender to spool), ``downloading`` (spool to
    recipient)."""

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
    last_activity: float = field(default_factory=time.monotonic)
    strand: Strand | None = None
    writer: SpoolWriter | None = None
    reader: int = -1
    pumping: bool = False
    awaiting_recipient: bool = False   # live, taken up after a restart: the recipient's offset is unknown
    raw_id: bytes = b""

    def __post_init__(self) -> None:
        self.raw_id = bytes.fromhex(self.id)

    @property
    def spooled(self) -> bool:
        return self.state in ("uploading", "downloading")




@dataclass
class FileStats:
    chunks_relayed: int = 0
    bytes_relayed: int = 0
    chunks_dropped: int = 0
    bytes_spooled: int = 0
    peak_in_flight: int = 0


class TransferService:
    def __init__(self, server: "Server") -> None:
        self.server = server
        self.storage = server.storage
        self.router = server.router
        self.config = server.config
        self.window = server.config.file_window
        self.spool = Spool(server.config.spool_path, server.config.spool_quota, server.config.spool_quota_per_user)
        self.stats = FileStats()
        self._lock = threading.Lock()
        self._by_id: dict[str, Transfer] = {}
        self._by_raw: dict[bytes, Transfer] = {}

    # -- the table -------------------------------------------------------------------------------
    def add(self, transfer: Transfer) -> None:
        with self._lock:
            self._by_id[transfer.id] = transfer
            self._by_raw[transfer.raw_id] = transfer

    def adopt(self, transfer: Transfer) -> Transfer:
        """Take up a live transfer known only from the database (the server restarted): the one
        already in the table if another request got there first. A ``sending`` transfer waits
        for its recipient to say how many bytes it has (FILE_RESUME) before chunks flow."""
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

    def __len__(self) -> int:
        return len(self._by_id)

    def figures(self) -> dict[str, Any]:
        return {"file_transfers": len(self._by_id), "file_chunks_relayed": self.stats.chunks_relayed,
                "file_bytes_relayed": self.stats.bytes_relayed, "file_chunks_dropped": self.stats.chunks_dropped,
                "file_bytes_spooled": self.stats.bytes_spooled, "file_peak_in_flight": self.stats.peak_in_flight}

    # -- chunks and acks (reactor thread) ----------------------------------------------------------
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
            if (offset != transfer.expected or end > transfer.size or end - transfer.confirmed > self.window
                    or (transfer.state == "sending" and not self.router.is_online(transfer.recipient_id))):
                self.stats.chunks_dropped += 1
                return
            transfer.expected = end
            transfer.last_activity = time.monotonic()
            in_flight = end - transfer.confirmed
            if in_flight > self.stats.peak_in_flight:
                self.stats.peak_in_flight = in_flight
            live = transfer.state == "sending"
        if live:
            self.stats.chunks_relayed += 1
            self.stats.bytes_relayed += size
            self.router.to_user(transfer.recipient_id, wire.encode_frame(PacketType.FILE_CHUNK, body))
        else:
            assert transfer.strand is not None
            transfer.strand.submit(self._write_chunk, transfer, data)

    def on_ack(self, user_id: int, file_id: str, offset: int, complete: bool) -> bool:
        """A FILE_ACK from the recipient: it has ``offset`` bytes (and verified them if complete).
        False if the transfer is not in the table."""
        with self._lock:
            transfer = self._by_id.get(file_id)
            if transfer is None:
                return False
            if (transfer.awaiting_recipient and transfer.recipient_id == user_id and complete
                    and offset == transfer.size):
                # Verified before the restart, confirmed after it.
                transfer.awaiting_recipient = False
                transfer.expected = offset
            if (transfer.recipient_id != user_id or transfer.awaiting_recipient
                    or transfer.state not in ("sending", "downloading") or offset > transfer.expected):
                return True
            if offset > transfer.confirmed:
                transfer.confirmed = offset
            transfer.last_activity = time.monotonic()
            finished = complete and transfer.confirmed == transfer.size
            if finished:
                self._pop_locked(file_id)
            state = transfer.state
        if finished:
            self.run_job(self._delivered, transfer)
        elif state == "sending":
            self.router.event_to_user(transfer.sender_id, PacketType.FILE_ACK,
                                      messages.FileAck(transfer_id=file_id, offset=transfer.confirmed))
        else:
            self.kick_pump(transfer)
        return True

    def _delivered(self, transfer: Transfer) -> None:
        self.storage.set_file_state(transfer.id, "done")
        if transfer.strand is not None:
            transfer.strand.submit(self._release, transfer, True)
        log.info("file %s delivered to user %d (%d bytes)", transfer.id, transfer.recipient_id, transfer.size)
        self.router.event_to_user(transfer.sender_id, PacketType.FILE_DONE_EVENT,
                                  messages.FileDoneEvent(transfer_id=transfer.id, stage="delivered",
                                                         size=transfer.size))

    def begin_sending(self, transfer: Transfer) -> None:
        """The recipient accepted a live offer: chunks from offset 0 may flow."""
        with self._lock:
            transfer.state = "sending"
            transfer.expected = transfer.confirmed = 0
            transfer.last_activity = time.monotonic()

    # -- resume ---------------------------------------------------------------------------------
    def restart_from(self, transfer: Transfer, offset: int) -> None:
        """The recipient reconnected holding ``offset`` bytes: continue from there."""
        with self._lock:
            if offset > transfer.expected and not transfer.awaiting_recipient:
                raise ApiError(ErrorCode.BAD_OFFSET, f"the server sent only {transfer.expected} bytes",
                               expected=transfer.expected)
            transfer.awaiting_recipient = False
            transfer.expected = offset
            transfer.confirmed = offset
            transfer.last_activity = time.monotonic()
            state = transfer.state
        if state == "sending":
            self.router.event_to_user(transfer.sender_id, PacketType.FILE_PULL_EVENT,
                                      messages.FilePullEvent(transfer_id=transfer.id, offset=offset))
        elif state == "downloading":
            self.kick_pump(transfer)

    def sender_position(self, transfer: Transfer) -> tuple[int, int]:
        """Where a reconnected sender continues: (next offset the server expects, confirmed)."""
        with self._lock:
            transfer.last_activity = time.monotonic()
            return transfer.expected, transfer.confirmed

    # -- the spool upload (worker pool, in order per transfer) --------------------------------------
    def start_upload(self, transfer: Transfer, resume: bool) -> None:
        """Open the spool file (continuing a partial one after a restart) and register."""
        transfer.writer = self.spool.open_writer(transfer.id, resume=resume)
        transfer.strand = Strand(self.server.pool)
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

    # -- the spool download ----------------------------------------------------------------------
    def start_download(self, transfer: Transfer, offset: int) -> None:
        transfer.reader = self.spool.open_reader(transfer.id)
        transfer.strand = Strand(self.server.pool)
        transfer.expected = transfer.confirmed = offset
        self.add(transfer)
        self.kick_pump(transfer)

    def kick_pump(self, transfer: Transfer) -> None:
        with self._lock:
            if transfer.pumping or transfer.state != "downloading":
                return
            transfer.pumping = True
        assert transfer.strand is not None
        transfer.strand.submit(self._pump, transfer)

    def _pump(self, transfer: Transfer) -> None:
        """Read from the spool and send while the window has room and the recipient is online."""
        while True:
            with self._lock:
                size = min(limits.MAX_FILE_CHUNK, transfer.size - transfer.expected)
                if (transfer.state != "downloading" or size <= 0
                        or transfer.expected + size - transfer.confirmed > self.window
                        or not self.router.is_online(transfer.recipient_id)):
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
            self.router.to_user(transfer.recipient_id, chunk_frame(transfer.raw_id, offset, data))

    # -- endings ---------------------------------------------------------------------------------------
    def fail(self, transfer: Transfer, error: ApiError) -> None:
        """End a transfer the server cannot go on with; both sides are told (worker thread)."""
        if self.pop(transfer.id) is None:
            return
        self.storage.set_file_state(transfer.id, "failed")
        if transfer.strand is not None:
            transfer.strand.submit(self._release, transfer, True)
        log.info("file %s failed: %s", transfer.id, error.message)
        told = [transfer.sender_id] if transfer.state == "uploading" else [transfer.sender_id, transfer.recipient_id]
        self.router.event_to_users(told, PacketType.FILE_CANCEL_EVENT, messages.FileCancelEvent(
            transfer_id=transfer.id, by=0, reason=error.message, error=error.code.name))

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
        with self._lock:
            stale = [(t, self.idle_limit(t)) for t in self._by_id.values()
                     if now - t.last_activity > self.idle_limit(t)]
        for transfer, limit in stale:
            if transfer.state == "downloading":
                # The file stays spooled; it is offered again at the recipient's next login.
                self.run_job(self.discard, transfer, False)
            else:
                self.run_job(self.fail, transfer, ApiError(
                    ErrorCode.TIMEOUT, f"the transfer made no progress for {limit:g} s"))

    def sweep_spool(self) -> None:
        """Worker job: expire old spooled files, remove orphans."""
        for record in self.spool.sweep_expired(self.storage, now_ms()):
            self.discard_id(record.id)
            log.info("spooled file %s for user %d expired", record.id, record.recipient_id)
            self.router.event_to_user(record.sender_id, PacketType.FILE_CANCEL_EVENT, messages.FileCancelEvent(
                transfer_id=record.id, by=0, reason="the recipient did not fetch the file in time",
                error=ErrorCode.TIMEOUT.name))
        removed = self.spool.remove_orphans(self.storage.spool_file_ids())
        if removed:
            log.info("removed %d orphaned spool files", removed)

    def discard_id(self, file_id: str) -> None:
        transfer = self.get(file_id)
        if transfer is not None:
            self.discard(transfer, True)

    def close_all(self) -> None:
        """Server shutdown: release files; partial uploads stay for a resume after restart."""
        with self._lock:
            transfers = list(self._by_id.values())
        for transfer in transfers:
            if transfer.strand is not None:
                transfer.strand.submit(self._release, transfer, False)

    def run_job(self, fn: Callable[..., Any], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("file job %r failed", fn)
        try:
            self.server.pool.submit(run)
        except RuntimeError:
            log.info("server stopping: file job %r skipped", fn)
