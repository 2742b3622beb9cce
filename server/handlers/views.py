"""Storage records as the records of ``common.messages``: what other users may see of them.

Storage returns records (``server.storage``); this is the one place that says which of their
fields go on the wire and under which names.
"""
from __future__ import annotations

from common import messages

from ..storage import User
from ..storage.friends import FriendRequest
from ..storage.messages import Message


def avatar_view(user: User) -> messages.Avatar:
    return messages.Avatar(builtin=user.avatar_builtin, version=user.avatar_version)


def user_view(user: User) -> messages.User:
    return messages.User(id=user.id, phone=user.phone, nickname=user.nickname, signature=user.signature,
                         avatar=avatar_view(user))


def friend_view(user: User, online: bool) -> messages.Friend:
    return messages.Friend(id=user.id, phone=user.phone, nickname=user.nickname, signature=user.signature,
                           avatar=avatar_view(user), online=online)


def request_view(request: FriendRequest, other: User) -> messages.FriendRequestInfo:
    """A pending friend request; ``other`` is the side the receiver of the view is not."""
    return messages.FriendRequestInfo(id=request.id, from_id=request.from_id, to_id=request.to_id,
                                      greeting=request.greeting, time=request.created_at, user=user_view(other))


def message_view(message: Message) -> messages.ChatMessage:
    file = message.file
    return messages.ChatMessage(
        id=message.id, from_id=message.sender_id, to_id=message.recipient_id, client_msg_id=message.client_msg_id,
        text=message.body, time=message.created_at, delivered_at=message.delivered_at, read_at=message.read_at,
        file=None if file is None else messages.FileAttachment(transfer_id=file.transfer_id, name=file.name,
                                                               size=file.size, state=file.state))
