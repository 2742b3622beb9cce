"""A stand-in for systemd's notify socket, for the daemon and supervisor tests."""
from __future__ import annotations

import socket
import threading
import time


class NotifySocket:
    """A stand-in for systemd's notify socket: collects (time, message) datagrams."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def wait_for(self, prefix: str, timeout: float = 15.0, start: int = 0) -> int:
        """Index of the first message (from ``start``) with a line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for index, (_, text) in enumerate(self.messages[start:], start):
                    if any(line.startswith(prefix) for line in text.splitlines()):
                        return index
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {prefix!r} within {timeout} s; got {[m for _, m in self.messages]}")
                self._cond.wait(remaining)

    def lines(self) -> list[str]:
        with self._cond:
            return [text for _, text in self.messages]

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(2)
