"""`meeting-client`: open the desktop window (default), send or receive files from a terminal
(`send`, `receive`), or run a headless bot (`bot`)."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("send", "receive"):
        from .filecli import receive_main, send_main
        return (send_main if argv[0] == "send" else receive_main)(argv[1:])
    if argv and argv[0] == "bot":
        try:
            from .bot import main as bot_main
        except ImportError as exc:
            print(f"meeting-client bot is not available: {exc}", file=sys.stderr)
            return 2
        return bot_main(argv[1:])
    parser = argparse.ArgumentParser(prog="meeting-client", description="Real-Time Meeting desktop client")
    parser.add_argument("--server", default=None,
                        help="HOST:PORT to prefill, or several separated by commas (the servers of one cluster, "
                             "tried in turn); default: the last used")
    parser.add_argument("--tls-ca", default=None, help="speak TLS; trust the server's certificate by this CA file")
    parser.add_argument("--tls-pin", default=None,
                        help="speak TLS; trust the server whose certificate has this SHA-256 fingerprint")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from .ui.app import run
    except ImportError as exc:
        print(f"meeting-client: the desktop window is not available: {exc}", file=sys.stderr)
        return 2
    from .tls import TlsOptions
    return run(server=args.server, tls=TlsOptions.from_flags(args.tls_ca, args.tls_pin))
