"""Sliding-window counters for failed logins and per-user rate limits (thread-safe)."""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable


class SlidingWindow:
    """Counts events per key over the last ``window`` seconds."""

    def __init__(self, limit: int, window: float, clock=time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._events: dict[object, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _trim(self, key: object, now: float) -> collections.deque[float]:
        events = self._events.get(key)
        if events is None:
            events = self._events[key] = collections.deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        return events

    def retry_after(self, key: object) -> float:
        """Seconds until ``key`` is under its limit again; 0 if it is now."""
        now = self._clock()
        with self._lock:
            events = self._trim(key, now)
            if len(events) < self.limit:
                if not events:
                    self._events.pop(key, None)
                return 0.0
            return max(0.0, events[len(events) - self.limit] + self.window - now)

    def add(self, key: object) -> None:
        now = self._clock()
        with self._lock:
            self._trim(key, now).append(now)

    def hit(self, key: object) -> float:
        """Count one event if allowed; return 0, or the seconds to wait if over the limit.
        Counting before the work (a password check) is what keeps concurrent attempts from
        all passing the check before any of them is counted."""
        now = self._clock()
        with self._lock:
            events = self._trim(key, now)
            if len(events) >= self.limit:
                return max(0.0, events[len(events) - self.limit] + self.window - now)
            events.append(now)
            return 0.0

    def release(self, key: object) -> None:
        """Take back the latest event counted for ``key`` (the attempt it reserved succeeded)."""
        with self._lock:
            events = self._events.get(key)
            if events:
                events.pop()
                if not events:
                    del self._events[key]

    def clear(self, key: object) -> None:
        with self._lock:
            self._events.pop(key, None)


KNOWN_PAIRS_MAX = 100_000   # (account, address) pairs with a past successful login kept in memory


class LoginThrottle:
    """Failed password logins, counted before the password is checked.

    Every attempt reserves a place in two windows before hashing, and gives it back if the
    password was right: one per address (``per_address`` failures), and one per account
    (``per_account``). The account window is where an attacker could lock the owner out, so
    an address the account has logged in from before (a remembered pair, or a live session
    token created from it) has its own account window: the owner's usual address keeps
    working while strangers' guesses are throttled."""

    def __init__(self, per_account: int, per_address: int, window: float, clock=time.monotonic,
                 *, windows: Callable[[str, int, float], SlidingWindow] | None = None) -> None:
        """``windows(name, limit, seconds)`` makes the two windows: by default in this process;
        a cluster passes windows shared in Redis (server/cluster/limits.py)."""
        make = windows or (lambda name, limit, seconds: SlidingWindow(limit, seconds, clock))
        self.accounts = make("login_account", per_account, window)
        self.addresses = make("login_address", per_address, window)
        self._known: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def is_known(self, phone: str, address: str) -> bool:
        with self._lock:
            return (phone, address) in self._known

    def reserve(self, phone: str, address: str, known: bool) -> float:
        """Count an attempt; 0, or the seconds to wait (nothing is counted then)."""
        wait = self.addresses.hit(address)
        if wait:
            return wait
        wait = self.accounts.hit(self._account_key(phone, address, known))
        if wait:
            self.addresses.release(address)
        return wait

    def succeeded(self, phone: str, address: str, known: bool) -> None:
        """The password was right: the attempt is not a failure, and the address is known."""
        self.addresses.release(address)
        self.accounts.clear(self._account_key(phone, address, known))
        with self._lock:
            self._known[(phone, address)] = None
            self._known.move_to_end((phone, address))
            if len(self._known) > KNOWN_PAIRS_MAX:
                self._known.popitem(last=False)

    @staticmethod
    def _account_key(phone: str, address: str, known: bool) -> object:
        return (phone, address) if known else phone
