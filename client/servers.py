"""Server addresses as people type them: ``host``, ``host:port``, ``[v6]:port``, and lists of
them separated by commas (the servers of one cluster, tried in turn).

Every client front end (desktop settings and login, the file CLI, the bot, the load test)
parses ``--server`` here, so they accept and refuse the same things with the same messages.
"""
from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORT = 8600

Address = tuple[str, int]


def parse_server(text: str) -> Address:
    """'host', 'host:port', '[v6]:port' or a bare IPv6 address → (host, port); raises ValueError
    with a readable message."""
    text = text.strip()
    if not text:
        raise ValueError("enter the server address, e.g. 127.0.0.1:8600")
    if any(c in "/?#@" or c.isspace() for c in text):
        raise ValueError(f"'{text}' is not a server address (use host or host:port)")
    if text.count(":") > 1 and not text.startswith("["):
        text = f"[{text}]"                       # a bare IPv6 address: no port can be told apart
    if text.startswith("[") and "]" not in text:
        raise ValueError("unclosed [ in the server address")
    after_host = text.rpartition("]")[2] if text.startswith("[") else text
    if text.startswith("[") and after_host and not after_host.startswith(":"):
        raise ValueError("expected :port after the address")
    port_text = after_host.rpartition(":")[2] if ":" in after_host else None
    try:
        parts = urlsplit("//" + text)
        host, port = parts.hostname, parts.port
    except ValueError:                             # a port out of range or not a number
        host, port = None, -1
    if port_text is not None and not (port_text.isdigit() and 1 <= int(port_text) <= 65535
                                      and port == int(port_text)):
        raise ValueError(f"'{port_text}' is not a port number (1-65535)")
    if not host:
        raise ValueError("the server address has no host")
    return host, DEFAULT_PORT if port is None else port


def parse_servers(text: str) -> list[Address]:
    """'a, b:8601, [::1]:8602' → every address, in order, each once; ValueError names the bad one."""
    addresses: list[Address] = []
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError("enter the server address, e.g. 127.0.0.1:8600")
    for item in items:
        if not item:
            continue
        try:
            address = parse_server(item)
        except ValueError as exc:
            raise ValueError(f"{item}: {exc}" if len(items) > 1 else str(exc)) from None
        if address not in addresses:
            addresses.append(address)
    return addresses


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
