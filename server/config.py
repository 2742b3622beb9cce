"""Server configuration: one dataclass, filled from an INI file, then MEETING_* environment
variables, then command-line flags (each overriding the one before).

Every field is documented in docs/OPERATIONS.md. Unknown keys and bad values stop the start
with a ConfigError that names the key.
"""
from __future__ import annotations

import configparser
import dataclasses
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from common import limits

DEFAULT_CONFIG_FILE = Path("/etc/real-time-meeting/server.ini")
ENV_PREFIX = "MEETING_"
ENV_TEST_PREFIX = "MEETING_TEST_"   # the test suite's own settings, not server keys
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(Exception):
    """A configuration key is unknown or has a bad value."""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8600
    db: str = "sqlite:///data/meeting.db"
    data_dir: str = "data"
    pool_threads: int = 8
    workers: int = 1
    redis: str = ""
    node_name: str = field(default_factory=socket.gethostname)
    advertise: str = ""
    redis_prefix: str = "meeting:"
    link_port: int = 0
    worker_watchdog: float = 30.0
    log_level: str = "INFO"
    log_file: str = ""
    heartbeat_interval: float = 10.0
    heartbeat_timeout: float = 30.0
    max_connections: int = 10000
    login_deadline: float = 30.0
    max_unauthenticated_per_address: int = 64
    output_high_water: int = 4 * 1024 * 1024
    output_low_water: int = 1024 * 1024
    output_hard_limit: int = 64 * 1024 * 1024
    scrypt_n: int = 2 ** 17
    scrypt_r: int = 8
    scrypt_p: int = 1
    session_ttl: float = 30 * 24 * 3600.0
    login_failures_per_account: int = 5
    login_failures_per_address: int = 20
    login_failure_window: float = 300.0
    messages_per_minute: int = 600
    friend_requests_per_minute: int = 30
    rooms_per_minute: int = 10
    room_joins_per_minute: int = 60
    file_offers_per_minute: int = 30
    media_states_per_minute: int = 60
    typing_per_minute: int = 120
    user_searches_per_minute: int = 30
    profile_updates_per_minute: int = 20
    room_controls_per_minute: int = 60
    registrations_per_minute_per_address: int = 10
    room_joins_per_minute_per_address: int = 120
    chat_batch_max: int = 256
    max_control_body: int = 64 * 1024
    spool_dir: str = ""
    spool_quota: int = 10 * 1024 ** 3
    spool_quota_per_user: int = 4 * 1024 ** 3
    spool_upload_idle_timeout: float = 120.0
    spool_expiry: float = 7 * 24 * 3600.0
    max_file_size: int = 2 * 1024 ** 3
    file_window: int = 2 * 1024 ** 2
    file_idle_timeout: float = 600.0
    spool_sweep_interval: float = 60.0
    room_max_members: int = 16
    room_grace: float = 30.0
    room_keep: float = 600.0
    media_video_budget: int = 512 * 1024
    media_audio_budget: int = 2 * 1024 * 1024
    tls_cert: str = ""
    tls_key: str = ""
    tls_handshake_timeout: float = 10.0
    admin_socket: str = ""
    shutdown_timeout: float = 10.0

    def validate(self) -> None:
        def need(ok: bool, key: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"bad value for '{key}': {why}")

        need(0 <= self.port <= 65535, "port", "must be 0-65535")
        need(0 <= self.link_port and self.link_port + max(0, self.workers - 1) <= 65535, "link_port",
             "must be 0-65535 (0: any free port), leaving room for one port per worker")
        need(self.pool_threads >= 1, "pool_threads", "must be at least 1")
        need(self.workers >= 1, "workers", "must be at least 1 (or auto: one per core)")
        need(not self.redis or self.redis.startswith(("redis://", "rediss://", "unix://")), "redis",
             "must be redis://[:password@]host:port[/db], rediss://… (TLS) or unix:///path")
        need(bool(self.node_name) and all(c.isalnum() or c in "_-." for c in self.node_name), "node_name",
             "letters, digits and _ - . only")
        need(not self.advertise or _is_host_port(self.advertise), "advertise",
             "must be host:port (an IPv6 address in brackets), the address other nodes and clients use")
        shared = self.workers > 1 or bool(self.redis)
        need(not shared or self.db.startswith(("mysql://", "mysql+pymysql://")), "db",
             f"{'workers = %d' % self.workers if self.workers > 1 else 'redis'} needs a shared MySQL database "
             "(db = mysql://…): several processes cannot share an SQLite file")
        need(self.workers == 1 or bool(self.redis), "redis",
             f"workers = {self.workers} needs redis = redis://host:port: the processes share sessions, "
             "presence and rooms there")
        need(self.log_level.upper() in LOG_LEVELS, "log_level", f"must be one of {', '.join(LOG_LEVELS)}")
        need(self.heartbeat_interval > 0, "heartbeat_interval", "must be positive")
        need(self.heartbeat_timeout > self.heartbeat_interval, "heartbeat_timeout",
             "must be longer than heartbeat_interval")
        need(self.max_connections >= 1, "max_connections", "must be at least 1")
        need(self.login_deadline > 0, "login_deadline", "must be positive")
        need(0 < self.output_low_water < self.output_high_water < self.output_hard_limit, "output_high_water",
             "need 0 < output_low_water < output_high_water < output_hard_limit")
        need(self.scrypt_n >= 2 and self.scrypt_n & (self.scrypt_n - 1) == 0, "scrypt_n", "must be a power of two")
        need(self.scrypt_r >= 1 and self.scrypt_p >= 1, "scrypt_r", "scrypt_r and scrypt_p must be at least 1")
        need(self.db.startswith(("sqlite://", "mysql://", "mysql+pymysql://")), "db",
             "must be sqlite:///path or mysql://user:pass@host:port/db")
        need(min(self.messages_per_minute, self.friend_requests_per_minute, self.rooms_per_minute,
                 self.room_joins_per_minute, self.file_offers_per_minute, self.media_states_per_minute,
                 self.typing_per_minute, self.user_searches_per_minute, self.profile_updates_per_minute,
                 self.room_controls_per_minute,
                 self.registrations_per_minute_per_address, self.room_joins_per_minute_per_address) >= 0,
             "messages_per_minute", "per-minute limits must be 0 (unlimited) or more")
        need(4096 <= self.max_control_body <= 64 * 1024, "max_control_body", "must be 4096-65536 bytes")
        need(self.room_max_members >= 2, "room_max_members", "must be at least 2")
        need(0 < self.media_video_budget <= self.media_audio_budget < self.output_high_water, "media_video_budget",
             "need 0 < media_video_budget <= media_audio_budget < output_high_water")
        need(bool(self.tls_cert) == bool(self.tls_key), "tls_cert", "tls_cert and tls_key go together")
        for key in ("tls_cert", "tls_key"):
            need(not getattr(self, key) or os.path.isfile(getattr(self, key)), key,
                 f"no such file: {getattr(self, key)}")
        for key in ("session_ttl", "login_failure_window",
                    "spool_expiry", "room_grace", "room_keep", "tls_handshake_timeout", "shutdown_timeout",
                    "worker_watchdog"):
            need(getattr(self, key) > 0, key, "must be positive")
        for key in ("max_unauthenticated_per_address", "login_failures_per_account", "login_failures_per_address",
                    "max_file_size"):
            need(getattr(self, key) >= 1, key, "must be at least 1")
        need(self.spool_quota >= 0, "spool_quota", "must not be negative")
        need(self.spool_quota_per_user >= 0, "spool_quota_per_user", "must not be negative")
        need(self.spool_upload_idle_timeout > 0, "spool_upload_idle_timeout", "must be positive")
        need(self.file_window >= limits.MAX_FILE_CHUNK, "file_window",
             f"must be at least one file chunk ({limits.MAX_FILE_CHUNK} bytes)")
        need(bool(self.redis_prefix) and all(c.isalnum() or c in ":_-." for c in self.redis_prefix),
             "redis_prefix", "letters, digits and : _ - . only")
        self.log_level = self.log_level.upper()

    @property
    def spool_path(self) -> Path:
        return Path(self.spool_dir) if self.spool_dir else Path(self.data_dir) / "spool"

    @property
    def admin_socket_path(self) -> Path:
        return Path(self.admin_socket) if self.admin_socket else Path(self.data_dir) / "admin.sock"


def _is_host_port(text: str) -> bool:
    from urllib.parse import urlsplit
    try:
        parts = urlsplit("//" + text)
        return bool(parts.hostname) and parts.port is not None
    except ValueError:
        return False


_FIELDS = {f.name: f for f in fields(ServerConfig)}


def _convert(key: str, raw: Any) -> Any:
    kind = _FIELDS[key].type
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if key == "workers":
        if text.lower() == "auto":
            return os.cpu_count() or 1
        if not text.isdigit():
            raise ConfigError(f"bad value for 'workers': {raw!r} is not a number of processes or auto")
        return int(text)
    try:
        if kind == "int":
            return int(text.replace("_", ""), 0)
        if kind == "float":
            return float(text)
        if kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
    except ValueError:
        raise ConfigError(f"bad value for '{key}': {raw!r} is not a valid {kind}") from None
    return text


def _apply(config: ServerConfig, values: Mapping[str, Any], origin: str) -> None:
    for key, raw in values.items():
        if raw is None:
            continue
        if key not in _FIELDS:
            raise ConfigError(f"unknown configuration key '{key}' in {origin}")
        setattr(config, key, _convert(key, raw))


def load_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                overrides: Mapping[str, Any] | None = None) -> ServerConfig:
    """Build the configuration: defaults < INI file < environment < overrides (flags)."""
    config = ServerConfig()
    env = os.environ if env is None else env
    path = path or env.get(ENV_PREFIX + "CONFIG")
    file_path = Path(path) if path else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None)
    if file_path is not None:
        parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#", ";"))
        try:
            with open(file_path, encoding="utf-8") as fh:
                parser.read_file(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file_path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(f"cannot parse config file {file_path}: {exc}") from None
        unknown_sections = [s for s in parser.sections() if s != "server"]
        if unknown_sections:
            raise ConfigError(f"unknown section [{unknown_sections[0]}] in {file_path}: use [server]")
        if parser.has_section("server"):
            _apply(config, dict(parser.items("server")), str(file_path))
    from_env = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG" and not name.startswith(ENV_TEST_PREFIX):
            from_env[name[len(ENV_PREFIX):].lower()] = value
    _apply(config, from_env, "the environment (MEETING_*)")
    _apply(config, overrides or {}, "the command line")
    config.validate()
    return config


# Keys read at the moment they are used, so a SIGHUP reload takes effect at once. Any other
# key that changed in the file is reported as needing a restart.
RELOADABLE = frozenset({
    "log_level", "log_file", "heartbeat_interval", "heartbeat_timeout", "login_deadline",
    "max_connections", "max_unauthenticated_per_address", "output_high_water", "output_low_water",
    "output_hard_limit", "shutdown_timeout", "session_ttl", "spool_expiry", "file_idle_timeout", "room_grace",
    "spool_upload_idle_timeout",
    "media_video_budget", "media_audio_budget",
})


def apply_reload(current: ServerConfig, new: ServerConfig) -> tuple[list[str], list[str]]:
    """Copy the reloadable keys that changed from ``new`` into ``current`` (in place, so every
    holder of the config sees them); returns (applied keys, keys that need a restart)."""
    applied, need_restart = [], []
    for name in field_names():
        if getattr(current, name) == getattr(new, name):
            continue
        if name in RELOADABLE:
            setattr(current, name, getattr(new, name))
            applied.append(name)
        else:
            need_restart.append(name)
    return applied, need_restart


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(ServerConfig)]
