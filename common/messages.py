"""Every JSON packet body, defined once, as msgspec Structs (see docs/PROTOCOL.md).

A body is decoded and validated in one C pass: types, required fields and the limits
(``Meta`` constraints) are checked by msgspec, and whatever does not fit becomes
``ApiError(BAD_REQUEST)``. Rules that need more than a shape (a phone number's digits, a
nickname's control characters, "the message is empty") stay with the handlers and keep their
own error codes.

Bodies the server sends leave their words open (``reason: str``, not a closed set), so a client
keeps reading events whose values a newer server adds.

The wire is the one of protocol version 1: unknown keys are ignored, an empty body is ``{}``,
and an optional field may be absent or ``null`` (both mean "not given"). Bodies sent with
optional fields omit the ones that are not set (``omit_defaults``); records that always carry
every key (``ChatMessage``: ``delivered_at`` is ``null`` until delivered) have no defaults.

``REQUESTS`` maps each client packet to its body, ``EVENTS`` each server event; ``decode``
and ``encode`` are the only ways bodies become fields and fields become bytes.
"""
from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Union

import msgspec
from msgspec import Meta, field

from . import limits
from .errors import ApiError, ErrorCode
from .packets import PacketType

I64_MAX = 2 ** 63 - 1
U31_MAX = 2 ** 31 - 1
MAX_RECEIPT_IDS = 1000
HISTORY_MAX = 100
TITLE_MAX = 64
ROOM_PASSWORD_MAX = 64
FILE_REASON_MAX = 200

Count = Annotated[int, Meta(ge=0, le=I64_MAX)]          # offsets, sizes, "after" cursors
Id = Annotated[int, Meta(ge=1, le=I64_MAX)]             # a user, message or request id
MemberId = Annotated[int, Meta(ge=0, le=U31_MAX)]       # a user id inside a room (0: none)
Kind = Annotated[int, Meta(ge=1, le=3)]                 # common.media.MediaKind (tested equal)


def text(max_length: int) -> Any:
    return Annotated[str, Meta(max_length=max_length)]


class Body(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A packet body: a JSON object. Bodies hold no reference cycles, so the cyclic garbage
    collector need not track them (``gc=False``: half the cost of decoding one, measured)."""


class Empty(Body):
    """``{}``: HEARTBEAT, LOGOUT, ROOM_LEAVE, MEDIA_STATS, and most replies."""


# -- records carried inside bodies -------------------------------------------------------------------
class Avatar(msgspec.Struct, kw_only=True, gc=False):
    builtin: int = 0
    version: int = 0


class User(msgspec.Struct, kw_only=True, gc=False):
    id: int
    phone: str
    nickname: str
    signature: str
    avatar: Avatar


class Friend(User, kw_only=True):
    online: bool


class FriendRequestInfo(msgspec.Struct, kw_only=True, gc=False):
    """A pending friend request; ``user`` is the other side."""

    id: int
    from_id: int = field(name="from")
    to_id: int = field(name="to")
    greeting: str
    time: int
    user: User


class TransferState(StrEnum):
    """Where a file transfer stands: the ``state`` of a ``FileAttachment``, a FILE_RESUME reply
    and a FILE_PENDING item (the fields stay ``str``: a newer server may add states).

    A live transfer goes offered → sending; a spooled one uploading → spooled → downloading;
    every one ends in done, declined, cancelled, failed or expired."""

    OFFERED = "offered"
    SENDING = "sending"
    UPLOADING = "uploading"
    SPOOLED = "spooled"
    DOWNLOADING = "downloading"
    DONE = "done"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    FAILED = "failed"
    EXPIRED = "expired"


class FileAttachment(msgspec.Struct, kw_only=True, gc=False):
    """The file a file message stands for, as its transfer is now."""

    transfer_id: str
    name: str
    size: int
    state: str


class ChatMessage(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """A stored one-to-one message as both ends see it (``file`` only for a file message)."""

    id: int
    from_id: int = field(name="from")
    to_id: int = field(name="to")
    client_msg_id: str
    text: str
    time: int
    delivered_at: int | None
    read_at: int | None
    file: FileAttachment | None = None


class Offer(Body):
    transfer_id: str
    from_id: int = field(name="from")
    from_nickname: str
    name: str
    size: int
    sha256: str
    spooled: bool
    message: ChatMessage | None = None     # the file message the offer stored in the conversation


class PendingTransfer(Offer, kw_only=True):
    """An item of the FILE_PENDING reply: an offer plus where it stands for the asker."""

    to: int
    state: str
    role: str                          # "sender" or "recipient"


class Member(msgspec.Struct, kw_only=True, gc=False):
    user_id: int
    nickname: str
    avatar: Avatar = field(default_factory=Avatar)
    camera: bool
    microphone: bool
    screen: bool
    host: bool
    away: bool


class Room(msgspec.Struct, kw_only=True, gc=False):
    number: str
    title: str
    host_id: int
    locked: bool
    has_password: bool
    members: list[Member]


# -- session (1-19) ----------------------------------------------------------------------------------
class Hello(Body):
    version: Annotated[int, Meta(ge=0, le=U31_MAX)]
    client: str | None = None


class ErrorBody(Body):
    code: int
    name: str
    message: str
    details: dict[str, Any] | None = None


class Register(Body):
    phone: text(64)
    password: text(1024)
    nickname: text(256)


class Login(Body):
    phone: text(64)
    password: text(1024)


class Resume(Body):
    token: text(256)


class Kicked(Body):
    reason: str
    address: str
    time: int
    message: str | None = None


class GoingAway(Body):
    reason: str
    reconnect: bool
    retry_after: float
    message: str | None = None


# -- friends and profiles (20-39) ---------------------------------------------------------------------
class UserSearch(Body):
    phone: text(64)


class FriendRequest(Body):
    user_id: Id | None = None
    phone: text(64) | None = None
    greeting: text(1000) | None = None


class FriendRequestEvent(Body):
    request: FriendRequestInfo


class FriendAnswer(Body):
    request_id: Id
    accept: bool


class FriendAnswerEvent(Body):
    request_id: int
    accepted: bool
    user: User


class FriendList(Body):
    after: Count | None = None


class UserRef(Body):
    """A body naming one user: FRIEND_REMOVE, AVATAR_GET and the presence events."""

    user_id: Id


class FriendAddedEvent(Body):
    friend: Friend


class ProfileUpdate(Body):
    nickname: text(256) | None = None
    signature: text(1024) | None = None
    avatar_builtin: Annotated[int, Meta(ge=1, le=limits.BUILTIN_AVATARS)] | None = None


class UserEvent(Body):
    """PROFILE_CHANGED_EVENT, and the ``{"user": User}`` replies."""

    user: User


class FriendRequests(Body):
    direction: Literal["incoming", "outgoing"] | None = None
    after: Count | None = None


# -- chat (40-59) -------------------------------------------------------------------------------------
class ChatSend(Body):
    to: Id
    text: text(limits.MAX_CONTROL_BODY)
    client_msg_id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class ChatSent(Body):
    """The reply to CHAT_SEND."""

    id: int
    time: int
    client_msg_id: str
    duplicate: bool


class ChatMessageEvent(Body):
    message: ChatMessage


class ChatDelivered(Body):
    ids: Annotated[list[Id], Meta(min_length=1, max_length=MAX_RECEIPT_IDS)]


class ChatRead(Body):
    user_id: Id
    up_to: Id


class ChatStatusEvent(Body):
    status: str                        # "delivered" or "read"
    peer: int
    at: int
    ids: list[int] | None = None       # "delivered"
    up_to: int | None = None           # "read"


class ChatHistory(Body):
    user_id: Id
    before: Id | None = None
    limit: Annotated[int, Meta(ge=1, le=HISTORY_MAX)] | None = None


class Typing(Body):
    to: Id
    typing: bool | None = None


class TypingEvent(Body):
    from_id: int = field(name="from")
    typing: bool


class ChatUnread(Body):
    after: Count | None = None


# -- files (60-79) ------------------------------------------------------------------------------------
TransferId = text(64)


class FileOffer(Body):
    to: Id
    name: text(4096)
    size: Count
    sha256: text(64)


class TransferRef(Body):
    """A body naming one transfer (FILE_PENDING items' key, several replies)."""

    transfer_id: TransferId


class FileAnswer(Body):
    transfer_id: TransferId
    accept: bool


class FileAnswerEvent(Body):
    transfer_id: str
    accepted: bool
    offset: int | None = None


class FileAck(Body):
    """Both ways: the recipient's progress (``complete`` with the last one), and the server's
    confirmation to the sender."""

    transfer_id: TransferId
    offset: Count
    complete: bool | None = None


class FileCancel(Body):
    transfer_id: TransferId
    reason: text(FILE_REASON_MAX) | None = None
    error: text(32) | None = None


class FileCancelEvent(Body):
    transfer_id: str
    by: int
    reason: str
    error: str | None = None


class FileDoneEvent(Body):
    transfer_id: str
    stage: str                         # "spooled" or "delivered"
    size: int | None = None


class FileResume(Body):
    transfer_id: TransferId
    offset: Count | None = None


class FilePending(Body):
    after: TransferId | None = None     # the "next" of the page before


class FilePullEvent(Body):
    transfer_id: str
    offset: int


# -- rooms (80-99) ------------------------------------------------------------------------------------
class RoomCreate(Body):
    title: text(TITLE_MAX) | None = None
    password: text(ROOM_PASSWORD_MAX) | None = None


class RoomJoin(Body):
    number: text(32)
    password: text(ROOM_PASSWORD_MAX) | None = None


class RoomEvent(Body):
    """ROOM_MEMBERS_EVENT, and the ``{"room": Room}`` replies."""

    room: Room


class RoomKick(Body):
    user_id: MemberId


class RoomMute(Body):
    user_id: MemberId | None = None


class RoomMuteEvent(Body):
    number: str
    by: int
    all: bool


class RoomLock(Body):
    locked: bool


class RoomChat(Body):
    text: text(limits.MAX_CHAT_BYTES * 4)


class RoomChatEvent(Body):
    number: str
    user_id: int
    nickname: str
    text: str
    time: int


class RoomRemovedEvent(Body):
    number: str
    reason: str                        # "kicked", "closed", ...
    message: str
    by: int | None = None


class RoomWaiter(msgspec.Struct, kw_only=True, gc=False):
    """Somebody in a locked meeting's waiting room."""

    user_id: int
    nickname: str


class RoomWaitingEvent(Body):
    number: str
    waiting: list[RoomWaiter]


class RoomAdmit(Body):
    user_id: MemberId
    admit: bool


class RoomAdmitEvent(Body):
    number: str
    admitted: bool
    room: Room | None = None           # when admitted
    message: str | None = None         # why not, when refused


class MediaState(Body):
    camera: bool
    microphone: bool
    screen: bool


# -- media (100-119) ----------------------------------------------------------------------------------
class KeyframeRequest(Body):
    user_id: MemberId
    kind: Kind


class KeyframeRequestEvent(Body):
    kind: int


class MediaSubscribe(Body):
    user_id: MemberId
    kind: Kind
    paused: bool


# -- the maps -----------------------------------------------------------------------------------------
P = PacketType

REQUESTS: dict[int, type[Body]] = {
    P.HELLO: Hello, P.HEARTBEAT: Empty, P.REGISTER: Register, P.LOGIN: Login, P.RESUME: Resume,
    P.LOGOUT: Empty,
    P.USER_SEARCH: UserSearch, P.FRIEND_REQUEST: FriendRequest, P.FRIEND_ANSWER: FriendAnswer,
    P.FRIEND_LIST: FriendList, P.FRIEND_REMOVE: UserRef, P.PROFILE_UPDATE: ProfileUpdate,
    P.AVATAR_GET: UserRef, P.FRIEND_REQUESTS: FriendRequests,
    P.CHAT_SEND: ChatSend, P.CHAT_DELIVERED: ChatDelivered, P.CHAT_READ: ChatRead,
    P.CHAT_HISTORY: ChatHistory, P.TYPING: Typing, P.CHAT_UNREAD: ChatUnread,
    P.FILE_OFFER: FileOffer, P.FILE_ANSWER: FileAnswer, P.FILE_ACK: FileAck, P.FILE_CANCEL: FileCancel,
    P.FILE_RESUME: FileResume, P.FILE_PENDING: FilePending,
    P.ROOM_CREATE: RoomCreate, P.ROOM_JOIN: RoomJoin, P.ROOM_LEAVE: Empty, P.ROOM_KICK: RoomKick,
    P.ROOM_MUTE: RoomMute, P.ROOM_LOCK: RoomLock, P.ROOM_CHAT: RoomChat, P.MEDIA_STATE: MediaState,
    P.ROOM_END: Empty, P.ROOM_HOST: RoomKick, P.ROOM_ADMIT: RoomAdmit,
    P.KEYFRAME_REQUEST: KeyframeRequest, P.MEDIA_SUBSCRIBE: MediaSubscribe, P.MEDIA_STATS: Empty,
}

EVENTS: dict[int, type[Body]] = {
    P.ERROR: ErrorBody, P.KICKED: Kicked, P.GOING_AWAY: GoingAway,
    P.FRIEND_REQUEST_EVENT: FriendRequestEvent, P.FRIEND_ANSWER_EVENT: FriendAnswerEvent,
    P.FRIEND_REMOVED_EVENT: UserRef, P.FRIEND_ADDED_EVENT: FriendAddedEvent,
    P.FRIEND_ONLINE: UserRef, P.FRIEND_OFFLINE: UserRef, P.PROFILE_CHANGED_EVENT: UserEvent,
    P.CHAT_MESSAGE_EVENT: ChatMessageEvent, P.CHAT_STATUS_EVENT: ChatStatusEvent, P.TYPING_EVENT: TypingEvent,
    P.FILE_OFFER_EVENT: Offer, P.FILE_ANSWER_EVENT: FileAnswerEvent, P.FILE_ACK: FileAck,
    P.FILE_CANCEL_EVENT: FileCancelEvent, P.FILE_DONE_EVENT: FileDoneEvent, P.FILE_PULL_EVENT: FilePullEvent,
    P.ROOM_MEMBERS_EVENT: RoomEvent, P.ROOM_MUTE_EVENT: RoomMuteEvent, P.ROOM_CHAT_EVENT: RoomChatEvent,
    P.ROOM_REMOVED_EVENT: RoomRemovedEvent, P.ROOM_WAITING_EVENT: RoomWaitingEvent,
    P.ROOM_ADMIT_EVENT: RoomAdmitEvent,
    P.KEYFRAME_REQUEST_EVENT: KeyframeRequestEvent,
}

_REQUEST_DECODERS = {ptype: msgspec.json.Decoder(cls) for ptype, cls in REQUESTS.items()}
_EVENT_DECODERS = {ptype: msgspec.json.Decoder(cls) for ptype, cls in EVENTS.items()}
_ANY = msgspec.json.Decoder(dict[str, Any])
_ENCODER = msgspec.json.Encoder()
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")   # only said when decoding failed

Decoded = Union[Body, dict]


def _decode(decoder: msgspec.json.Decoder, data: bytes) -> Any:
    try:
        return decoder.decode(data or b"{}")
    except msgspec.ValidationError as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, _field_message(str(exc))) from None
    except msgspec.DecodeError as exc:
        # Malformed JSON, bytes that are not UTF-8, and lone surrogate escapes ("\ud800",
        # which no UTF-8 text can hold) anywhere in the body, keys and unknown fields included.
        reason = "a string holds a lone surrogate (not valid Unicode)" if _SURROGATE.search(data) else exc
        raise ApiError(ErrorCode.BAD_REQUEST, f"invalid JSON body: {reason}") from None
    except RecursionError:
        raise ApiError(ErrorCode.BAD_REQUEST, "invalid JSON body: nested too deeply") from None


def _field_message(message: str) -> str:
    """msgspec says "Expected `int` >= 1 - at `$.to`"; say which field first."""
    missing = message.partition("Object missing required field `")[2]
    if missing:
        return f"missing field '{missing.rstrip('`')}'"
    what, sep, where = message.rpartition(" - at `$.")
    return f"field '{where.rstrip('`')}': {what}" if sep else message


def decode_request(packet_type: int, data: bytes) -> Body:
    """A client packet's body, validated; ApiError(BAD_REQUEST) if it does not fit."""
    return _decode(_REQUEST_DECODERS[packet_type], data)


def decode_event(packet_type: int, data: bytes) -> Body:
    """A server event's body, validated; ApiError(BAD_REQUEST) if it does not fit."""
    return _decode(_EVENT_DECODERS[packet_type], data)


def decode_any(data: bytes) -> dict[str, Any]:
    """A JSON object of no fixed shape (replies the client hands on as dicts)."""
    return _decode(_ANY, data)


def encode(body: Body | dict | None) -> bytes:
    """The JSON bytes of a body (``None`` is ``{}``)."""
    return _ENCODER.encode({} if body is None else body)


def to_dict(body: msgspec.Struct) -> dict[str, Any]:
    """The body as plain JSON values with its wire names (for state kept as dicts)."""
    return msgspec.to_builtins(body)
