"""Salted scrypt password hashes, stored with their parameters so the cost can change."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass


@dataclass(frozen=True)
class ScryptParams:
    n: int = 2 ** 17
    r: int = 8
    p: int = 1

    @property
    def maxmem(self) -> int:
        return 128 * self.n * self.r * self.p + 32 * 1024 * 1024


def hash_password(password: str, params: ScryptParams) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=params.n, r=params.r, p=params.p,
                            maxmem=params.maxmem, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${params.n}${params.r}${params.p}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        params = ScryptParams(int(n), int(r), int(p))
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt), n=params.n,
                                r=params.r, p=params.p, maxmem=params.maxmem, dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def dummy_verify(params: ScryptParams) -> None:
    """Spend the same time as a real check, so unknown phone numbers cannot be told by timing."""
    hashlib.scrypt(b"x", salt=b"0" * 16, n=params.n, r=params.r, p=params.p, maxmem=params.maxmem, dklen=32)
