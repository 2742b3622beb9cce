"""Typed access to fields of a JSON body; wrong or missing fields become BAD_REQUEST."""
from __future__ import annotations

from typing import Any

from .errors import ApiError, ErrorCode

_MISSING = object()


def _get(body: dict, key: str, default: Any) -> Any:
    value = body.get(key, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise ApiError(ErrorCode.BAD_REQUEST, f"missing field '{key}'")
        return default
    return value


def get_str(body: dict, key: str, default: Any = _MISSING, *, max_len: int = 10_000) -> str:
    value = _get(body, key, default)
    if value is default and default is not _MISSING:
        return value
    if not isinstance(value, str):
        raise ApiError(ErrorCode.BAD_REQUEST, f"field '{key}' must be a string")
    if len(value) > max_len:
        raise ApiError(ErrorCode.BAD_REQUEST, f"field '{key}' is longer than {max_len} characters")
    return value


def get_int(body: dict, key: str, default: Any = _MISSING, *, lo: int = 0, hi: int = 2**63 - 1) -> int:
    value = _get(body, key, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(ErrorCode.BAD_REQUEST, f"field '{key}' must be an integer")
    if not lo <= value <= hi:
        raise ApiError(ErrorCode.BAD_REQUEST, f"field '{key}' must be between {lo} and {hi}")
    return value


def get_bool(body: dict, key: str, default: Any = _MISSING) -> bool:
    value = _get(body, key, default)
    if not isinstance(value, bool):
        raise ApiError(ErrorCode.BAD_REQUEST, f"field '{key}' must be true or false")
    return value
