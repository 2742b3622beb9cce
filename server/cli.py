"""`meeting-server`: run the server (default), create the schema, or show live status."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Sequence

from .config import ConfigError, load_config
from .logsetup import setup_logging
from .storage import StorageError, open_storage

log = logging.getLogger("server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meeting-server", description="Real-Time Meeting server")
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "init-db", "status"),
                        help="serve (default), init-db (create the schema), status (live figures)")
    parser.add_argument("--config", help="INI file (default /etc/real-time-meeting/server.ini if present)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8600; 0 picks a free one)")
    parser.add_argument("--db", help="sqlite:///path/to/file.db (default) or mysql://user:pass@host:port/db")
    parser.add_argument("--workers", type=int, help="worker threads for blocking work (default 8)")
    parser.add_argument("--data-dir", dest="data_dir", help="directory for the SQLite file, spool and admin socket")
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate chain: serve TLS")
    parser.add_argument("--tls-key", dest="tls_key", help="PEM private key for --tls-cert")
    parser.add_argument("--init-db", dest="init_db", action="store_true",
                        help="with serve: create the schema first if it is missing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: getattr(args, k) for k in ("host", "port", "db", "workers", "data_dir", "log_level",
                                               "tls_cert", "tls_key")}
    try:
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"meeting-server: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level)
    if args.command == "status":
        from .admin import print_status
        return print_status(config)
    try:
        storage = open_storage(config.db)
        embedded_first_run = storage.backend == "sqlite" and storage.db.schema_version() is None
        if args.command == "init-db" or args.init_db or embedded_first_run:
            storage.init_schema()
            log.info("schema ready in %s", storage.backend)
            if args.command == "init-db":
                storage.close()
                return 0
        from .app import Server
        server = Server(config, storage)
        server.listen()
    except (StorageError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    install_signal_handlers(server)
    server.serve_forever()
    return 0


def install_signal_handlers(server) -> None:
    def on_stop(signum, _frame) -> None:
        server.request_shutdown(f"received {signal.Signals(signum).name}")
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
