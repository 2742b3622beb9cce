"""FILE_* packets: offer, answer, chunks, acks, cancel, resume, pending list.

Control packets check who may do what against the ``files`` table (the authority on a
transfer's state) and hand the moving of bytes to ``server.transfers.TransferService``.
FILE_CHUNK and FILE_ACK are pure routing and run inline on the reactor.
"""
from __future__ import annotations

import logging
import re
import secrets
from typing import TYPE_CHECKING

from common import messages
from common.errors import ApiError, ErrorCode
from common.filenames import sanitize_filename
from common.packets import PacketType

from ..clock import now_ms
from ..mediator import Request, Routes
from ..storage.messages import FileRef, Message
from ..storage.files import FINAL_STATES, LIVE_STATES, OPEN_STATES, FileRecord
from ..transfers import IDLE_CHECK_INTERVAL, Transfer, TransferService
from .replies import fit_page
from .views import message_view

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..ratelimit import RateLimits
    from ..reactor import Reactor
    from ..router import Router
    from ..storage import Storage

log = logging.getLogger("server.files")

_HEX_ID = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
CLIENT_ERRORS = frozenset({ErrorCode.CHECKSUM_MISMATCH.name, ErrorCode.DISK_FULL.name})
PENDING_PAGE_ROWS = 200


class FilesHandler:
    def __init__(self, config: "ServerConfig", storage: "Storage", router: "Router", rate_limits: "RateLimits",
                 reactor: "Reactor", service: TransferService) -> None:
        self.config = config
        self.storage = storage
        self.router = router
        self.rate_limits = rate_limits
        self.service = service
        reactor.call_later(0, service.run_job, self.start_up)
        reactor.call_every(config.spool_sweep_interval, lambda: service.run_job(service.sweep_spool))
        reactor.call_every(min(IDLE_CHECK_INTERVAL, config.file_idle_timeout / 2,
                               config.spool_upload_idle_timeout / 2), service.check_idle)

    def routes(self) -> Routes:
        return files_routes(self)

    def nickname_of(self, user_id: int) -> str:
        user = self.storage.get_user(user_id)
        return user.nickname if user else ""

    def take_up(self, record: FileRecord) -> Transfer:
        """The live transfer of ``record`` in the table, taken up from the database if this
        node does not hold it (a restart, or the sender came here from another node)."""
        return self.service.adopt(self.service.transfer_of(record, record.state))

    def start_up(self) -> None:
        """One process: the live transfers a restart interrupted wait for their users to resume
        (or for the idle timeout). In a cluster they may be moving through other nodes: each
        is taken up by the node its users resume on. Then the first spool sweep."""
        service, link = self.service, self.service.link
        records = self.storage.live_files() if link is None else []
        for record in records:
            self.take_up(record)
        if records:
            log.info("%d live file transfers interrupted by the restart wait to be resumed", len(records))
        if link is not None:
            unshared = link.unshared_spool(service.spool.directory)
            if unshared:
                log.error("the spool directory %s is not shared with node(s) %s: files spooled through one "
                          "node cannot be fetched through the other; give every node the same spool_dir "
                          "(docs/OPERATIONS.md, Files in a cluster)", service.spool.directory, ", ".join(unshared))
        service.sweep_spool()


def files_routes(files: FilesHandler) -> Routes:
    config, storage, router, rate_limits, service = (files.config, files.storage, files.router, files.rate_limits,
                                                     files.service)
    nickname_of, take_up = files.nickname_of, files.take_up
    routes = Routes()
    handler = routes.handler

    def load(req: Request) -> FileRecord:
        """The transfer named in the request, if this user sends or receives it."""
        file_id = req.body.transfer_id.lower()
        record = storage.get_file(file_id) if _HEX_ID.fullmatch(file_id) else None
        if record is None or req.user_id not in (record.sender_id, record.recipient_id):
            raise ApiError(ErrorCode.NO_SUCH_TRANSFER)
        return record

    def file_message(message_id: int, record: FileRecord) -> messages.ChatMessage:
        """The chat message a new offer stored, as history pages show it."""
        return message_view(Message(message_id, record.sender_id, record.recipient_id, f"file:{record.id}",
                                    record.name, record.created_at, None, None,
                                    FileRef(record.id, record.name, record.size, record.state)))

    @handler(PacketType.FILE_OFFER, blocking=True)
    def offer(req: Request) -> dict:
        body: messages.FileOffer = req.body
        to, name, size, sha256 = body.to, sanitize_filename(body.name), body.size, body.sha256.lower()
        if not _SHA256.fullmatch(sha256):
            raise ApiError(ErrorCode.BAD_REQUEST, "sha256 must be 64 hex digits")
        if size > config.max_file_size:
            raise ApiError(ErrorCode.FILE_TOO_LARGE, limit=config.max_file_size)
        if to == req.user_id or not storage.are_friends(req.user_id, to):
            raise ApiError(ErrorCode.NOT_FRIENDS, "you can send files only to your friends")
        rate_limits.file_offer(req.user_id)
        created = now_ms()
        live = router.is_online(to)
        record = FileRecord(secrets.token_hex(16), req.user_id, to, name, size, sha256,
                            "offered" if live else "uploading", 0, created,
                            created + int(config.spool_expiry * 1000))
        if live:
            message = file_message(storage.create_file(record), record)
            service.add(service.transfer_of(record, "offered"))
            router.event_to_user(to, PacketType.FILE_OFFER_EVENT, messages.Offer(
                transfer_id=record.id, from_id=req.user_id, from_nickname=req.conn.nickname, name=name, size=size,
                sha256=sha256, spooled=False, message=message))
        else:
            message = file_message(service.spool.reserve(size, lambda user_quota, quota: storage.create_spool_file(
                record, user_quota, quota)), record)
            try:
                service.start_upload(service.transfer_of(record, "uploading"), resume=False)
            except ApiError:
                storage.set_file_state(record.id, "failed")
                raise
        log.info("%s offers file %s (%d bytes) to user %d, %s", req.conn.who, record.id, size, to,
                 "live" if live else "through the spool")
        return {"transfer_id": record.id, "name": name, "size": size, "mode": "live" if live else "spool",
                "window": service.window, "offset": 0, "message": message}

    @handler(PacketType.FILE_ANSWER, blocking=True)
    def answer(req: Request) -> dict:
        record = load(req)
        accept = req.body.accept
        if req.user_id != record.recipient_id or record.state not in ("offered", "spooled"):
            raise ApiError(ErrorCode.NO_SUCH_TRANSFER, "no such offer waiting for your answer")
        if not accept:
            if not storage.set_file_state(record.id, "declined", only_from=("offered", "spooled")):
                raise ApiError(ErrorCode.NO_SUCH_TRANSFER)
            service.ended(record)
            router.event_to_user(record.sender_id, PacketType.FILE_ANSWER_EVENT,
                                 messages.FileAnswerEvent(transfer_id=record.id, accepted=False))
            log.info("%s declined file %s", req.conn.who, record.id)
            return {"transfer_id": record.id, "accepted": False}
        if record.state == "offered":
            if not storage.set_file_state(record.id, "sending", only_from=("offered",)):
                raise ApiError(ErrorCode.NO_SUCH_TRANSFER)
            service.accepted(record)     # before the event: the sender's chunks find the owner sending
            router.event_to_user(record.sender_id, PacketType.FILE_ANSWER_EVENT,
                                 messages.FileAnswerEvent(transfer_id=record.id, accepted=True, offset=0))
        else:
            transfer = service.get(record.id)
            if transfer is None:
                service.start_download(service.transfer_of(record, "downloading"), 0)
            else:
                service.restart_download(transfer, 0)
        log.info("%s accepted file %s", req.conn.who, record.id)
        return {"transfer_id": record.id, "accepted": True, "offset": 0, "name": record.name,
                "size": record.size, "sha256": record.sha256, "window": service.window}

    @handler(PacketType.FILE_CHUNK)
    def chunk(req: Request) -> None:
        service.on_chunk(req.user_id, req.body)

    @handler(PacketType.FILE_ACK)
    def ack(req: Request) -> dict | None:
        body: messages.FileAck = req.body
        file_id = body.transfer_id.lower()
        if _HEX_ID.fullmatch(file_id):
            service.on_ack(req.user_id, file_id, body.offset, body.complete is True)
        return {}   # only the final ack is a request (id > 0); the others are fire and forget

    @handler(PacketType.FILE_CANCEL, blocking=True)
    def cancel(req: Request) -> dict:
        record = load(req)
        reason, error = req.body.reason or "", req.body.error or ""
        if error and error not in CLIENT_ERRORS:
            raise ApiError(ErrorCode.BAD_REQUEST, f"error must be one of {', '.join(sorted(CLIENT_ERRORS))}")
        if record.state not in OPEN_STATES or not storage.set_file_state(
                record.id, "failed" if error else "cancelled"):
            raise ApiError(ErrorCode.NO_SUCH_TRANSFER, "the transfer has already ended")
        service.ended(record)
        other = record.recipient_id if req.user_id == record.sender_id else record.sender_id
        router.event_to_user(other, PacketType.FILE_CANCEL_EVENT, messages.FileCancelEvent(
            transfer_id=record.id, by=req.user_id, reason=reason, error=error or None))
        log.info("%s %s file %s%s", req.conn.who, "failed" if error else "cancelled", record.id,
                 f" ({error})" if error else "")
        return {"transfer_id": record.id}

    @handler(PacketType.FILE_RESUME, blocking=True)
    def resume(req: Request) -> dict:
        record = load(req)
        reply: dict = {"transfer_id": record.id, "state": record.state}
        if record.state in FINAL_STATES:
            return reply
        transfer = service.get(record.id)
        if req.user_id == record.sender_id:
            if transfer is None and record.state in LIVE_STATES:
                transfer = take_up(record)     # a restart, or the sender came from another node
            if transfer is None and record.state == "uploading":
                transfer = service.transfer_of(record, "uploading")    # continue the partial spool file
                service.start_upload(transfer, resume=True)
            if transfer is not None and transfer.awaiting_recipient:
                service.locate(transfer)
                reply.update(state=transfer.state, window=service.window)   # no offset: wait for FILE_PULL_EVENT
            elif transfer is not None and transfer.state in ("sending", "uploading"):
                offset, confirmed = service.sender_position(transfer)
                reply.update(state=transfer.state, offset=offset, confirmed=confirmed, window=service.window)
            return reply
        offset = req.body.offset
        if offset is None or offset > record.size:
            raise ApiError(ErrorCode.BAD_REQUEST, f"a recipient resumes with the offset it holds, 0 to {record.size}")
        if record.state == "sending":
            service.resume_recipient(record, offset)
            reply.update(offset=offset, window=service.window)
        elif record.state == "spooled":
            if transfer is not None and transfer.state == "downloading":
                service.restart_download(transfer, offset)
            else:
                service.start_download(service.transfer_of(record, "downloading"), offset)   # a restart, or another node
            reply.update(state="downloading", offset=offset, window=service.window)
        return reply

    @handler(PacketType.FILE_PENDING, blocking=True)
    def pending(req: Request) -> dict:
        """One page of the user's open transfers, oldest first; ``after`` is the ``next`` of
        the page before."""
        after = (req.body.after or "").lower()
        cursor = None
        if after:
            cursor = storage.get_file(after) if _HEX_ID.fullmatch(after) else None
            if cursor is None or req.user_id not in (cursor.sender_id, cursor.recipient_id):
                raise ApiError(ErrorCode.BAD_REQUEST, "after must be the 'next' of the previous page")
        records = storage.open_files_of(req.user_id, cursor, PENDING_PAGE_ROWS)

        def view(record: FileRecord) -> messages.PendingTransfer:
            return messages.PendingTransfer(
                transfer_id=record.id, from_id=record.sender_id, from_nickname=nickname_of(record.sender_id),
                name=record.name, size=record.size, sha256=record.sha256, spooled=record.spooled,
                to=record.recipient_id, state=record.state,
                role="sender" if record.sender_id == req.user_id else "recipient")
        page, cut = fit_page(records, view)
        return {"transfers": page, "more": cut or len(records) == PENDING_PAGE_ROWS,
                "next": page[-1].transfer_id if page else after}

    return routes
