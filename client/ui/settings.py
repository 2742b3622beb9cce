"""The few things the desktop client remembers between runs (last server, last phone number).

Stored as JSON under the user's config directory ($XDG_CONFIG_HOME or ~/.config). A missing or
damaged file just means defaults: it must never stop the window from opening.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

log = logging.getLogger("client.ui")

DEFAULT_SERVER = "127.0.0.1:8600"
DEFAULT_PORT = 8600


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "real-time-meeting"


@dataclass
class Settings:
    server: str = DEFAULT_SERVER
    phone: str = ""
    camera: str = ""
    microphone: str = ""
    speakers: str = ""

    @classmethod
    def load(cls, path: Path | None = None) -> "Settings":
        path = path or config_dir() / "client.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable settings file %s: %s", path, exc)
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: str(v) for k, v in data.items() if k in known and isinstance(v, (str, int))})

    def save(self, path: Path | None = None) -> None:
        path = path or config_dir() / "client.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not save settings to %s: %s", path, exc)


def parse_server(text: str) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' → (host, port); raises ValueError with a readable message."""
    text = text.strip()
    if not text:
        raise ValueError("enter the server address, e.g. 127.0.0.1:8600")
    host, port = text, DEFAULT_PORT
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed [ in the server address")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("expected :port after the address")
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = _port(port_text)
    if not host:
        raise ValueError("the server address has no host")
    return host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"'{text}' is not a port number (1-65535)")
    return int(text)
