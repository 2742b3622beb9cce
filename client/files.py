"""File transfer, client side (``kernel.files``): offer and send, accept and receive, resume.

Sending: the file is hashed, offered (FILE_OFFER), and once accepted (or at once when the
server spools it for an offline friend) a sender thread streams FILE_CHUNKs read with
``pread``. It keeps at most a window of unconfirmed bytes and queues a chunk only while the
link's output queue is short, so a heartbeat or a chat message never waits behind more than
a couple of chunks.

Receiving: chunks are handed from the network thread to a writer thread that writes them to
a temporary file beside the destination, then hashes them (on the same thread: handing each
chunk to a hashing thread cost more CPU than it saved) and confirms every half window with
FILE_ACK.
At the end the SHA-256 is compared, the data fsynced, and only then the file renamed into
place; a mismatch or a full disk removes the partial file and tells the sender.

Resume: after the kernel reconnects and resumes the session, a session hook sends FILE_RESUME
for every unfinished transfer (the recipient says how many bytes it has) and asks for the
offers that arrived while offline (FILE_PENDING).

A file is also a message in the conversation: the server stores one with the offer, which the
offer's reply and event carry (``chat_sent`` / ``chat_message`` with a ``file`` field).

Events (``kernel.emit``): ``file_offer``, ``file_offered``, ``file_accepted``,
``file_declined``, ``file_progress`` (transfer_id, direction, done, total, rate bytes/s,
eta s), ``file_spooled``, ``file_done``, ``file_cancelled``, ``file_failed``.
"""
from __future__ import annotations

import collections
import errno
import hashlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future
from enum import StrEnum
from pathlib import Path
from typing import Any, Callable

from common import limits
from common.errors import ApiError, ErrorCode
from common.filenames import sanitize_filename
from common.chunks import FRAME_PREFIX, pack_chunk_prefix_into, unpack_chunk
from common.messages import TransferState
from common.packets import PacketType

from .events import Event, EventKind
from .kernel_api import KernelApi

log = logging.getLogger("client.files")

CHUNK = limits.MAX_FILE_CHUNK
QUEUE_LIMIT = CHUNK              # link output queued before the sender adds a chunk (<= 2 queued)
ACK_EVERY = 4 * CHUNK            # the receiver confirms this often (less with a window under 2 MiB)
PROGRESS_INTERVAL = 0.25
DEFAULT_WINDOW = 2 * 1024 * 1024
MAX_EARLY = 64                   # stashed early events kept at most
MAX_QUEUED = 32 * 1024 * 1024    # received, not yet written: far above any sane server window
ERROR_MESSAGES = {
    ErrorCode.DISK_FULL.name: "the disk is full",
    ErrorCode.CHECKSUM_MISMATCH.name: "the file arrived damaged",
}


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_all(fd: int, data: memoryview) -> None:
    """Write everything or raise OSError (ENOSPC on a full disk)."""
    while data:
        data = data[os.write(fd, data):]


def ack_interval(window: int) -> int:
    """How often a recipient confirms: half the server's window (at most ACK_EVERY), so the
    sender always has room to go on while the ack travels, and at least a chunk (the sender
    can always have a whole chunk in flight)."""
    return max(CHUNK, min(ACK_EVERY, window // 2))


def unique_path(path: Path) -> Path:
    """``path``, or ``name (1).ext``, ``name (2).ext``... if it exists."""
    if not path.exists():
        return path
    stem, suffix = path.stem, path.suffix
    for n in range(1, 10000):
        candidate = path.with_name(f"{stem} ({n}){suffix}")
        if not candidate.exists():
            return candidate
    raise FileExistsError(path)


class Progress:
    """Throttled ``file_progress`` events with a smoothed rate and time left."""

    def __init__(self, kernel: KernelApi, transfer_id: str, direction: str, total: int) -> None:
        self.kernel = kernel
        self.transfer_id = transfer_id
        self.direction = direction
        self.total = total
        self.rate = 0.0
        self._last_time = time.monotonic()
        self._last_done = 0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        elapsed = now - self._last_time
        if not force and elapsed < PROGRESS_INTERVAL:
            return
        if elapsed > 0 and done >= self._last_done:
            current = (done - self._last_done) / elapsed
            self.rate = current if self.rate == 0 else 0.6 * self.rate + 0.4 * current
        self._last_time, self._last_done = now, done
        eta = round((self.total - done) / self.rate, 1) if self.rate > 0 else None
        self.kernel.emit(EventKind.FILE_PROGRESS, transfer_id=self.transfer_id, direction=self.direction, done=done,
                         total=self.total, rate=round(self.rate), eta=eta)


class SendState(StrEnum):
    OFFERED = "offered"         # waiting for the answer
    SENDING = "sending"
    PAUSED = "paused"           # the link dropped: the session hook resumes it
    ENDED = "ended"


class ReceiveState(StrEnum):
    RECEIVING = "receiving"
    VERIFIED = "verified"       # complete and in place; the final ack not confirmed yet
    ENDED = "ended"


class Outgoing:
    """A file this client sends; one thread streams it while the transfer is running."""

    def __init__(self, files: "FilesClient", transfer_id: str, to: int, path: Path, name: str, size: int,
                 sha256: str, window: int) -> None:
        self.files = files
        self.id = transfer_id
        self.raw_id = bytes.fromhex(transfer_id)
        self.to = to
        self.path = path
        self.name = name
        self.size = size
        self.sha256 = sha256
        self.window = window
        self.state = SendState.OFFERED
        self.interrupted = False    # the link dropped since the last resume
        self.next = 0
        self.acked = 0
        self.cond = threading.Condition()
        self.progress = Progress(files.kernel, transfer_id, "send", size)
        self.thread = threading.Thread(target=self._run, name=f"file-send-{transfer_id[:8]}", daemon=True)

    def go(self, offset: int, confirmed: int) -> None:
        """Stream from ``offset``; the server has ``confirmed`` bytes confirmed."""
        with self.cond:
            if self.state == SendState.ENDED:
                return
            self.state = SendState.SENDING
            self.next = offset
            self.acked = confirmed
            self.cond.notify_all()

    def on_ack(self, offset: int) -> None:
        with self.cond:
            if offset > self.acked:
                self.acked = offset
                self.cond.notify_all()
        self.progress.update(offset, force=offset == self.size)

    def pause(self) -> None:
        with self.cond:
            if self.state == SendState.SENDING:
                self.state = SendState.PAUSED

    def end(self) -> bool:
        """Stop for good; False if it had already ended."""
        with self.cond:
            if self.state == SendState.ENDED:
                return False
            self.state = SendState.ENDED
            self.cond.notify_all()
            return True

    def _next_chunk(self) -> tuple[int, int] | None:
        with self.cond:
            while True:
                if self.state == SendState.ENDED or not self.files.alive:
                    return None
                size = min(CHUNK, self.size - self.next)
                if self.state == SendState.SENDING and size > 0 and self.next + size - self.acked <= self.window:
                    offset = self.next
                    self.next += size
                    return offset, size
                self.cond.wait(1.0)

    def _run(self) -> None:
        kernel = self.files.kernel
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            self.files.local_failure(self.id, f"cannot read {self.path.name}: {exc.strerror}")
            return
        try:
            while (chunk := self._next_chunk()) is not None:
                offset, size = chunk
                kernel.wait_for_room(QUEUE_LIMIT, timeout=5.0)
                # The whole frame in one pooled buffer, the file read straight into it.
                frame = kernel.buffers.take(FRAME_PREFIX + size)
                pack_chunk_prefix_into(frame, self.raw_id, offset, size)
                if os.preadv(fd, [memoryview(frame)[FRAME_PREFIX:]], offset) != size:
                    self.files.local_failure(self.id, f"{self.path.name} became shorter while being sent")
                    return
                if not kernel.send_frame(frame, recycle=True):
                    self.pause()   # the session hook resumes from the server's offset
        except OSError as exc:
            self.files.local_failure(self.id, f"cannot read {self.path.name}: {exc.strerror}")
        finally:
            os.close(fd)


class Incoming:
    """A file this client receives: chunks go to a writer thread, then verify and rename."""

    def __init__(self, files: "FilesClient", offer: dict, destination: Path) -> None:
        self.files = files
        self.id = offer["transfer_id"]
        self.raw_id = bytes.fromhex(self.id)
        self.sender = offer["from"]
        self.size = int(offer["size"])
        self.sha256 = offer["sha256"]
        self.destination = destination
        self.temp = destination.with_name(f".{destination.name}.{self.id[:8]}.part")
        self.state = ReceiveState.RECEIVING
        self.interrupted = False    # the link dropped since the last resume
        self.received = 0           # network thread: the next offset expected
        self.written = 0
        self.ack_every = ack_interval(DEFAULT_WINDOW)
        self.final_path: Path | None = None
        self.hasher = hashlib.sha256()
        self.queue: collections.deque[memoryview] = collections.deque()
        self.queued = 0
        self.cond = threading.Condition()
        self.progress = Progress(files.kernel, self.id, "receive", self.size)
        self.fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.thread = threading.Thread(target=self._run, name=f"file-recv-{self.id[:8]}", daemon=True)

    def on_chunk(self, offset: int, data: memoryview) -> None:
        """Network thread: keep the chunk if it is the next one, ignore it otherwise."""
        with self.cond:
            if self.state != ReceiveState.RECEIVING or offset != self.received or offset + len(data) > self.size:
                return
            self.received += len(data)
            self.queue.append(data)
            self.queued += len(data)
            overflow = self.queued > MAX_QUEUED
            self.cond.notify()
        if overflow:
            self.files.fail_incoming(self, None, "the server sent more than the window allows")

    def stop(self) -> bool:
        with self.cond:
            if self.state == ReceiveState.ENDED:
                return False
            self.state = ReceiveState.ENDED
            self.queue.clear()
            self.cond.notify()
            return True

    def _run(self) -> None:
        kernel = self.files.kernel
        last_ack = 0
        try:
            while self.written < self.size:
                with self.cond:
                    while not self.queue and self.state == ReceiveState.RECEIVING and self.files.alive:
                        self.cond.wait(1.0)
                    if self.state != ReceiveState.RECEIVING or not self.queue:
                        return
                    data = self.queue.popleft()
                    self.queued -= len(data)
                write_all(self.fd, data)
                self.hasher.update(data)
                if isinstance(data.obj, bytearray):   # a large body: from the kernel's pool
                    kernel.buffers.give(data.obj)
                self.written += len(data)
                if self.written - last_ack >= self.ack_every:
                    last_ack = self.written
                    if self.written < self.size:
                        kernel.send(PacketType.FILE_ACK, {"transfer_id": self.id, "offset": self.written})
                self.progress.update(self.written)
            self._finish()
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            self.files.fail_incoming(self, ErrorCode.DISK_FULL.name if full else None,
                                     "the disk is full" if full else f"cannot write the file: {exc.strerror}")
        finally:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1
            if self.final_path is None:
                self.temp.unlink(missing_ok=True)

    def _finish(self) -> None:
        if self.hasher.hexdigest() != self.sha256:
            self.files.fail_incoming(self, ErrorCode.CHECKSUM_MISMATCH.name,
                                     "the file arrived damaged (SHA-256 mismatch)")
            return
        os.fsync(self.fd)
        os.close(self.fd)
        self.fd = -1
        final = unique_path(self.destination)
        os.replace(self.temp, final)
        self.final_path = final
        with self.cond:
            if self.state != ReceiveState.RECEIVING:
                return
            self.state = ReceiveState.VERIFIED
        self.progress.update(self.size, force=True)
        self.files.delivered(self)


class FilesClient:
    def __init__(self, kernel: KernelApi, remember_message: Callable[[dict], bool],
                 download_dir: str | os.PathLike | None = None) -> None:
        """``remember_message``: the chat's ``remember``, which keeps the message a file offer
        carries in its conversation (False if the chat knew it already)."""
        self.kernel = kernel
        self._remember_message = remember_message
        self.download_dir = Path(download_dir) if download_dir else Path.home() / "Downloads"
        self.offers: dict[str, dict] = {}
        self.paths: dict[str, Path] = {}    # transfer id -> the file here (sent from / saved to)
        self._outgoing: dict[str, Outgoing] = {}
        self._incoming: dict[str, Incoming] = {}
        self._incoming_by_raw: dict[bytes, Incoming] = {}
        self._early: dict[str, list] = {}   # events that overtook their offer's reply
        self._lock = threading.Lock()
        kernel.on_packet(PacketType.FILE_OFFER_EVENT, self._on_offer)
        kernel.on_packet(PacketType.FILE_ANSWER_EVENT, self._on_answer)
        kernel.on_packet(PacketType.FILE_ACK, self._on_ack)
        kernel.on_packet(PacketType.FILE_PULL_EVENT, self._on_pull)
        kernel.on_packet(PacketType.FILE_DONE_EVENT, self._on_done)
        kernel.on_packet(PacketType.FILE_CANCEL_EVENT, self._on_cancel)
        kernel.on_binary(PacketType.FILE_CHUNK, self._on_chunk)
        kernel.session_hooks.append(self._on_session)
        kernel.add_listener(self._on_kernel_event)

    @property
    def alive(self) -> bool:
        """False once the kernel is closed: the transfer threads then stop."""
        return self.kernel.running

    # -- sending ---------------------------------------------------------------------------------
    def send_file(self, to: int, path: str | os.PathLike, name: str | None = None,
                  timeout: float | None = None) -> str:
        """Hash and offer a file to a friend; returns the transfer id (blocking).

        Raises ApiError (NOT_FRIENDS, FILE_TOO_LARGE, SPOOL_FULL, DISK_FULL...), ConnectionLost,
        TimeoutError or OSError (the file cannot be read)."""
        path = Path(path)
        size = path.stat().st_size
        sha256 = file_sha256(path)
        offered_name = name or path.name

        def register(future: Future) -> None:
            # Runs on the network thread as the reply arrives, before any later packet (the
            # answer may follow the reply immediately).
            if future.exception() is not None:
                return
            reply = future.result()
            outgoing = Outgoing(self, reply["transfer_id"], to, path, reply["name"], size, sha256,
                                int(reply.get("window", DEFAULT_WINDOW)))
            with self._lock:
                self._outgoing[outgoing.id] = outgoing
                self.paths[outgoing.id] = path
                early = self._early.pop(outgoing.id, [])
            outgoing.thread.start()
            message = reply.get("message")
            if isinstance(message, dict) and self._remember_message(message):
                self.kernel.emit(EventKind.CHAT_SENT, message=message, duplicate=False)
            if reply.get("mode") == "spool":
                outgoing.go(int(reply.get("offset", 0)), 0)
            for handler, body in early:
                handler(body)

        future = self.kernel.request_async(PacketType.FILE_OFFER, {"to": to, "name": offered_name,
                                                                   "size": size, "sha256": sha256})
        future.add_done_callback(register)
        try:
            reply = future.result(timeout or self.kernel.request_timeout)
        except TimeoutError:
            raise TimeoutError("no answer to the file offer in time") from None
        self.kernel.emit(EventKind.FILE_OFFERED, transfer_id=reply["transfer_id"], to=to, name=reply["name"], size=size,
                         mode=reply.get("mode"))
        return reply["transfer_id"]

    def is_active(self, file_id: str) -> bool:
        """Whether this client is sending or receiving the transfer now (it can cancel it)."""
        with self._lock:
            return file_id in self._outgoing or file_id in self._incoming

    def _stashed(self, handler, body: dict) -> bool:
        """An answer may overtake the registration of its offer (the reply callback can run on
        the caller's thread): keep it until the offer is registered. True if stashed."""
        file_id = str(body.get("transfer_id"))
        with self._lock:
            if file_id in self._outgoing or file_id in self._incoming or file_id in self.offers:
                return False
            while len(self._early) >= MAX_EARLY:
                self._early.pop(next(iter(self._early)))
            self._early.setdefault(file_id, []).append((handler, body))
            return True

    def _on_answer(self, body: dict) -> None:
        if self._stashed(self._on_answer, body):
            return
        outgoing = self._outgoing.get(str(body.get("transfer_id")))
        if outgoing is None:
            return
        if body.get("accepted"):
            outgoing.go(int(body.get("offset", 0)), int(body.get("offset", 0)))
            self.kernel.emit(EventKind.FILE_ACCEPTED, transfer_id=outgoing.id)
        elif self._forget_outgoing(outgoing):
            self.kernel.emit(EventKind.FILE_DECLINED, transfer_id=outgoing.id, name=outgoing.name)

    def _on_ack(self, body: dict) -> None:
        outgoing = self._outgoing.get(str(body.get("transfer_id")))
        if outgoing is not None and isinstance(body.get("offset"), int):
            outgoing.on_ack(body["offset"])

    def _on_pull(self, body: dict) -> None:
        outgoing = self._outgoing.get(str(body.get("transfer_id")))
        if outgoing is not None and isinstance(body.get("offset"), int):
            outgoing.go(body["offset"], body["offset"])

    def _on_done(self, body: dict) -> None:
        file_id = str(body.get("transfer_id"))
        outgoing = self._outgoing.get(file_id)
        if body.get("stage") == "spooled":
            if outgoing is not None and self._forget_outgoing(outgoing):
                outgoing.progress.update(outgoing.size, force=True)
                self.kernel.emit(EventKind.FILE_SPOOLED, transfer_id=file_id, name=outgoing.name, size=outgoing.size)
            return
        if outgoing is not None:
            self._forget_outgoing(outgoing)
            outgoing.progress.update(outgoing.size, force=True)
        self.kernel.emit(EventKind.FILE_DONE, transfer_id=file_id, direction="send", size=body.get("size"))

    def _forget_outgoing(self, outgoing: Outgoing) -> bool:
        with self._lock:
            self._outgoing.pop(outgoing.id, None)
        return outgoing.end()

    def local_failure(self, file_id: str, message: str) -> None:
        """The sender cannot go on (file unreadable): cancel on the server, tell the user."""
        outgoing = self._outgoing.get(file_id)
        if outgoing is None or not self._forget_outgoing(outgoing):
            return
        self.kernel.emit(EventKind.FILE_FAILED, transfer_id=file_id, direction="send", error=None, message=message)
        self._send_cancel(file_id, message, None)

    # -- receiving ---------------------------------------------------------------------------------
    def _on_offer(self, body: dict) -> None:
        try:
            offer = {"transfer_id": str(body["transfer_id"]), "from": int(body["from"]),
                     "from_nickname": str(body.get("from_nickname", "")),
                     "name": sanitize_filename(str(body["name"])), "size": int(body["size"]),
                     "sha256": str(body["sha256"]).lower(), "spooled": bool(body.get("spooled"))}
            bytes.fromhex(offer["transfer_id"])
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed file offer")
            return
        with self._lock:
            if offer["transfer_id"] in self.offers or offer["transfer_id"] in self._incoming:
                return
            self.offers[offer["transfer_id"]] = offer
        message = body.get("message")
        if isinstance(message, dict) and self._remember_message(message):
            self.kernel.emit(EventKind.CHAT_MESSAGE, message=message, backlog=False)
        self.kernel.emit(EventKind.FILE_OFFER, **offer)

    def destination_for(self, file_id: str, directory: str | os.PathLike | None = None) -> Path:
        """Where an offered file would be saved in ``directory``: always inside it."""
        offer = self._offer(file_id)
        return Path(directory or self.download_dir) / sanitize_filename(offer["name"])

    def accept(self, file_id: str, directory: str | os.PathLike | None = None,
               path: str | os.PathLike | None = None) -> Path:
        """Accept an offer, saving into ``directory`` under the offered (sanitised) name or at
        ``path``; returns the intended path (``file_done`` carries the final one, which gets a
        " (1)" suffix if the name was taken meanwhile). Raises ApiError DISK_FULL when the
        disk has no room for the file, NO_SUCH_TRANSFER if the offer is gone."""
        offer = self._offer(file_id)
        destination = Path(path) if path else self.destination_for(file_id, directory)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination = unique_path(destination)
        if shutil.disk_usage(destination.parent).free < offer["size"]:
            raise ApiError(ErrorCode.DISK_FULL, f"not enough free space in {destination.parent} for this file")
        try:
            incoming = Incoming(self, offer, destination)
        except OSError as exc:
            raise ApiError(ErrorCode.DISK_FULL if exc.errno == errno.ENOSPC else ErrorCode.BAD_REQUEST,
                           f"cannot create a file in {destination.parent}: {exc.strerror}") from None
        with self._lock:   # before the answer: the first chunks may follow it immediately
            self._incoming[file_id] = incoming
            self._incoming_by_raw[incoming.raw_id] = incoming
        try:
            reply = self.kernel.request(PacketType.FILE_ANSWER, {"transfer_id": file_id, "accept": True})
            incoming.ack_every = ack_interval(int(reply.get("window", DEFAULT_WINDOW)))
        except Exception:
            self._forget_incoming(incoming)
            incoming.temp.unlink(missing_ok=True)
            raise
        incoming.thread.start()   # only now: an empty file completes at once, after the answer
        with self._lock:
            self.offers.pop(file_id, None)
        return destination

    def decline(self, file_id: str) -> None:
        self._offer(file_id)
        self.kernel.request(PacketType.FILE_ANSWER, {"transfer_id": file_id, "accept": False})
        with self._lock:
            self.offers.pop(file_id, None)

    def _offer(self, file_id: str) -> dict:
        offer = self.offers.get(file_id)
        if offer is None:
            raise ApiError(ErrorCode.NO_SUCH_TRANSFER, "no such file offer")
        return offer

    def _on_chunk(self, body: bytes) -> None:
        chunk = unpack_chunk(body)
        if chunk is None:
            return
        header, data = chunk
        incoming = self._incoming_by_raw.get(header.raw_id)
        if incoming is not None:
            incoming.on_chunk(header.offset, data)

    def delivered(self, incoming: Incoming) -> None:
        """Writer thread: the file is verified and in place; confirm it to the server."""
        self._confirm_complete(incoming)

    def _confirm_complete(self, incoming: Incoming) -> None:
        """Send the final FILE_ACK as a request and report ``file_done`` once the server has
        it (so a client may close right after); if the link drops first, the session hook
        sends it again."""
        def done(future: Future) -> None:
            error = future.exception()
            if (error is None or isinstance(error, ApiError)) and self._forget_incoming(incoming):
                self.paths[incoming.id] = incoming.final_path
                self.kernel.emit(EventKind.FILE_DONE, transfer_id=incoming.id, direction="receive",
                                 path=str(incoming.final_path), size=incoming.size)
        future = self.kernel.request_async(PacketType.FILE_ACK, {"transfer_id": incoming.id,
                                                                 "offset": incoming.size, "complete": True})
        future.add_done_callback(done)

    def fail_incoming(self, incoming: Incoming, error: str | None, message: str) -> None:
        """The receiving side cannot go on: remove the partial file, tell the sender and user."""
        if not self._forget_incoming(incoming):
            return
        self.kernel.emit(EventKind.FILE_FAILED, transfer_id=incoming.id, direction="receive", error=error,
                         message=message)
        self._send_cancel(incoming.id, message, error)

    def _forget_incoming(self, incoming: Incoming) -> bool:
        with self._lock:
            self._incoming.pop(incoming.id, None)
            self._incoming_by_raw.pop(incoming.raw_id, None)
        return incoming.stop()

    # -- cancelling -------------------------------------------------------------------------------
    def cancel(self, file_id: str, reason: str = "") -> None:
        """Cancel a transfer in either direction (or an offer); the other side is told."""
        self._end_locally(file_id)
        self.kernel.request(PacketType.FILE_CANCEL, {"transfer_id": file_id, "reason": reason[:200]})
        self.kernel.emit(EventKind.FILE_CANCELLED, transfer_id=file_id, by="me", reason=reason)

    def _send_cancel(self, file_id: str, reason: str, error: str | None) -> None:
        body: dict[str, Any] = {"transfer_id": file_id, "reason": reason[:200]}
        if error:
            body["error"] = error
        self.kernel.request_async(PacketType.FILE_CANCEL, body)

    def _end_locally(self, file_id: str) -> bool:
        """Stop whatever this client does for the transfer; False if it knew nothing of it."""
        with self._lock:
            outgoing = self._outgoing.get(file_id)
            incoming = self._incoming.get(file_id)
            offer = self.offers.pop(file_id, None)
        ended = offer is not None
        if outgoing is not None:
            ended = self._forget_outgoing(outgoing) or ended
        if incoming is not None:
            ended = self._forget_incoming(incoming) or ended
        return ended

    def _on_cancel(self, body: dict) -> None:
        if body.get("by") != 0 and self._stashed(self._on_cancel, body):
            return
        file_id = str(body.get("transfer_id"))
        direction = "send" if file_id in self._outgoing else "receive"
        # The server (by 0) also reports on transfers this client already let go of, such as a
        # spooled file that expired before the friend fetched it.
        if not self._end_locally(file_id) and body.get("by") != 0:
            return
        reason = str(body.get("reason") or "")
        error = body.get("error")
        if error:
            self.kernel.emit(EventKind.FILE_FAILED, transfer_id=file_id, direction=direction, error=str(error),
                             message=reason or ERROR_MESSAGES.get(str(error), str(error)))
        else:
            self.kernel.emit(EventKind.FILE_CANCELLED, transfer_id=file_id, direction=direction, by=body.get("by"),
                             reason=reason)

    # -- after a login or a reconnect ------------------------------------------------------------------
    def _on_kernel_event(self, event: Event) -> None:
        """Network thread: when the link drops, mark what is in flight for the session hook."""
        if event.kind != EventKind.DISCONNECTED:
            return
        with self._lock:
            transfers: list[Outgoing | Incoming] = [*self._outgoing.values(), *self._incoming.values()]
        for transfer in transfers:
            transfer.interrupted = True
            if isinstance(transfer, Outgoing):
                transfer.pause()

    def _on_session(self, resumed: bool) -> None:
        """Task thread, after every login and reconnect: resume the interrupted transfers (not
        the ones started since) and pick up the offers that came while offline."""
        with self._lock:
            outgoing = [t for t in self._outgoing.values() if t.interrupted]
            incoming = [t for t in self._incoming.values() if t.interrupted]
        for transfer in outgoing:
            transfer.interrupted = False
            self._resume_outgoing(transfer)
        for transfer in incoming:
            transfer.interrupted = False
            if transfer.state == ReceiveState.VERIFIED:
                self._confirm_complete(transfer)
            else:
                self._resume_incoming(transfer)
        after = ""
        while True:
            reply = self.kernel.request(PacketType.FILE_PENDING, {"after": after} if after else {})
            for item in reply.get("transfers", []):
                if item.get("role") == "recipient" and item.get("state") in (TransferState.OFFERED,
                                                                              TransferState.SPOOLED):
                    self._on_offer(item)
            if not reply.get("more") or not reply.get("next") or reply["next"] == after:
                break
            after = reply["next"]

    def _resume_outgoing(self, outgoing: Outgoing) -> None:
        try:
            reply = self.kernel.request(PacketType.FILE_RESUME, {"transfer_id": outgoing.id})
        except ApiError as exc:
            if self._forget_outgoing(outgoing):
                self.kernel.emit(EventKind.FILE_FAILED, transfer_id=outgoing.id, direction="send", error=exc.code.name,
                                 message=exc.message)
            return
        state = reply.get("state")
        if state in (TransferState.SENDING, TransferState.UPLOADING):
            if "offset" in reply:   # else the server restarted and waits for the recipient: FILE_PULL_EVENT follows
                outgoing.go(int(reply["offset"]), int(reply.get("confirmed", reply["offset"])))
        elif state in (TransferState.OFFERED, TransferState.SPOOLED):
            if state == TransferState.SPOOLED and self._forget_outgoing(outgoing):
                self.kernel.emit(EventKind.FILE_SPOOLED, transfer_id=outgoing.id, name=outgoing.name,
                                 size=outgoing.size)
        else:
            self._ended_while_away(outgoing.id, "send", str(state), lambda: self._forget_outgoing(outgoing))

    def _resume_incoming(self, incoming: Incoming) -> None:
        try:
            reply = self.kernel.request(PacketType.FILE_RESUME, {"transfer_id": incoming.id,
                                                                 "offset": incoming.received})
        except ApiError as exc:
            self.fail_incoming(incoming, None, exc.message)
            return
        state = reply.get("state")
        if state in (TransferState.SENDING, TransferState.DOWNLOADING):
            incoming.ack_every = ack_interval(int(reply.get("window", DEFAULT_WINDOW)))
        else:
            self._ended_while_away(incoming.id, "receive", str(state), lambda: self._forget_incoming(incoming))

    def _ended_while_away(self, file_id: str, direction: str, state: str, forget) -> None:
        if not forget():
            return
        if state == TransferState.DONE:
            self.kernel.emit(EventKind.FILE_DONE, transfer_id=file_id, direction=direction, size=None)
        elif state in (TransferState.CANCELLED, TransferState.DECLINED):
            kind = EventKind.FILE_CANCELLED if state == TransferState.CANCELLED else EventKind.FILE_DECLINED
            self.kernel.emit(kind, transfer_id=file_id, direction=direction, by=None,
                             reason=f"{state} while you were offline")
        else:
            self.kernel.emit(EventKind.FILE_FAILED, transfer_id=file_id, direction=direction, error=None,
                             message=f"the transfer {state} while you were offline")
