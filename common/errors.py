"""Error codes that cross the wire. Every code here is listed in docs/PROTOCOL.md."""
from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    # protocol and session (1xx would clash with HTTP habits; keep them small)
    BAD_REQUEST = 1
    UNKNOWN_TYPE = 2
    NOT_AUTHENTICATED = 3
    UNSUPPORTED_VERSION = 4
    INTERNAL = 5
    RATE_LIMITED = 6
    TOO_LARGE = 7
    SHUTTING_DOWN = 8
    TIMEOUT = 9
    UNAVAILABLE = 10
    # accounts
    INVALID_PHONE = 100
    INVALID_PASSWORD = 101
    INVALID_NICKNAME = 102
    PHONE_TAKEN = 103
    WRONG_CREDENTIALS = 104
    TOO_MANY_ATTEMPTS = 105
    INVALID_TOKEN = 106
    ALREADY_LOGGED_IN = 107
    LOGIN_DEADLINE = 108
    TOO_MANY_CONNECTIONS = 109
    # friends, profiles, chat
    USER_NOT_FOUND = 200
    CANNOT_ADD_SELF = 201
    ALREADY_FRIENDS = 202
    REQUEST_PENDING = 203
    NOT_FRIENDS = 204
    NO_SUCH_REQUEST = 205
    INVALID_SIGNATURE = 206
    INVALID_AVATAR = 207
    AVATAR_TOO_LARGE = 208
    MESSAGE_TOO_LONG = 209
    # files
    FILE_TOO_LARGE = 300
    NO_SUCH_TRANSFER = 301
    TRANSFER_CANCELLED = 302
    SPOOL_FULL = 303
    DISK_FULL = 304
    BAD_OFFSET = 305
    CHECKSUM_MISMATCH = 306
    # rooms and media
    NO_SUCH_ROOM = 400
    WRONG_ROOM_PASSWORD = 401
    ROOM_LOCKED = 402
    ROOM_FULL = 403
    ALREADY_IN_ROOM = 404
    NOT_IN_ROOM = 405
    NOT_HOST = 406
    NO_SUCH_MEMBER = 407
    NOT_WAITING = 408
    MEMBER_AWAY = 409


DEFAULT_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.BAD_REQUEST: "the request is malformed",
    ErrorCode.UNKNOWN_TYPE: "unknown packet type",
    ErrorCode.NOT_AUTHENTICATED: "log in first",
    ErrorCode.UNSUPPORTED_VERSION: "protocol version not supported",
    ErrorCode.INTERNAL: "internal server error",
    ErrorCode.RATE_LIMITED: "too many requests, slow down",
    ErrorCode.TOO_LARGE: "frame too large",
    ErrorCode.SHUTTING_DOWN: "the server is shutting down, reconnect later",
    ErrorCode.TIMEOUT: "request timed out",
    ErrorCode.UNAVAILABLE: "the server cannot reach its shared state, try again in a moment",
    ErrorCode.INVALID_PHONE: "the phone number must be 5 to 20 digits",
    ErrorCode.INVALID_PASSWORD: "the password must be 8 to 128 characters",
    ErrorCode.INVALID_NICKNAME: "the nickname must be 1 to 32 characters",
    ErrorCode.PHONE_TAKEN: "this phone number is already registered",
    ErrorCode.WRONG_CREDENTIALS: "wrong phone number or password",
    ErrorCode.TOO_MANY_ATTEMPTS: "too many failed logins, try again later",
    ErrorCode.INVALID_TOKEN: "the session has expired, log in again",
    ErrorCode.ALREADY_LOGGED_IN: "this connection is already logged in",
    ErrorCode.LOGIN_DEADLINE: "no login in time",
    ErrorCode.TOO_MANY_CONNECTIONS: "too many connections",
    ErrorCode.USER_NOT_FOUND: "no user with this phone number",
    ErrorCode.CANNOT_ADD_SELF: "you cannot add yourself",
    ErrorCode.ALREADY_FRIENDS: "you are already friends",
    ErrorCode.REQUEST_PENDING: "a friend request is already pending",
    ErrorCode.NOT_FRIENDS: "you are not friends",
    ErrorCode.NO_SUCH_REQUEST: "no such friend request",
    ErrorCode.INVALID_SIGNATURE: "the signature must be at most 100 characters",
    ErrorCode.INVALID_AVATAR: "not a valid image",
    ErrorCode.AVATAR_TOO_LARGE: "the picture is larger than 2 MB",
    ErrorCode.MESSAGE_TOO_LONG: "the message is longer than 8 KiB",
    ErrorCode.FILE_TOO_LARGE: "the file is larger than the limit",
    ErrorCode.NO_SUCH_TRANSFER: "no such file transfer",
    ErrorCode.TRANSFER_CANCELLED: "the transfer was cancelled",
    ErrorCode.SPOOL_FULL: "the server has no room to keep this file",
    ErrorCode.DISK_FULL: "the disk is full",
    ErrorCode.BAD_OFFSET: "unexpected file offset",
    ErrorCode.CHECKSUM_MISMATCH: "the file arrived damaged",
    ErrorCode.NO_SUCH_ROOM: "no such meeting room",
    ErrorCode.WRONG_ROOM_PASSWORD: "wrong meeting password",
    ErrorCode.ROOM_LOCKED: "the meeting is locked",
    ErrorCode.ROOM_FULL: "the meeting is full",
    ErrorCode.ALREADY_IN_ROOM: "you are already in a meeting",
    ErrorCode.NOT_IN_ROOM: "you are not in this meeting",
    ErrorCode.NOT_HOST: "only the host can do this",
    ErrorCode.NO_SUCH_MEMBER: "no such member in this meeting",
    ErrorCode.NOT_WAITING: "nobody by that id is waiting to join",
    ErrorCode.MEMBER_AWAY: "that member is not connected right now",
}


class ApiError(Exception):
    """A refusal that is sent to the peer as an ERROR packet."""

    def __init__(self, code: ErrorCode, message: str | None = None, **details: object) -> None:
        self.code = ErrorCode(code)
        self.message = message or DEFAULT_MESSAGES.get(self.code, self.code.name.lower())
        self.details = details
        super().__init__(f"{self.code.name}: {self.message}")

    def to_body(self) -> dict:
        body: dict = {"code": int(self.code), "name": self.code.name, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body

    @classmethod
    def from_body(cls, body: dict) -> "ApiError":
        try:
            code = ErrorCode(int(body.get("code", ErrorCode.INTERNAL)))
        except ValueError:
            code = ErrorCode.INTERNAL
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        return cls(code, str(body.get("message") or ""), **details)
