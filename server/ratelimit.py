"""Per-user and per-address rate limits, and per-packet-type frame size limits.

Rate limits are token buckets keyed by user id (or, for registration and room joins, also by
the peer's address, so many accounts from one place share one allowance): a user may spend a
minute's allowance at once, then earns it back steadily. A user over the limit gets
RATE_LIMITED with ``retry_after`` (seconds); nobody else is affected. Handlers spend a token
with one line, e.g. ``server.rate_limits.message(req.user_id)`` before storing a chat message.

Frame limits are checked on each frame header before its body is buffered (see
``common.frame.FrameDecoder``). They are tighter than the protocol's: before login a peer may
only send small frames, and types the server has no handler for get a tiny allowance.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable

from common import limits, packets
from common.errors import ApiError, ErrorCode
from common.packets import BINARY_TYPES

from .mediator import PRE_LOGIN_TYPES

if TYPE_CHECKING:
    from .config import ServerConfig

PRUNE_ABOVE = 4096   # buckets kept before full (idle) ones are forgotten

# Bodies of the packets a peer may send before logging in (phone, password, token, version).
PRE_LOGIN_BODY = 4 * 1024
# Types without a handler are answered UNKNOWN_TYPE; their body is never needed.
UNHANDLED_BODY = 1024


class TokenBucket:
    """``per_minute`` tokens per key, refilled continuously; thread-safe. 0 means unlimited."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[object, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()
        self.refused = 0

    def take(self, key: object) -> float:
        """Spend one token; 0.0 if allowed, else the seconds until one is available."""
        if self.per_minute <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                self.refused += 1
                return (1.0 - tokens) / self.rate
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > PRUNE_ABOVE:
                self._prune(now)
            return 0.0

    def _prune(self, now: float) -> None:
        full = [k for k, (tokens, at) in self._buckets.items()
                if tokens + (now - at) * self.rate >= self.per_minute]
        for key in full:
            del self._buckets[key]


class RateLimits:
    """The rate limits of ServerConfig: per user (messages, friend requests, room creations and
    joins, file offers, media-state changes, typing notices, user searches, profile changes,
    host controls) and per address (registrations, room joins)."""

    def __init__(self, config: "ServerConfig", clock: Callable[[], float] = time.monotonic,
                 bucket: Callable[[str, int], "TokenBucket"] | None = None) -> None:
        """``bucket(name, per_minute)`` makes each limit's bucket: by default in this process;
        a cluster passes shared buckets (server/cluster/limits.py)."""
        make = bucket or (lambda name, per_minute: TokenBucket(per_minute, clock))
        self.messages = make("messages", config.messages_per_minute)
        self.friend_requests = make("friend_requests", config.friend_requests_per_minute)
        self.rooms = make("rooms", config.rooms_per_minute)
        self.room_joins = make("room_joins", config.room_joins_per_minute)
        self.file_offers = make("file_offers", config.file_offers_per_minute)
        self.media_states = make("media_states", config.media_states_per_minute)
        self.typing_notices = make("typing_notices", config.typing_per_minute)
        self.user_searches = make("user_searches", config.user_searches_per_minute)
        self.profile_updates = make("profile_updates", config.profile_updates_per_minute)
        self.room_controls = make("room_controls", config.room_controls_per_minute)
        self.registrations_by_address = make("registrations_by_address", config.registrations_per_minute_per_address)
        self.room_joins_by_address = make("room_joins_by_address", config.room_joins_per_minute_per_address)

    def status(self) -> dict[str, int]:
        """Refusals since the start, for the admin status."""
        return {"rate_limited_messages": self.messages.refused,
                "rate_limited_friend_requests": self.friend_requests.refused,
                "rate_limited_rooms": self.rooms.refused,
                "rate_limited_room_joins": self.room_joins.refused + self.room_joins_by_address.refused,
                "rate_limited_file_offers": self.file_offers.refused,
                "rate_limited_media_states": self.media_states.refused,
                "rate_limited_typing": self.typing_notices.refused,
                "rate_limited_user_searches": self.user_searches.refused,
                "rate_limited_profile_updates": self.profile_updates.refused,
                "rate_limited_room_controls": self.room_controls.refused,
                "rate_limited_registrations": self.registrations_by_address.refused}

    def message(self, user_id: int) -> None:
        """A chat message (one-to-one or in a room); raises RATE_LIMITED when over the limit."""
        _spend(self.messages, user_id, "messages")

    def friend_request(self, user_id: int) -> None:
        _spend(self.friend_requests, user_id, "friend requests")

    def room_create(self, user_id: int) -> None:
        _spend(self.rooms, user_id, "meeting rooms created")

    def room_join(self, user_id: int, address: str) -> None:
        """Joining a meeting: slows anyone guessing meeting numbers or passwords, also with
        many accounts from one address."""
        _spend(self.room_joins, user_id, "attempts to join a meeting")
        _spend(self.room_joins_by_address, address, "attempts to join a meeting from your address")

    def registration(self, address: str) -> None:
        """Creating an account: many accounts from one address would multiply every per-user limit."""
        _spend(self.registrations_by_address, address, "accounts registered from your address")

    def media_state(self, user_id: int) -> None:
        """Camera/microphone/screen changes: each one is told to the whole meeting."""
        _spend(self.media_states, user_id, "camera, microphone or screen changes")

    def profile_update(self, user_id: int) -> None:
        """A profile or avatar change: each one is told to every online friend (and an avatar
        takes the one picture-decoding slot)."""
        _spend(self.profile_updates, user_id, "profile changes")

    def room_control(self, user_id: int) -> None:
        """A host's lock, mute or removal: each one is told to the whole meeting."""
        _spend(self.room_controls, user_id, "meeting controls")

    def typing(self, user_id: int) -> None:
        _spend(self.typing_notices, user_id, "typing notices")

    def user_search(self, user_id: int) -> None:
        """Looking a phone number up: slows anyone listing which numbers are registered."""
        _spend(self.user_searches, user_id, "user searches")

    def file_offer(self, user_id: int) -> None:
        """Offering a file: each offer holds a transfer and a row (and spool room) until it ends."""
        _spend(self.file_offers, user_id, "file offers")


def _spend(bucket: TokenBucket, key: object, what: str) -> None:
    wait = bucket.take(key)
    if wait:
        raise ApiError(ErrorCode.RATE_LIMITED,
                       f"too many {what} (limit {bucket.per_minute} per minute), "
                       f"try again in {wait:.1f} s",
                       retry_after=round(wait + 0.05, 1), limit=bucket.per_minute)


class FrameLimits:
    """The largest body the server buffers for a packet type, depending on login state.

    A body over ``common.frame.LARGE_BODY`` is allocated whole as soon as its header arrives;
    only a logged-in peer may declare one, so a bare header costs at most one legal frame per
    session."""

    def __init__(self, config: "ServerConfig", handled: Callable[[int], bool]) -> None:
        self.max_control_body = min(config.max_control_body, limits.MAX_CONTROL_BODY)
        self._handled = handled
        self._known: dict[tuple[bool, int], int] = {}   # (authenticated, handled type) -> limit

    def max_body(self, packet_type: int, authenticated: bool) -> int:
        """Asked for every frame header: the limits of handled types are worked out once (the
        handlers are all registered before the first connection); other types are not kept,
        so a peer sending random types cannot grow the table."""
        try:
            return self._known[authenticated, packet_type]
        except KeyError:
            pass
        limit = self._limit(packet_type, authenticated)
        if self._handled(packet_type):
            self._known[authenticated, packet_type] = limit
        return limit

    def _limit(self, packet_type: int, authenticated: bool) -> int:
        if packet_type in PRE_LOGIN_TYPES:
            return PRE_LOGIN_BODY
        if not self._handled(packet_type):
            return UNHANDLED_BODY
        if packet_type in BINARY_TYPES:
            limit = packets.max_body(packet_type)
        else:
            limit = self.max_control_body
        if not authenticated:
            # Nothing but the session packets is accepted before login; a correct client
            # never sends a bulky frame before its login reply.
            limit = min(limit, self.max_control_body)
        return limit

