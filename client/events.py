"""What the client core tells the UI, bots and tests: its events, and where its session stands."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable


class SessionState(StrEnum):
    """``kernel.state``: offline → connecting → connected (HELLO answered) → online (logged in);
    reconnecting while a lost link is being restored."""

    OFFLINE = "offline"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    ONLINE = "online"
    RECONNECTING = "reconnecting"


class EventKind(StrEnum):
    """Every kind of event the core emits (a ``str``: listeners may compare with plain strings).
    Each module's docstring says what data its events carry."""

    # the session (kernel)
    LOGGED_IN = "logged_in"
    LOGGED_OUT = "logged_out"
    RECONNECTED = "reconnected"
    RECONNECTING = "reconnecting"
    RECONNECT_FAILED = "reconnect_failed"
    DISCONNECTED = "disconnected"
    SESSION_EXPIRED = "session_expired"
    KICKED = "kicked"
    GOING_AWAY = "going_away"
    HEARTBEAT = "heartbeat"
    SERVER_ERROR = "server_error"
    PROFILE_CHANGED = "profile_changed"
    # friends
    FRIENDS_CHANGED = "friends_changed"
    FRIEND_REQUEST = "friend_request"
    FRIEND_REQUESTS_CHANGED = "friend_requests_changed"
    FRIEND_ANSWER = "friend_answer"
    FRIEND_ADDED = "friend_added"
    FRIEND_REMOVED = "friend_removed"
    FRIEND_ONLINE = "friend_online"
    FRIEND_OFFLINE = "friend_offline"
    # chat
    CHAT_MESSAGE = "chat_message"
    CHAT_SENT = "chat_sent"
    CHAT_PENDING = "chat_pending"
    CHAT_FAILED = "chat_failed"
    CHAT_STATUS = "chat_status"
    TYPING = "typing"
    UNREAD_LOADED = "unread_loaded"
    # files
    FILE_OFFER = "file_offer"
    FILE_OFFERED = "file_offered"
    FILE_ACCEPTED = "file_accepted"
    FILE_DECLINED = "file_declined"
    FILE_PROGRESS = "file_progress"
    FILE_SPOOLED = "file_spooled"
    FILE_DONE = "file_done"
    FILE_CANCELLED = "file_cancelled"
    FILE_FAILED = "file_failed"
    # meetings
    ROOM_MEMBERS = "room_members"
    ROOM_CHAT = "room_chat"
    ROOM_MUTE = "room_mute"
    ROOM_LEFT = "room_left"
    ROOM_CLOSED = "room_closed"
    ROOM_REMOVED = "room_removed"
    ROOM_WAITING = "room_waiting"
    ROOM_REFUSED = "room_refused"
    ROOM_WAITING_LIST = "room_waiting_list"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    data: dict = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


class EventRecorder:
    """Keeps every event it hears and lets a thread wait for one (tests, bots, load test)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cond = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, kind: str, predicate: Callable[[Event], bool] = lambda e: True,
                 timeout: float = 10.0, start: int = 0) -> Event:
        """The first event of ``kind`` (from index ``start``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for event in self.events[start:]:
                    if event.kind == kind and predicate(event):
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = [e.kind for e in self.events[-10:]]
                    raise TimeoutError(f"no '{kind}' event within {timeout} s (last events: {kinds})")
                self._cond.wait(remaining)

    def count(self, kind: str, predicate: Callable[[Event], bool] = lambda e: True) -> int:
        with self._cond:
            return sum(1 for e in self.events if e.kind == kind and predicate(e))

    def mark(self) -> int:
        with self._cond:
            return len(self.events)
