"""The offline spool: files for recipients who were offline, kept on disk until delivered.

Layout: ``<spool_dir>/<transfer id>.part`` while the sender uploads, renamed to
``<spool_dir>/<transfer id>`` once the SHA-256 matched and the data was fsynced. Names on the
server's disk are only ever the hex transfer id, never anything a user typed.

All disk work here runs on the worker pool. ``Strand`` keeps the jobs of one transfer in
order (a chunk is written before the next, a cancel after the writes before it) without
holding a worker while there is nothing to do.
"""
from __future__ import annotations

import collections
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from common.errors import ApiError, ErrorCode

from .storage.files import SPOOL_STATES, FileRecord, SpoolQuotaExceeded

if TYPE_CHECKING:
    from .storage import Storage

log = logging.getLogger("server.spool")

T = TypeVar("T")

PART_SUFFIX = ".part"
HASH_BLOCK = 1024 * 1024
FREE_MARGIN = 64 * 1024 * 1024   # keep this much disk free for the database and logs
ORPHAN_MIN_AGE = 60.0           # seconds
STRAND_BATCH = 32                # jobs run before a strand yields its worker to others
LOCK_WAIT = 5.0                  # seconds a writer waits for the previous writer of a file


class Strand:
    """Runs submitted jobs one after another on a shared pool, in submission order."""

    def __init__(self, pool: Executor) -> None:
        self._pool = pool
        self._jobs: collections.deque[tuple[Callable[..., Any], tuple]] = collections.deque()
        self._lock = threading.Lock()
        self._running = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._jobs.append((fn, args))
            if self._running:
                return
            self._running = True
        self._schedule()

    def _schedule(self) -> None:
        try:
            self._pool.submit(self._run)
        except RuntimeError:  # the pool is shut down: the server is stopping
            with self._lock:
                self._jobs.clear()
                self._running = False

    def _run(self) -> None:
        for _ in range(STRAND_BATCH):
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                fn, args = self._jobs.popleft()
            try:
                fn(*args)
            except Exception:
                log.exception("spool job %r failed", fn)
        self._schedule()


def disk_error(exc: OSError) -> ApiError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ApiError(ErrorCode.DISK_FULL, "the server's disk is full")
    return ApiError(ErrorCode.INTERNAL, "the server could not store the file")


class SpoolBusy(OSError):
    """Another writer (another node, or this one before the sender came back) holds the file."""


class SpoolWriter:
    """Appends one upload to its ``.part`` file, hashing as it goes.

    The writer holds an exclusive ``flock`` on the file while it is open: when a sender comes
    back on another node (sharing the spool directory) while the node it left still writes
    the chunks it had queued, the new writer waits for them before it hashes what is there."""

    def __init__(self, path: Path, resume: bool, lock_wait: float = LOCK_WAIT) -> None:
        self.path = path
        self.hasher = hashlib.sha256()
        self.size = 0
        self._guard = threading.Lock()
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            self._lock(lock_wait)
            if resume:
                self._rehash()
            else:
                os.ftruncate(self.fd, 0)
        except BaseException:
            self.close()
            raise

    def _lock(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SpoolBusy(errno.EBUSY, f"{self.path.name} is still being written elsewhere") from None
                time.sleep(0.02)

    def _rehash(self) -> None:
        """After a restart: hash what is already on disk and append after it."""
        with open(self.path, "rb") as fh:
            while block := fh.read(HASH_BLOCK):
                self.hasher.update(block)
                self.size += len(block)
        os.lseek(self.fd, self.size, os.SEEK_SET)

    def write(self, data: memoryview) -> None:
        """Append ``data`` whole (nothing once closed). Raises OSError (ENOSPC when the disk
        is full)."""
        with self._guard:
            if self.fd < 0:
                return
            view = data
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            self.hasher.update(data)
            self.size += len(data)

    def finish(self) -> str:
        """fsync and close; returns the SHA-256 of everything written."""
        with self._guard:
            os.fsync(self.fd)
            self._close()
        return self.hasher.hexdigest()

    def close(self) -> None:
        """Any thread: waits for a write in progress, so the file ends at a whole chunk, and
        releases the lock for the next writer of the file."""
        with self._guard:
            self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Spool:
    """The spool directory and its quotas: ``quota`` bytes in all, ``user_quota`` per sender
    (so one user cannot take the whole spool from everybody).

    In a cluster every node uses the same directory (one host's workers share the data
    directory; machines share a mount, see docs/OPERATIONS.md), so a file spooled through one
    node is read by whichever node its recipient logs in to, and an upload continues on
    whichever node its sender comes back to. The quotas are counted in the database, which
    every node shares (``FileStore.create_spool_file``)."""

    def __init__(self, directory: Path, quota: int, user_quota: int) -> None:
        self.directory = directory
        self.quota = quota
        self.user_quota = user_quota
        self._reserve_lock = threading.Lock()

    def part_path(self, file_id: str) -> Path:
        return self.directory / (file_id + PART_SUFFIX)

    def final_path(self, file_id: str) -> Path:
        return self.directory / file_id

    def ensure_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def reserve(self, size: int, create: Callable[[int, int], T]) -> T:
        """Check the free disk space, then run ``create(user_quota, quota)``, which stores the
        row holding the reservation if the quotas allow (``FileStore.create_spool_file``);
        returns what it returns."""
        self.ensure_directory()
        if shutil.disk_usage(self.directory).free < size + FREE_MARGIN:
            raise ApiError(ErrorCode.DISK_FULL, "the server's disk is too full to keep this file")
        try:
            with self._reserve_lock:
                return create(self.user_quota, self.quota)
        except SpoolQuotaExceeded as exc:
            if exc.per_user:
                raise ApiError(ErrorCode.SPOOL_FULL,
                               f"your files waiting for offline friends already take {exc.reserved} of the "
                               f"{exc.limit} bytes each user may keep on the server",
                               reserved=exc.reserved, limit=exc.limit) from None
            raise ApiError(ErrorCode.SPOOL_FULL) from None

    def open_writer(self, file_id: str, resume: bool = False) -> SpoolWriter:
        try:
            return SpoolWriter(self.part_path(file_id), resume)
        except SpoolBusy as exc:
            raise ApiError(ErrorCode.UNAVAILABLE, f"the upload is still being written: {exc.strerror}; "
                           "try again in a moment", retry_after=1.0) from None
        except OSError as exc:
            raise disk_error(exc) from None

    def commit(self, file_id: str) -> None:
        os.replace(self.part_path(file_id), self.final_path(file_id))

    def open_reader(self, file_id: str) -> int:
        try:
            return os.open(self.final_path(file_id), os.O_RDONLY)
        except FileNotFoundError:
            raise ApiError(ErrorCode.NO_SUCH_TRANSFER, "the spooled file is gone") from None

    def remove(self, file_id: str) -> None:
        for path in (self.part_path(file_id), self.final_path(file_id)):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("cannot remove spool file %s: %s", path.name, exc)

    def remove_orphans(self, keep: set[str], min_age: float = ORPHAN_MIN_AGE) -> int:
        """Delete spool files no open transfer owns (left by a crash or a failed cleanup).

        Files younger than ``min_age`` seconds are left alone: their row may be committed a
        moment after the list of ids was read."""
        if not self.directory.is_dir():
            return 0
        removed = 0
        now = time.time()
        for path in self.directory.iterdir():
            file_id = path.name[:-len(PART_SUFFIX)] if path.name.endswith(PART_SUFFIX) else path.name
            try:
                if file_id in keep or not path.is_file() or now - path.stat().st_mtime < min_age:
                    continue
                path.unlink()
            except OSError:
                continue
            removed += 1
        return removed

    def sweep_expired(self, storage: "Storage", now_ms: int) -> list[FileRecord]:
        """Expire spooled files past their time: mark the row, delete the data. Returns them."""
        expired = []
        for record in storage.expired_spool_files(now_ms):
            if storage.set_file_state(record.id, "expired", only_from=SPOOL_STATES):
                self.remove(record.id)
                expired.append(record)
        return expired
