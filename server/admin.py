"""Admin status (issue 7 completes it): figures from the running server over a local socket."""
from __future__ import annotations

import sys

from .config import ServerConfig


def print_status(config: ServerConfig) -> int:
    print("meeting-server status: the admin socket is not built yet", file=sys.stderr)
    return 1
