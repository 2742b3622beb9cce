"""The server's TLS context: TLS 1.2 or newer, certificate and key from PEM files.

The handshake itself runs non-blocking inside the reactor (server/connection.py) and must
finish within ``tls_handshake_timeout`` (checked by the server's sweep).
"""
from __future__ import annotations

import ssl


class TlsSetupError(OSError):
    """The certificate or key cannot be used; the message names the files."""


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Forward-secret AEAD suites only for TLS 1.2 (TLS 1.3 suites are all of that kind).
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSetupError(f"cannot load the TLS certificate {cert_file} with the key {key_file}: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    return context
