"""What a load-test process measures: latency samples with their time, counters, errors.

Samples are kept raw (two float arrays per metric: when, in seconds since the run started,
and how long, in milliseconds) so percentiles are exact after merging the processes and the
latency-over-time plot can be drawn. 10^6 samples cost 16 MB, fine for minutes of load.
"""
from __future__ import annotations

import collections
import math
import time
from array import array
from typing import Any, Iterable


class Metrics:
    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.when: dict[str, array] = {}
        self.ms: dict[str, array] = {}
        self.counters: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.servers: dict[str, Metrics] = {}    # the same figures per server ("host:port")

    def for_server(self, server: str) -> "ServerMetrics":
        """What one client records: counted in these totals and in ``servers[server]``."""
        if server not in self.servers:
            self.servers[server] = Metrics(self.t0)
        return ServerMetrics(self, self.servers[server])

    def latency(self, name: str, started: float, ended: float | None = None) -> float:
        """Record one latency between two ``time.monotonic()`` readings; returns it in ms."""
        ended = time.monotonic() if ended is None else ended
        value = (ended - started) * 1000.0
        if name not in self.ms:
            self.when[name] = array("d")
            self.ms[name] = array("d")
        self.when[name].append(started - self.t0)
        self.ms[name].append(value)
        return value

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    # -- crossing the process boundary ---------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        return {"when": {k: v.tobytes() for k, v in self.when.items()},
                "ms": {k: v.tobytes() for k, v in self.ms.items()},
                "counters": dict(self.counters), "errors": dict(self.errors),
                "servers": {name: server.dump() for name, server in self.servers.items()}}

    def merge(self, dumped: dict[str, Any]) -> None:
        for name, server in dumped.get("servers", {}).items():
            self.servers.setdefault(name, Metrics(self.t0)).merge(server)
        for name, raw in dumped["ms"].items():
            if name not in self.ms:
                self.when[name] = array("d")
                self.ms[name] = array("d")
            self.ms[name].frombytes(raw)
            self.when[name].frombytes(dumped["when"][name])
        self.counters.update(dumped["counters"])
        self.errors.update(dumped["errors"])

    def snapshot(self) -> dict[str, Any]:
        """Small progress figures: counters, error total, sample counts."""
        return {"counters": dict(self.counters), "errors": sum(self.errors.values()),
                "samples": {k: len(v) for k, v in self.ms.items()}}


class ServerMetrics:
    """A client's view of the metrics: each figure goes to the totals and to its server's."""

    def __init__(self, total: Metrics, server: Metrics) -> None:
        self.total = total
        self.server = server

    def latency(self, name: str, started: float, ended: float | None = None) -> float:
        ended = time.monotonic() if ended is None else ended
        self.server.latency(name, started, ended)
        return self.total.latency(name, started, ended)

    def count(self, name: str, n: int = 1) -> None:
        self.total.count(name, n)
        self.server.count(name, n)

    def error(self, kind: str) -> None:
        self.total.error(kind)
        self.server.error(kind)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(values: Iterable[float], seconds: float) -> dict[str, float]:
    ordered = sorted(values)
    count = len(ordered)
    return {
        "count": count,
        "rate_per_s": count / seconds if seconds > 0 else math.nan,
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else math.nan,
    }
