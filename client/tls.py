"""How the client trusts a TLS server: a CA file, the system store, or a pinned fingerprint."""
from __future__ import annotations

import hashlib
import hmac
import ssl
from dataclasses import dataclass
from typing import Callable


class FingerprintMismatch(Exception):
    pass


@dataclass(frozen=True)
class TlsOptions:
    ca_file: str | None = None
    fingerprint: str | None = None  # SHA-256 of the server certificate (DER), hex, colons allowed

    def build(self) -> tuple[ssl.SSLContext, Callable[[bytes], None] | None]:
        if self.fingerprint:
            pin = self.fingerprint.replace(":", "").lower()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE  # trust comes from the pin, checked below

            def check(der: bytes | None) -> None:
                got = hashlib.sha256(der or b"").hexdigest()
                if not hmac.compare_digest(got, pin):
                    raise FingerprintMismatch(
                        f"the server's certificate fingerprint {got} does not match the pinned {pin}")
            return context, check
        context = ssl.create_default_context(cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context, None


def certificate_fingerprint(pem_path: str) -> str:
    """SHA-256 fingerprint (hex) of a PEM certificate file, as the client pins it."""
    with open(pem_path, encoding="ascii") as fh:
        der = ssl.PEM_cert_to_DER_cert(fh.read())
    return hashlib.sha256(der).hexdigest()
