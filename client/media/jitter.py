"""An adaptive audio jitter buffer: reorders by sequence number, reports losses, adapts its depth.

The network thread ``put``s packets as they arrive; the playout clock ``pop``s one frame per
20 ms. The target depth follows the recent spread of transit times (arrival minus capture,
the sender's clock offset cancels out): the 95th percentile over the last ~2 s minus the
minimum, plus one frame, clamped to [min_delay, max_delay]. Playout starts once that much is
buffered; an underrun goes back to buffering (the depth grows by itself), and a buffer that
holds well over its target drops a frame to catch up (the depth shrinks when the link calms).
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass

SEQ_MOD = 1 << 32
RESET_DISTANCE = 3000          # a jump this far (60 s of audio) is a new stream, not loss
RESTART_DISTANCE = 50          # a packet this far behind playout (1 s): the sender restarted its numbering


def seq_diff(a: int, b: int) -> int:
    """a - b on the wrapping u32 sequence numbers."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= SEQ_MOD // 2 else d


@dataclass
class Playout:
    status: str            # "play" (payload set), "lost" (conceal this frame), "wait" (nothing due)
    seq: int = 0
    capture_us: int = 0
    payload: bytes | None = None


@dataclass
class JitterStats:
    received: int = 0
    played: int = 0
    lost: int = 0
    late: int = 0
    duplicate: int = 0
    dropped_to_catch_up: int = 0
    underruns: int = 0


class JitterBuffer:
    def __init__(self, frame_ms: int = 20, min_delay_ms: int = 40, max_delay_ms: int = 400,
                 window: int = 100) -> None:
        self.frame_us = frame_ms * 1000
        self.min_delay_us = min_delay_ms * 1000
        self.max_delay_us = max_delay_ms * 1000
        self._packets: dict[int, tuple[int, bytes]] = {}
        self._transits: collections.deque[int] = collections.deque(maxlen=window)
        self._next: int | None = None
        self._newest: int | None = None
        self._playing = False
        self._last_capture = 0
        self._lock = threading.Lock()
        self.stats = JitterStats()

    # -- network side ----------------------------------------------------------------------------
    def put(self, seq: int, capture_us: int, payload: bytes, arrival_us: int | None = None) -> None:
        arrival = time.time_ns() // 1000 if arrival_us is None else arrival_us
        with self._lock:
            self.stats.received += 1
            if self._newest is not None and (abs(seq_diff(seq, self._newest)) > RESET_DISTANCE
                                             or seq_diff(seq, self._newest) < -RESTART_DISTANCE):
                self._reset()
            if self._playing and seq_diff(seq, self._next) < 0:
                self.stats.late += 1
                return
            if seq in self._packets:
                self.stats.duplicate += 1
                return
            self._packets[seq] = (capture_us, payload)
            self._transits.append(arrival - capture_us)
            if self._newest is None or seq_diff(seq, self._newest) > 0:
                self._newest = seq
            if self._next is None:
                self._next = seq
            elif not self._playing and seq_diff(seq, self._next) < 0:
                self._next = seq    # reordered before playout began: start from the earliest

    def _reset(self) -> None:
        self._packets.clear()
        self._transits.clear()
        self._next = self._newest = None
        self._playing = False

    # -- playout side ----------------------------------------------------------------------------
    @property
    def target_delay_us(self) -> int:
        with self._lock:
            return self._target()

    def _target(self) -> int:
        if len(self._transits) < 2:
            return self.min_delay_us
        ordered = sorted(self._transits)
        spread = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] - ordered[0]
        return max(self.min_delay_us, min(self.max_delay_us, spread + self.frame_us))

    def _depth_frames(self) -> int:
        if self._next is None or self._newest is None:
            return 0
        return seq_diff(self._newest, self._next) + 1

    def depth_ms(self) -> float:
        with self._lock:
            return self._depth_frames() * self.frame_us / 1000

    def pop(self) -> Playout:
        """The frame to play now (called once per frame period by the playout clock)."""
        with self._lock:
            if self._next is None:
                return Playout("wait")
            target_frames = math.ceil(self._target() / self.frame_us)
            depth = self._depth_frames()
            if not self._playing:
                if depth < target_frames:
                    return Playout("wait")
                self._playing = True
            if depth <= 0:
                self._playing = False
                self.stats.underruns += 1
                return Playout("wait")
            while depth > target_frames + 3 and self._next in self._packets:
                del self._packets[self._next]   # far above target: skip a frame to shrink the delay
                self._next = (self._next + 1) % SEQ_MOD
                self.stats.dropped_to_catch_up += 1
                depth -= 1
            seq = self._next
            self._next = (seq + 1) % SEQ_MOD
            item = self._packets.pop(seq, None)
            if item is None:
                self.stats.lost += 1
                self._last_capture += self.frame_us
                return Playout("lost", seq, self._last_capture)
            self.stats.played += 1
            self._last_capture = item[0]
            return Playout("play", seq, item[0], item[1])
