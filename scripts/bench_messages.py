#!/usr/bin/env python3
"""JSON cost of one chat message on the server: the typed message layer against stdlib json.

Per message the reactor decodes and checks a CHAT_SEND body, then encodes the sender's RESULT
and the recipient's CHAT_MESSAGE_EVENT. ``msgspec`` does it with ``common.messages`` (what the
server runs); ``json`` does the same work the way the server did before the message layer
(``json.loads``, a check per field, ``json.dumps`` of dicts), for comparison.

    python scripts/bench_messages.py
"""
from __future__ import annotations

import json
import re
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import frame as wire  # noqa: E402
from common import limits, messages  # noqa: E402
from common.packets import PacketType  # noqa: E402
from server.handlers.views import message_view  # noqa: E402
from server.storage.messages import Message  # noqa: E402

BODY = wire.encode_json(PacketType.CHAT_SEND, {"to": 123, "text": "x" * 64, "client_msg_id": "run.0.17.4242"})[12:]
STORED = Message(812, 17, 123, "run.0.17.4242", "x" * 64, 1795505942612, None, None)
CLIENT_MSG_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def with_msgspec() -> None:
    body = messages.decode_request(PacketType.CHAT_SEND, BODY)
    len(body.text.encode("utf-8"))
    m = STORED
    wire.encode_frame(PacketType.RESULT, messages.encode(messages.ChatSent(
        id=m.id, time=m.created_at, client_msg_id=m.client_msg_id, duplicate=False)), 7)
    wire.encode_frame(PacketType.CHAT_MESSAGE_EVENT, messages.encode(messages.ChatMessageEvent(message=message_view(m))))


def _dumps(value: dict) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def with_json() -> None:
    body = json.loads(BODY.decode("utf-8"))
    to, text, client_msg_id = body.get("to"), body.get("text"), body.get("client_msg_id")
    if (not isinstance(to, int) or isinstance(to, bool) or to < 1 or not isinstance(text, str)
            or len(text) > limits.MAX_CONTROL_BODY or not isinstance(client_msg_id, str)
            or not CLIENT_MSG_ID.fullmatch(client_msg_id)):
        raise ValueError("bad request")
    len(text.encode("utf-8"))
    m = STORED
    wire.encode_frame(PacketType.RESULT, _dumps({"id": m.id, "time": m.created_at, "client_msg_id": m.client_msg_id,
                                                 "duplicate": False}), 7)
    wire.encode_frame(PacketType.CHAT_MESSAGE_EVENT, _dumps({"message": {
        "id": m.id, "from": m.sender_id, "to": m.recipient_id, "client_msg_id": m.client_msg_id, "text": m.body,
        "time": m.created_at, "delivered_at": m.delivered_at, "read_at": m.read_at}}))


def main() -> None:
    number = 100_000
    for name, fn in (("json", with_json), ("msgspec", with_msgspec)):
        best = min(timeit.repeat(fn, number=number, repeat=7)) / number
        print(f"{name:8s} {best * 1e6:6.2f} us per chat message (decode CHAT_SEND, encode RESULT and event)")


if __name__ == "__main__":
    main()
