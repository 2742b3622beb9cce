"""The few things the desktop client remembers between runs (last server, last phone number,
devices, and with "Remember me" the session token that logs in without the password), and
where the files of file messages are on this computer.

Stored as JSON under the user's config directory ($XDG_CONFIG_HOME or ~/.config), readable by
the user only: the token is a bearer credential (the server keeps only its hash, ends it at
logout or a login elsewhere, and lets it expire). The password is never stored. A missing or
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
    remember: bool = False
    session_token: str = ""

    @classmethod
    def load(cls, path: Path | None = None) -> "Settings":
        data = read_json(path or config_dir() / "client.json")
        types = {f.name: type(f.default) for f in fields(cls)}
        values = {}
        for name, value in data.items():
            if types.get(name) is bool and isinstance(value, bool):
                values[name] = value
            elif types.get(name) is str and isinstance(value, (str, int)) and not isinstance(value, bool):
                values[name] = str(value)
        return cls(**values)

    def save(self, path: Path | None = None) -> None:
        write_private_json(path or config_dir() / "client.json", asdict(self))


class FilePlaces:
    """Where the files of file messages are on this computer (sent from, saved to), by
    transfer id, so that Open and Show in folder still work after a restart. The newest
    ``MAX`` are kept."""

    MAX = 1000

    def __init__(self, path: Path) -> None:
        self.path = path
        self.places = {str(k): str(v) for k, v in read_json(path).items() if isinstance(v, str)}

    def paths(self) -> dict[str, Path]:
        return {transfer_id: Path(place) for transfer_id, place in self.places.items()}

    def remember(self, transfer_id: str, place: Path) -> None:
        self.places.pop(transfer_id, None)
        self.places[transfer_id] = str(place)
        while len(self.places) > self.MAX:
            self.places.pop(next(iter(self.places)))
        write_private_json(self.path, self.places)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; empty when missing or damaged (never stops the window)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable file %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def write_private_json(path: Path, data: dict) -> None:
    """Replace ``path`` atomically with ``data``, readable and writable by the user only."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=2))
        os.chmod(tmp, 0o600)        # an older file may have had wider rights
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not save %s: %s", path, exc)
