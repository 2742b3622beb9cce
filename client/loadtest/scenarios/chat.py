"""`chat`: pairs of friends messaging each other."""
from __future__ import annotations

import asyncio
import time

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

    def receiver(client: SimClient) -> None:
        receipts: list[int] = []

        def on_message(event: messages.ChatMessageEvent) -> None:
            message = event.message
            key = message.client_msg_id
            started = sent_at.get(key)
            if started is not None and key not in delivered:
                delivered.add(key)
                client.metrics.latency("chat_delivery", started)
                client.metrics.count("chat_delivered")
            receipts.append(message.id)

        async def send_receipts() -> None:
            while client.connected and not (w.stop.is_set() and not receipts):
                await asyncio.sleep(RECEIPT_INTERVAL)
                if receipts:
                    client.send(PacketType.CHAT_DELIVERED,
                                messages.ChatDelivered(ids=receipts[:messages.MAX_RECEIPT_IDS]))
                    del receipts[:messages.MAX_RECEIPT_IDS]
        client.handlers[PacketType.CHAT_MESSAGE_EVENT] = on_message
        receipt_tasks.append(asyncio.create_task(send_receipts()))

    receipt_tasks: list[asyncio.Task] = []
    for a, b in pairs:
        receiver(a)
        receiver(b)

    async def one_message(sender: SimClient, to: SimClient, seq: int) -> None:
        key = f"{s.run_id}.{w.index}.{sender.user['id']}.{seq}"
        started = time.monotonic()
        sent_at[key] = started
        sender.metrics.count("chat_sent")
        try:
            await sender.request(PacketType.CHAT_SEND, {"to": to.user["id"], "text": text, "client_msg_id": key},
                                 s.timeout)
        except Exception as exc:
            sender.metrics.error(error_kind(exc))
            return
        sender.metrics.latency("chat_ack", started)
        acked.add(key)

    async def flat_out(sender: SimClient, to: SimClient) -> None:
        seq = 0

        async def lane() -> None:
            nonlocal seq
            while not w.stop.is_set() and sender.connected:
                seq += 1
                await one_message(sender, to, seq)
        await asyncio.gather(*(lane() for _ in range(max(1, s.window))))

    async def paced(sender: SimClient, to: SimClient) -> None:
        interval = 1.0 / per_sender_rate
        loop = asyncio.get_running_loop()
        next_at = loop.time() + w.random.uniform(0, interval)
        seq = 0
        inflight: set[asyncio.Task] = set()
        while not w.stop.is_set() and sender.connected:
            await w.sleep_or_stop(max(0.0, next_at - loop.time()))
            if w.stop.is_set():
                break
            seq += 1
            task = asyncio.create_task(one_message(sender, to, seq))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            next_at += interval
        if inflight:
            await asyncio.wait(inflight, timeout=s.timeout)

    drive = paced if per_sender_rate else flat_out
    hold = asyncio.create_task(w.hold(s.duration))
    await asyncio.gather(*(drive(a, b) for a, b in senders))
    await hold
    w.phase = "draining"
    deadline = time.monotonic() + DRAIN_GRACE
    while acked - delivered and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    missing = len(acked - delivered)
    if missing:
        w.metrics.error("chat: acknowledged but never delivered")
        w.metrics.count("chat_undelivered", missing)
    await asyncio.gather(*receipt_tasks)
