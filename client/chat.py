"""One-to-one chat in the client core, with an outbox.

``send`` puts the message in the outbox and sends it; it leaves the outbox only when the
server acknowledged it (after storing it) or refused it for good. After a reconnect the
outbox is sent again in order. The client message id makes a repeat harmless: the server
answers it with the message it already stored.

Received messages are acknowledged (CHAT_DELIVERED) as they arrive, live or from the unread
backlog fetched after every login and resume. Events for the UI: ``chat_pending``,
``chat_sent``, ``chat_failed``, ``chat_message``, ``chat_status`` (delivered / read),
``unread_loaded`` and ``typing``.
"""
from __future__ import annotations

import collections
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field

from common import limits, messages
from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from .events import Event, EventKind
from .kernel_api import KernelApi
from .ordered import wait

# Refusals worth another try later; any other ApiError drops the message from the outbox.
RETRYABLE = frozenset({ErrorCode.SHUTTING_DOWN, ErrorCode.INTERNAL, ErrorCode.TIMEOUT, ErrorCode.RATE_LIMITED})


@dataclass
class OutboxEntry:
    client_msg_id: str
    sender: int
    to: int
    text: str
    acked: Future = field(default_factory=Future)   # resolves with the server's acknowledgement
    in_flight: bool = False
    attempts: int = 0


class ChatClient:
    def __init__(self, kernel: KernelApi) -> None:
        self.kernel = kernel
        self.conversations: dict[int, dict[int, dict]] = collections.defaultdict(dict)  # peer -> id -> msg
        self.outbox: collections.OrderedDict[str, OutboxEntry] = collections.OrderedDict()
        self._lock = threading.RLock()
        self._ready = False     # the outbox was flushed on the current session: send new ones at once
        self._receipts: list[int] = []
        self._receipts_scheduled = False
        kernel.on_packet(PacketType.CHAT_MESSAGE_EVENT, self._on_message)
        kernel.on_packet(PacketType.CHAT_STATUS_EVENT, self._on_status)
        kernel.on_packet(PacketType.TYPING_EVENT, self._on_typing)
        kernel.session_hooks.append(self._on_session)
        kernel.add_listener(self._on_kernel_event)

    # -- sending -----------------------------------------------------------------------------------
    def send(self, to: int, text: str, client_msg_id: str | None = None) -> OutboxEntry:
        """Queue a message for ``to``; returns its outbox entry (``entry.acked`` resolves with
        ``{"id", "time", "client_msg_id", "duplicate"}`` or fails with the refusal)."""
        if len(text.encode("utf-8")) > limits.MAX_CHAT_BYTES:
            raise ApiError(ErrorCode.MESSAGE_TOO_LONG)
        if not text.strip():
            raise ApiError(ErrorCode.BAD_REQUEST, "the message is empty")
        if not self.kernel.user:
            raise ApiError(ErrorCode.NOT_AUTHENTICATED)
        entry = OutboxEntry(client_msg_id or uuid.uuid4().hex, self.kernel.user["id"], to, text)
        with self._lock:
            self.outbox[entry.client_msg_id] = entry
            self.kernel.emit(EventKind.CHAT_PENDING, client_msg_id=entry.client_msg_id, to=to, text=text)
            if self._ready:
                self._dispatch(entry)
        return entry

    def send_and_wait(self, to: int, text: str, timeout: float | None = None) -> dict:
        """Send and wait for the acknowledgement (bots, tests, the command line)."""
        entry = self.send(to, text)
        return wait(self.kernel, entry.acked, timeout)

    def _dispatch(self, entry: OutboxEntry) -> None:
        """Under the lock: send one outbox entry now."""
        if entry.in_flight:
            return
        entry.in_flight = True
        entry.attempts += 1
        future = self.kernel.request_async(PacketType.CHAT_SEND, messages.ChatSend(
            to=entry.to, text=entry.text, client_msg_id=entry.client_msg_id))
        future.add_done_callback(lambda fut: self._on_ack(entry, fut))

    def _on_ack(self, entry: OutboxEntry, future: Future) -> None:
        error = future.exception()
        with self._lock:
            entry.in_flight = False
            if error is None:
                reply = future.result()
                self.outbox.pop(entry.client_msg_id, None)
                message = messages.to_dict(messages.ChatMessage(
                    id=reply["id"], from_id=entry.sender, to_id=entry.to, client_msg_id=entry.client_msg_id,
                    text=entry.text, time=reply["time"], delivered_at=None, read_at=None))
                self.conversations[entry.to].setdefault(reply["id"], message)
                self.kernel.emit(EventKind.CHAT_SENT, message=message, duplicate=reply.get("duplicate", False))
                entry.acked.set_result(reply)
                return
            if isinstance(error, ApiError) and error.code not in RETRYABLE:
                self.outbox.pop(entry.client_msg_id, None)
                self.kernel.emit(EventKind.CHAT_FAILED, client_msg_id=entry.client_msg_id, to=entry.to,
                                 code=int(error.code), name=error.code.name, message=error.message)
                entry.acked.set_exception(error)
                return
            if isinstance(error, ApiError) and error.code == ErrorCode.RATE_LIMITED:
                delay = float(error.details.get("retry_after", 1.0) or 1.0)
                timer = threading.Timer(delay, self._retry, args=(entry,))
                timer.daemon = True
                timer.start()
            # Otherwise (connection lost, server stopping): stays in the outbox for the next session.

    def _retry(self, entry: OutboxEntry) -> None:
        with self._lock:
            if self._ready and self.outbox.get(entry.client_msg_id) is entry:
                self._dispatch(entry)

    # -- the other requests ----------------------------------------------------------------------------
    def history(self, peer: int, before: int | None = None, limit: int = 50) -> dict:
        """One page of the conversation, oldest first: ``{"messages", "more", "before"}``.
        Pass the reply's ``before`` to get the page before it."""
        body: dict = {"user_id": peer, "limit": limit}
        if before is not None:
            body["before"] = before
        reply = self.kernel.request(PacketType.CHAT_HISTORY, body)
        with self._lock:
            for message in reply["messages"]:
                self.conversations[peer].setdefault(message["id"], message)
        return reply

    def mark_read(self, peer: int) -> int:
        """Opening a conversation: everything received from ``peer`` so far is read. Returns how
        many messages the server marked."""
        with self._lock:
            received = [m for m in self.conversations.get(peer, {}).values() if m["from"] == peer]
            if not received:
                return 0
            up_to = max(m["id"] for m in received)
        reply = self.kernel.request(PacketType.CHAT_READ, {"user_id": peer, "up_to": up_to})
        with self._lock:
            for message in received:
                if message["read_at"] is None:
                    message["read_at"] = reply["at"]
        return int(reply.get("read", 0))

    def typing(self, peer: int, typing: bool = True) -> None:
        """Tell ``peer`` you are typing (or stopped); not stored, not acknowledged."""
        self.kernel.send(PacketType.TYPING, {"to": peer, "typing": typing})

    def messages_with(self, peer: int) -> list[dict]:
        with self._lock:
            return sorted(self.conversations.get(peer, {}).values(), key=lambda m: m["id"])

    # -- after (re)login --------------------------------------------------------------------------------
    def _on_session(self, resumed: bool) -> None:
        me = (self.kernel.user or {}).get("id")
        with self._lock:
            for entry in list(self.outbox.values()):
                if entry.sender != me:      # queued by another account on this client
                    self.outbox.pop(entry.client_msg_id)
                    entry.acked.set_exception(ApiError(ErrorCode.NOT_AUTHENTICATED, "logged in as someone else"))
            self._ready = True
            for entry in self.outbox.values():
                self._dispatch(entry)
        self._fetch_unread()

    def _fetch_unread(self) -> None:
        after, count, undelivered = 0, 0, []
        while True:
            reply = self.kernel.request(PacketType.CHAT_UNREAD, {"after": after})
            for message in reply["messages"]:
                if self._store(message):
                    count += 1
                    self.kernel.emit(EventKind.CHAT_MESSAGE, message=message, backlog=True)
                if message["delivered_at"] is None:
                    undelivered.append(message["id"])
            if not reply["more"]:
                break
            after = reply["next"]
        self._send_delivered(undelivered)
        self.kernel.emit(EventKind.UNREAD_LOADED, count=count)

    def remember(self, message: dict) -> bool:
        """Keep a message another module received (a file offered in the conversation); False
        if it was known."""
        return self._store(message)

    def _store(self, message: dict) -> bool:
        peer = message["from"] if message["from"] != (self.kernel.user or {}).get("id") else message["to"]
        with self._lock:
            known = self.conversations[peer]
            if message["id"] in known:
                return False
            known[message["id"]] = message
            return True

    # -- events (network thread) ------------------------------------------------------------------------
    def _on_message(self, body: dict) -> None:
        message = body["message"]
        if self._store(message):
            self.kernel.emit(EventKind.CHAT_MESSAGE, message=message, backlog=False)
        if message["delivered_at"] is None:
            self._receipt(message["id"])

    def _receipt(self, message_id: int) -> None:
        """Queue a delivery receipt; a burst of messages is acknowledged with one packet (the
        task thread sends whatever piled up by the time it runs)."""
        with self._lock:
            self._receipts.append(message_id)
            if self._receipts_scheduled:
                return
            self._receipts_scheduled = True
        self.kernel.run_task(self._send_receipts)

    def _send_receipts(self) -> None:
        with self._lock:
            ids, self._receipts = self._receipts, []
            self._receipts_scheduled = False
        self._send_delivered(ids)

    def _send_delivered(self, ids: list[int]) -> None:
        """Delivery receipts, as few CHAT_DELIVERED packets as their limit allows."""
        batch = messages.MAX_RECEIPT_IDS
        for start in range(0, len(ids), batch):
            self.kernel.send(PacketType.CHAT_DELIVERED, messages.ChatDelivered(ids=ids[start:start + batch]))

    def _on_status(self, body: dict) -> None:
        peer, status, at = body["peer"], body["status"], body["at"]
        with self._lock:
            sent = self.conversations.get(peer, {})
            if status == "delivered":
                for message_id in body.get("ids", []):
                    if message_id in sent:
                        sent[message_id]["delivered_at"] = at
            elif status == "read":
                for message in sent.values():
                    if message["to"] == peer and message["id"] <= body["up_to"] and message["read_at"] is None:
                        message["read_at"] = at
                        message["delivered_at"] = message["delivered_at"] or at
        self.kernel.emit(EventKind.CHAT_STATUS, status=status, peer=peer, ids=body.get("ids"), up_to=body.get("up_to"),
                         at=at)

    def _on_typing(self, body: dict) -> None:
        self.kernel.emit(EventKind.TYPING, user_id=body["from"], typing=bool(body.get("typing", True)))

    def _on_kernel_event(self, event: "Event") -> None:
        if event.kind == EventKind.DISCONNECTED:
            with self._lock:
                self._ready = False
        elif event.kind == EventKind.LOGGED_OUT:
            with self._lock:
                self._ready = False
                dropped, self.outbox = list(self.outbox.values()), collections.OrderedDict()
                self.conversations.clear()
            for entry in dropped:
                if not entry.acked.done():
                    entry.acked.set_exception(ApiError(ErrorCode.NOT_AUTHENTICATED, "logged out"))
