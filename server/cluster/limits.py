"""Rate limits and login throttles shared by every node, in Redis.

``SharedTokenBucket`` and ``SharedWindow`` have the methods of ``server.ratelimit.TokenBucket``
and ``server.throttle.SlidingWindow``, so a per-user limit is the same with 1 or 8 processes.
Each decision is one Lua script (atomic; Redis's clock, so the nodes' clocks do not matter).

``SessionTokenBucket`` is for what only a user's own session spends, many times a second
(chat messages): a Redis round trip per message on the reactor cost more than the message
itself (see docs/PERFORMANCE.md), and one account has one session, on one node. So the node
holding the session decides alone, and the bucket's state follows the session: loaded from
Redis when the session is bound here, written back within ``FLUSH_INTERVAL`` of being spent.

While Redis cannot be reached, each falls back to its node-local twin (logged once per outage):
limits then hold per node instead of per cluster, and nobody is refused for Redis's sake.
"""
from __future__ import annotations

import logging
import secrets
import time

import redis

from ..ratelimit import TokenBucket
from ..throttle import SlidingWindow
from .store import UNREACHABLE, Keys

log = logging.getLogger("server.cluster.limits")

_NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"

# ARGV: capacity, tokens per ms. Returns "0" or the ms to wait, as a string (Lua numbers
# returned to Redis are truncated to integers).
_TAKE = _NOW_MS + """
local cap, rate = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(v[1]) or cap, tonumber(v[2]) or now
tokens = math.min(cap, tokens + (now - at) * rate)
local wait = 0
if tokens < 1 then
  wait = (1 - tokens) / rate
else
  tokens = tokens - 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 1000)
return tostring(wait)
"""

# ARGV: limit, window ms, member, add (1: count one if under the limit, 2: always count,
# 0: only look). Returns the ms to wait (0: under the limit).
_WINDOW = _NOW_MS + """
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local wait = 0
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  wait = math.max(0, tonumber(oldest[2]) + window - now)
end
if ARGV[4] == '2' or (ARGV[4] == '1' and wait == 0) then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
end
return tostring(wait)
"""


RETRY_AFTER_FAILURE = 1.0   # seconds without asking Redis after it failed (the reactor asks)


class _Fallback:
    """Logs the first failure of an outage and the recovery; after a failure, ``skip`` says
    to use the node-local limit for a second instead of waiting on Redis again (limits are
    checked on the reactor thread, which must not wait out a connect timeout per message)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False
        self._retry_at = 0.0

    def skip(self) -> bool:
        return self.down and time.monotonic() < self._retry_at

    def failed(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + RETRY_AFTER_FAILURE
        if not self.down:
            self.down = True
            log.warning("Redis unreachable (%s): %s hold per node until it is back", exc, self.what)

    def worked(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis reachable again: %s are shared by the cluster again", self.what)


class SharedTokenBucket:
    """``per_minute`` tokens per key across the cluster; 0 means unlimited. Thread-safe."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str, per_minute: int) -> None:
        self.client = client
        self.keys = keys
        self.name = name
        self.per_minute = per_minute
        self._take = client.register_script(_TAKE)
        self._local = TokenBucket(per_minute)
        self._fallback = _Fallback("rate limits")
        self.refused = 0

    def take(self, key: object) -> float:
        """Spend one token; 0.0 if allowed, else the seconds until one is available."""
        if self.per_minute <= 0:
            return 0.0
        if self._fallback.skip():
            return self._count(self._local.take(key))
        try:
            wait_ms = float(self._take(keys=[self.keys.bucket(self.name, key)],
                                       args=[self.per_minute, self.per_minute / 60000.0]))
        except UNREACHABLE as exc:
            self._fallback.failed(exc)
            wait = self._local.take(key)
        else:
            self._fallback.worked()
            wait = wait_ms / 1000.0
        return self._count(wait)

    def _count(self, wait: float) -> float:
        if wait:
            self.refused += 1
        return wait


FLUSH_INTERVAL = 0.5   # seconds: how stale a moved session's bucket can be


class SessionTokenBucket(TokenBucket):
    """A per-user token bucket decided on the node holding the user's session; its state is
    carried in Redis (``rate:NAME:USER``: tokens, wall-clock ms) when the session moves."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str, per_minute: int) -> None:
        super().__init__(per_minute)
        self.client = client
        self.keys = keys
        self.name = name
        self._dirty: set[object] = set()

    def take(self, key: object) -> float:
        wait = super().take(key)
        if self.per_minute > 0:
            with self._lock:
                self._dirty.add(key)
        return wait

    def load(self, key: object) -> None:
        """Worker thread, when the user's session is bound here: start from the cluster's state."""
        if self.per_minute <= 0:
            return
        tokens, at_ms = self.client.hmget(self.keys.bucket(self.name, key), "tokens", "at")
        with self._lock:
            if tokens is None or at_ms is None:
                self._buckets.pop(key, None)                       # full
                return
            earned = max(0.0, time.time() * 1000 - float(at_ms)) / 1000 * self.rate
            self._buckets[key] = (min(float(self.per_minute), float(tokens) + earned), self._clock())

    def flush(self) -> None:
        """Write the buckets spent since the last flush to Redis (the node's lease thread)."""
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            now = self._clock()
            states = {key: self._buckets.get(key, (float(self.per_minute), now)) for key in dirty}
        if not states:
            return
        wall_ms = time.time() * 1000
        ttl_ms = int(self.per_minute / self.rate * 1000) + 1000
        pipe = self.client.pipeline(transaction=False)
        for key, (tokens, at) in states.items():
            tokens = min(float(self.per_minute), tokens + (now - at) * self.rate)
            name = self.keys.bucket(self.name, key)
            pipe.hset(name, mapping={"tokens": repr(tokens), "at": repr(wall_ms)})
            pipe.pexpire(name, ttl_ms)
        try:
            pipe.execute()
        except UNREACHABLE:
            with self._lock:
                self._dirty |= set(states)                         # again once Redis is back
            raise


class SharedWindow:
    """Counts events per key over the last ``window`` seconds, across the cluster."""

    def __init__(self, client: redis.Redis, keys: Keys, name: str, limit: int, window: float) -> None:
        self.client = client
        self.keys = keys
        self.name = name
        self.limit = limit
        self.window = window
        self._script = client.register_script(_WINDOW)
        self._local = SlidingWindow(limit, window)
        self._fallback = _Fallback("login throttles")

    def _run(self, key: object, mode: str) -> float | None:
        if self._fallback.skip():
            return None
        try:
            wait_ms = float(self._script(keys=[self.keys.window(self.name, key)],
                                         args=[self.limit, int(self.window * 1000), secrets.token_hex(8), mode]))
        except UNREACHABLE as exc:
            self._fallback.failed(exc)
            return None
        self._fallback.worked()
        return wait_ms / 1000.0

    def retry_after(self, key: object) -> float:
        """Seconds until ``key`` is under its limit again; 0 if it is now."""
        wait = self._run(key, "0")
        return self._local.retry_after(key) if wait is None else wait

    def add(self, key: object) -> None:
        if self._run(key, "2") is None:
            self._local.add(key)

    def hit(self, key: object) -> float:
        """Count one event if allowed; return 0, or the seconds to wait if over the limit."""
        wait = self._run(key, "1")
        return self._local.hit(key) if wait is None else wait

    def release(self, key: object) -> None:
        """Take back the latest event counted for ``key`` (the attempt it reserved succeeded)."""
        if not self._fallback.skip():
            try:
                self.client.zpopmax(self.keys.window(self.name, key))
                return
            except UNREACHABLE as exc:
                self._fallback.failed(exc)
        self._local.release(key)

    def clear(self, key: object) -> None:
        try:
            self.client.delete(self.keys.window(self.name, key))
        except UNREACHABLE as exc:
            self._fallback.failed(exc)
        self._local.clear(key)
