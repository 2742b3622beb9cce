"""Validation of user-entered account fields, shared by the client (early, friendly errors)
and the server (the authority)."""
from __future__ import annotations

import unicodedata

from . import limits
from .errors import ApiError, ErrorCode


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def normalize_phone(raw: str) -> str:
    """Digits only; spaces and dashes a person may type are removed."""
    phone = raw.replace(" ", "").replace("-", "")
    if not (phone.isascii() and phone.isdigit()
            and limits.PHONE_MIN_DIGITS <= len(phone) <= limits.PHONE_MAX_DIGITS):
        raise ApiError(ErrorCode.INVALID_PHONE)
    return phone


def check_password(password: str) -> str:
    if not limits.PASSWORD_MIN <= len(password) <= limits.PASSWORD_MAX:
        raise ApiError(ErrorCode.INVALID_PASSWORD)
    return password


def normalize_nickname(raw: str) -> str:
    nickname = raw.strip()
    if not 1 <= len(nickname) <= limits.NICKNAME_MAX or _has_control(nickname):
        raise ApiError(ErrorCode.INVALID_NICKNAME)
    return nickname


def normalize_signature(raw: str) -> str:
    signature = raw.strip()
    if len(signature) > limits.SIGNATURE_MAX or _has_control(signature.replace("\n", "")):
        raise ApiError(ErrorCode.INVALID_SIGNATURE)
    return signature
