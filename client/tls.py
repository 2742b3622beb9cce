"""How the client trusts a TLS server: a CA file, the system store, or a pinned fingerprint."""
from __future__ import annotations

import hashlib
import hmac
import ssl
from dataclasses import dataclass
from typing import Callable


class FingerprintMismatch(Exception):
    """The server's certificate is not the pinned one: maybe not the server you meant."""


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as lowercase hex; colons, spaces and a 'sha256:' prefix allowed."""
    pin = text.strip().lower()
    if pin.startswith("sha256:"):
        pin = pin[len("sha256:"):]
    pin = pin.replace(":", "").replace(" ", "")
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise ValueError(f"not a SHA-256 fingerprint (64 hex digits): {text!r}")
    return pin


@dataclass(frozen=True)
class TlsOptions:
    ca_file: str | None = None
    fingerprint: str | None = None  # SHA-256 of the server certificate (DER), hex, colons allowed

    @classmethod
    def from_flags(cls, ca_file: str | None, fingerprint: str | None) -> "TlsOptions | None":
        """What the command lines' --tls-ca / --tls-pin ask for: None (plain TCP) if neither."""
        return cls(ca_file, fingerprint) if (ca_file or fingerprint) else None

    def build(self) -> tuple[ssl.SSLContext, Callable[[bytes], None] | None]:
        if self.fingerprint:
            pin = normalize_fingerprint(self.fingerprint)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # trust comes from the pin, checked below

            def check(der: bytes | None) -> None:
                got = hashlib.sha256(der or b"").hexdigest()
                if not hmac.compare_digest(got, pin):
                    raise FingerprintMismatch(
                        f"the server's certificate does not match the pinned fingerprint: it is "
                        f"SHA-256 {got}, the pin is {pin}; this may not be the server you meant "
                        f"(or its certificate was replaced): connection refused")
            return context, check
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context, None


def certificate_fingerprint(pem_path: str) -> str:
    """SHA-256 fingerprint (hex) of a PEM certificate file, as the client pins it."""
    with open(pem_path, encoding="ascii") as fh:
        der = ssl.PEM_cert_to_DER_cert(fh.read())
    return hashlib.sha256(der).hexdigest()
