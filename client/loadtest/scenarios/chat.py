"""`chat`: pairs of friends messaging each other."""
from __future__ import annotations

import asyncio
import functools
import itertools
import time
from typing import Any, Iterator

from common import limits, messages
from common.packets import PacketType

from ..sim import SimClient, error_kind
from ..worker import Worker
from .pairs import log_in_pairs

DRAIN_GRACE = 5.0       # seconds to wait for in-flight deliveries after the steady phase
RECEIPT_INTERVAL = 0.2  # seconds between a recipient's batched CHAT_DELIVERED receipts


async def chat(w: Worker) -> None:
    """Pairs of friends send each other messages, flat out (``window`` unacknowledged per
    sender) or at a total ``rate``. Measures the sender's acknowledgement (stored), the
    delivery to the friend, and checks every acknowledged message arrived."""
    s = w.settings
    pairs = await log_in_pairs(w)
    sent_at: dict[str, float] = {}
    acked: set[str] = set()
    delivered: set[str] = set()
    text = "x" * max(1, min(s.message_size, limits.MAX_CHAT_BYTES))
    senders = [(a, b) for a, b in pairs] + [(b, a) for a, b in pairs]
    per_sender_rate = s.rate / s.processes / len(senders) if s.rate and senders else 0.0

    receipts: dict[SimClient, list[int]] = {}

    def receiver(client: SimClient) -> None:
        ids = receipts[client] = []

        def on_message(event: messages.ChatMessageEvent) -> None:
            message = event.message
            key = message.client_msg_id
            started = sent_at.get(key)
            if started is not None and key not in delivered:
                delivered.add(key)
                client.metrics.latency("chat_delivery", started)
                client.metrics.count("chat_delivered")
            ids.append(message.id)
        client.handlers[PacketType.CHAT_MESSAGE_EVENT] = on_message

    async def send_receipts() -> None:
        """Every RECEIPT_INTERVAL each recipient confirms what it received, like a client,
        until the stop and its last receipt."""
        while True:
            await asyncio.sleep(RECEIPT_INTERVAL)
            more = False
            for client, ids in receipts.items():
                if ids and client.connected:
                    client.send(PacketType.CHAT_DELIVERED, messages.ChatDelivered(ids=ids[:messages.MAX_RECEIPT_IDS]))
                    del ids[:messages.MAX_RECEIPT_IDS]
                    more = more or bool(ids)
            if w.stop.is_set() and not more:
                return

    for a, b in pairs:
        receiver(a)
        receiver(b)
    in_flight = 0

    def send_message(sender: SimClient, to: SimClient, numbers: Iterator[int], chained: bool) -> None:
        """CHAT_SEND with an answer callback (no task or future per message). A ``chained``
        message sends the next one when it is answered (a lane of the flat-out window)."""
        nonlocal in_flight
        key = f"{s.run_id}.{w.index}.{sender.user['id']}.{next(numbers)}"
        started = time.monotonic()
        sent_at[key] = started
        sender.metrics.count("chat_sent")
        in_flight += 1

        def answered(_reply: Any, error: BaseException | None) -> None:
            nonlocal in_flight
            in_flight -= 1
            if error is None:
                sender.metrics.latency("chat_ack", started)
                acked.add(key)
            else:
                sender.metrics.error(error_kind(error))
            if chained and not w.stop.is_set() and sender.connected:
                send_message(sender, to, numbers, chained)
        sender.send_request(PacketType.CHAT_SEND, messages.ChatSend(to=to.user["id"], text=text, client_msg_id=key),
                            answered, s.timeout)

    receipting = asyncio.create_task(send_receipts())
    hold = asyncio.create_task(w.hold(s.duration))
    await asyncio.sleep(0)          # the steady phase starts before the first message
    for sender, to in senders:
        numbers = itertools.count(1)
        if per_sender_rate:
            w.pace(1.0 / per_sender_rate, functools.partial(send_message, sender, to, numbers, False),
                   lambda sender=sender: sender.connected)
        else:
            for _ in range(max(1, s.window)):
                send_message(sender, to, numbers, True)
    await hold
    w.phase = "draining"
    while in_flight:                # each is answered by its deadline (the client's sweep) at the latest
        await asyncio.sleep(0.05)
    deadline = time.monotonic() + DRAIN_GRACE
    while acked - delivered and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    missing = len(acked - delivered)
    if missing:
        w.metrics.error("chat: acknowledged but never delivered")
        w.metrics.count("chat_undelivered", missing)
    await receipting
