"""`meeting-server`: run the server (default), create the schema, or show live status."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any, Sequence

from .config import ConfigError, apply_reload, field_names, load_config
from .gctune import tune_for_server
from .logsetup import setup_logging
from .storage import StorageError, open_storage
from .storage.sql import SCHEMA_VERSION
from .supervisor import worker_config

log = logging.getLogger("server")

# Descriptors the server needs besides one per connection: listener, admin socket, wake-up
# pair, database, spool files being written.
FD_MARGIN = 256


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meeting-server", description="Real-Time Meeting server",
                                     epilog="Every configuration key can also come from the INI file "
                                            "([server] section) or a MEETING_<KEY> environment variable; "
                                            "flags win over the environment, which wins over the file. "
                                            "See docs/OPERATIONS.md.")
    parser.add_argument("command", nargs="?", default="serve", choices=("serve", "init-db", "status"),
                        help="serve (default), init-db (create the schema), status (live figures)")
    parser.add_argument("--config", help="INI file (default $MEETING_CONFIG, else "
                                         "/etc/real-time-meeting/server.ini if present)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8600; 0 picks a free one)")
    parser.add_argument("--db", help="sqlite:///path/to/file.db (default) or mysql://user:pass@host:port/db")
    parser.add_argument("--workers", help="server processes sharing the port: a number or auto (one per core); "
                                          "more than 1 needs --redis and a MySQL --db (default 1)")
    parser.add_argument("--redis", help="redis://host:port for the live state shared by several processes or "
                                        "machines (default none: a single process)")
    parser.add_argument("--node-name", dest="node_name", help="this node's name in a cluster (default the host name)")
    parser.add_argument("--advertise", help="host:port other nodes and clients use to reach this node "
                                            "(default from --host and --port)")
    parser.add_argument("--data-dir", dest="data_dir", help="directory for the SQLite file, spool and admin socket")
    parser.add_argument("--log-level", dest="log_level", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--log-file", dest="log_file", help="log to this file (reopened on SIGHUP) instead of stderr")
    parser.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate chain: serve TLS")
    parser.add_argument("--tls-key", dest="tls_key", help="PEM private key for --tls-cert")
    parser.add_argument("--admin-socket", dest="admin_socket",
                        help="unix socket for `status` (default <data-dir>/admin.sock; 'off' disables it)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="set any configuration key (repeatable), e.g. --set heartbeat_timeout=60")
    parser.add_argument("--init-db", dest="init_db", action="store_true",
                        help="with serve: create the schema first if it is missing")
    parser.add_argument("--json", action="store_true", help="with status: print JSON")
    # Set by the supervisor on the command line of each worker it starts (server/supervisor.py).
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    return parser


FLAG_KEYS = ("host", "port", "db", "workers", "redis", "node_name", "advertise", "data_dir", "log_level", "log_file",
             "tls_cert", "tls_key", "admin_socket")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Configuration keys given on the command line (named flags win over --set)."""
    overrides: dict[str, Any] = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--set {item!r}: use KEY=VALUE")
        if key not in field_names():
            raise ConfigError(f"unknown configuration key '{key}' in the command line (--set)")
        overrides[key] = value
    for key in FLAG_KEYS:
        value = getattr(args, key)
        if value is not None:
            overrides[key] = value
    return overrides


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        overrides = flag_overrides(args)
        config = load_config(args.config, overrides=overrides)
    except ConfigError as exc:
        print(f"meeting-server: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "status":
        from .admin import print_status
        return print_status(config, as_json=args.json)

    def load():
        new = load_config(args.config, overrides=overrides)
        return worker_config(new, args.worker) if args.worker is not None else new
    if args.worker is not None:
        config = load()
    tag = config.node_name if args.worker is not None or config.redis else ""
    try:
        setup_logging(config.log_level, config.log_file, tag)
    except OSError as exc:
        print(f"meeting-server: cannot open the log file: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve" and config.workers > 1:
        return supervise(args, config, load, tag)
    from .daemon import raise_fd_limit
    limit = raise_fd_limit(config.max_connections + FD_MARGIN)
    if limit < config.max_connections + FD_MARGIN:
        log.warning("open-files limit is %d: fewer than max_connections=%d can be held "
                    "(raise LimitNOFILE)", limit, config.max_connections)
    try:
        storage = open_storage(config.db)
        version = storage.db.schema_version()
        embedded_setup = storage.backend == "sqlite" and (version is None or version < SCHEMA_VERSION)
        if args.command == "init-db" or args.init_db or embedded_setup:
            storage.init_schema()
            log.info("schema ready in %s", storage.backend)
            if args.command == "init-db":
                storage.close()
                return 0
        from .app import Server
        server = Server(config, storage)
        # before listening: a SIGTERM right after the "listening" line must still drain cleanly
        install_signal_handlers(server, load, tag)
        server.listen(reuse_port=args.worker is not None)
    except (StorageError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    tune_for_server()
    server.serve_forever()
    return 0


def supervise(args: argparse.Namespace, config, load, tag: str) -> int:
    """`serve` with workers > 1: create the schema if asked, then start and keep the workers."""
    from .supervisor import Supervisor, worker_argv
    if args.init_db:
        try:
            storage = open_storage(config.db)
            storage.init_schema()
            storage.close()
        except StorageError as exc:
            log.error("cannot start: %s", exc)
            return 1
        log.info("schema ready in %s", storage.backend)
    supervisor = Supervisor(config, worker_argv(args.config, flag_overrides(args)),
                            reload=lambda: reload_config(config, load, tag))
    try:
        supervisor.hold_port()
    except OSError as exc:
        log.error("cannot start: cannot bind %s:%d: %s", config.host, config.port, exc.strerror or exc)
        return 1
    supervisor.install_signal_handlers()
    return supervisor.run()


def reload(server, load, tag: str = "") -> None:
    """SIGHUP on the reactor thread: re-read the file and environment, apply what can change
    at run time, reopen the log."""
    daemon = server.daemon
    if daemon is not None:
        daemon.reloading()
    reload_config(server.config, load, tag)
    if daemon is not None:
        daemon.reloaded()


def reload_config(config, load, tag: str = "") -> None:
    """Copy what can change at run time from a fresh ``load()`` into ``config`` (in place) and
    reopen the log; a configuration with an error is refused as a whole."""
    try:
        new = load()
    except ConfigError as exc:
        log.error("reload refused, keeping the running configuration: %s", exc)
        return
    applied, need_restart = apply_reload(config, new)
    if "max_connections" in applied:
        from .daemon import raise_fd_limit
        raise_fd_limit(config.max_connections + FD_MARGIN)
    try:
        setup_logging(config.log_level, config.log_file, tag)
    except OSError as exc:
        setup_logging(config.log_level, tag=tag)
        log.error("cannot reopen the log file %s, logging to stderr: %s", config.log_file, exc)
    log.info("reloaded: %s", ", ".join(f"{k}={getattr(config, k)}" for k in applied) or "nothing changed")
    if need_restart:
        log.warning("changed but only applied after a restart: %s", ", ".join(need_restart))


def install_signal_handlers(server, load, tag: str = "") -> None:
    def on_stop(signum, _frame) -> None:
        server.request_shutdown(f"received {signal.Signals(signum).name}")

    def on_hup(_signum, _frame) -> None:
        server.reactor.call_soon_threadsafe(reload, server, load, tag)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
