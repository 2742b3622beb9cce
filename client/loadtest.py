"""`meeting-loadtest`: simulated clients against a server (built in the operations issue)."""
from __future__ import annotations

import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    print("meeting-loadtest: the load test is not built yet (see the operations issue)", file=sys.stderr)
    return 2
