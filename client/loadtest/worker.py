"""One load-test process: an event loop driving its share of the simulated clients.

The scenarios (``scenarios/``) use the building blocks here; which scenario a process runs is
given to it (``worker_process``), so this module knows none of them.
"""
from __future__ import annotations

import asyncio
import random
import resource
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from client.servers import Address, format_address

from .metrics import Metrics
from .sim import SimClient, error_kind

PROGRESS_INTERVAL = 0.5
MAX_BEHIND = 1.0           # seconds a pacer may fall behind before it skips ahead (with on_behind)

Scenario = Callable[["Worker"], Awaitable[None]]   # what a process runs (see scenarios/)


@dataclass
class Settings:
    """Everything a worker needs (picklable: it crosses into spawned processes)."""

    scenario: str
    servers: list[Address] = field(default_factory=lambda: [("127.0.0.1", 8600)])   # clients go round robin
    clients: int = 100
    processes: int = 1
    ramp: float = 100.0          # new clients per second, all processes together
    concurrency: int = 48        # clients logging in at once, all processes together
    duration: float = 10.0       # seconds of steady load after everyone logged in
    heartbeat: float = 0.0       # seconds between heartbeats; 0 = what the server asks for
    timeout: float = 30.0        # seconds before a request counts as lost
    run_id: int = 0
    rate: float = 0.0            # chat: messages per second in total; 0 = flat out
    window: int = 8              # chat: unacknowledged messages per sender when flat out
    message_size: int = 64       # chat: bytes of text per message
    rooms: int = 2               # room: rooms
    members: int = 4             # room: members per room
    bitrate: int = 500_000       # room: video bits per second per publisher
    fps: int = 15                # room: video frames per second
    video_size: str = "320x240"  # room: encoded picture size
    audio: bool = True           # room: publish Opus audio too
    file_size: int = 4 * 1024 * 1024   # files: bytes per transfer
    tls_ca: str = ""             # TLS, verifying the server against this CA file
    tls_pin: str = ""            # TLS, trusting the certificate with this SHA-256 fingerprint
    clip: Any = None             # room: the pre-encoded media (client.loadtest.clip.Clip)


class Worker:
    def __init__(self, settings: Settings, index: int, t0: float,
                 report: Callable[[dict[str, Any]], None]) -> None:
        self.settings = settings
        self.index = index
        self.metrics = Metrics(t0)
        self.report = report
        self._phase = "starting"
        self.target = 0
        self.stop = asyncio.Event()
        self.clients: list[SimClient] = []
        self.steady: list[float] = []   # [start, end] of the steady phase (monotonic)
        self.random = random.Random(settings.run_id * 1000 + index)
        self.tls = None
        if settings.tls_ca or settings.tls_pin:
            from client.tls import TlsOptions
            self.tls = TlsOptions(settings.tls_ca or None, settings.tls_pin or None).build()

    @property
    def phase(self) -> str:
        return self._phase

    @phase.setter
    def phase(self, value: str) -> None:
        """Phase changes reach the parent at once (it samples the server while all are steady)."""
        self._phase = value
        self._send_progress()

    def _send_progress(self) -> None:
        self.report({"type": "progress", "proc": self.index, "phase": self._phase, "target": self.target,
                     **self.metrics.snapshot()})

    # -- shares and identities ------------------------------------------------------------------
    def share(self, total: int) -> int:
        """This process's part of ``total`` (the first processes take the remainder)."""
        base, extra = divmod(total, self.settings.processes)
        return base + (1 if self.index < extra else 0)

    def phone(self, i: int) -> str:
        return f"7{self.settings.run_id % 10**6:06d}{self.index:02d}{i:06d}"

    def server(self, i: int) -> Address:
        """Client ``i`` of this process connects to the servers round robin (offset by the
        process, so every process spreads its clients alike). The two clients of a pair are
        consecutive: with several servers they are on different ones."""
        servers = self.settings.servers
        return servers[(self.index + i) % len(servers)]

    # -- building blocks ----------------------------------------------------------------------------
    async def login_client(self, i: int, nickname: str = "") -> SimClient | None:
        """Connect, HELLO, REGISTER, LOGIN; None (error recorded) if any step failed."""
        s = self.settings
        host, port = self.server(i)
        # figures per server only when there are several (the report shows them then)
        metrics = self.metrics.for_server(format_address((host, port))) if len(s.servers) > 1 else self.metrics
        client = SimClient(metrics, self.phone(i), nickname or f"load{self.index}-{i}")
        started = time.monotonic()
        try:
            await client.connect(host, port, timeout=s.timeout, tls=self.tls)
            await client.hello()
            await client.register_and_login()
        except (Exception, asyncio.TimeoutError) as exc:
            client.metrics.error(error_kind(exc) if not isinstance(exc, asyncio.TimeoutError) else "connect: timeout")
            client.abort()
            return None
        client.metrics.latency("login", started)
        client.metrics.count("logged_in")
        self.clients.append(client)
        return client

    async def login_many(self, count: int, nickname: Callable[[int], str] | None = None,
                         on_ready: Callable[[int, SimClient], None] | None = None) -> list[SimClient | None]:
        """Log ``count`` clients in at this process's share of the ramp rate, at most
        this process's share of ``concurrency`` at a time; ``on_ready`` runs as each one is
        logged in. Results keep their index (None for a client that failed)."""
        s = self.settings
        rate = max(s.ramp / s.processes, 0.001)
        gate = asyncio.Semaphore(max(1, s.concurrency // s.processes))
        results: list[SimClient | None] = [None] * count
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(i: int) -> None:
            async with gate:
                results[i] = await self.login_client(i, nickname(i) if nickname else "")
            if on_ready is not None and results[i] is not None:
                on_ready(i, results[i])

        tasks = []
        for i in range(count):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        return results

    async def heartbeats(self, client: SimClient) -> None:
        """Heartbeat like a real client until the stop, recording the round trip as
        ``heartbeat_rtt`` in the steady phase and ``heartbeat_rtt_ramp`` before it."""
        interval = self.settings.heartbeat or client.heartbeat_interval
        await self.sleep_or_stop(self.random.uniform(0, interval))
        while not self.stop.is_set() and client.connected:
            try:
                await client.heartbeat("heartbeat_rtt" if self.phase == "steady" else "heartbeat_rtt_ramp")
            except Exception as exc:
                self.metrics.error(error_kind(exc))
            await self.sleep_or_stop(interval)

    async def sleep_or_stop(self, seconds: float) -> None:
        """Sleep, waking early if the run stops (a task per wait: not for a paced message,
        see ``pace``)."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def pace(self, interval: float, send: Callable[[], None], alive: Callable[[], bool],
             on_behind: Callable[[], None] | None = None) -> None:
        """Call ``send`` every ``interval`` seconds, from a random phase, while the run goes on
        and ``alive()``: one timer per call, no task or future. A late call is made up at
        once; with ``on_behind``, a pacer more than ``MAX_BEHIND`` late (an overloaded
        generator) calls it and starts again from now instead of sending a burst."""
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.random.uniform(0, interval)

        def tick() -> None:
            nonlocal next_at
            if self.stop.is_set() or not alive():
                return
            send()
            next_at += interval
            if on_behind is not None and loop.time() - next_at > MAX_BEHIND:
                on_behind()
                next_at = loop.time()
            loop.call_at(next_at, tick)
        loop.call_at(next_at, tick)

    async def hold(self, seconds: float) -> None:
        """The steady phase: measured load for ``seconds`` (or until every client has lost
        its connection), then stop everything."""
        self.phase = "steady"
        self.steady = [time.monotonic(), 0.0]
        if self.clients:
            await asyncio.wait([c.closed for c in self.clients], timeout=seconds)
        self.steady[1] = time.monotonic()
        self.stop.set()

    async def close_all(self) -> None:
        self.phase = "closing"
        for client in self.clients:
            client.close()
        if self.clients:
            await asyncio.wait([c.closed for c in self.clients], timeout=10)

    # -- running ----------------------------------------------------------------------------------------
    async def _progress(self) -> None:
        while True:
            self._send_progress()
            await asyncio.sleep(PROGRESS_INTERVAL)

    async def run(self, scenario: Scenario) -> None:
        progress = asyncio.create_task(self._progress())
        try:
            await scenario(self)
        finally:
            await self.close_all()
            progress.cancel()


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def worker_process(settings: Settings, scenario: Scenario, index: int, t0: float, queue: Any) -> None:
    """Entry point of a spawned load-test process (``scenario`` crosses by its name)."""
    try:
        raise_fd_limit(settings.clients // max(1, settings.processes) * 2 + 256)
        worker = Worker(settings, index, t0, queue.put)
        asyncio.run(worker.run(scenario))
        queue.put({"type": "result", "proc": index, "metrics": worker.metrics.dump(), "steady": worker.steady})
    except BaseException:
        queue.put({"type": "failed", "proc": index, "error": traceback.format_exc()})
