"""The load-test scenarios. Each is a coroutine taking the process's Worker.

Both ends of a measured path live in the same process (a chat pair, a file pair, a meeting),
so every latency is one process's ``time.monotonic()`` difference, or for media the receive
time against the capture time in the frame (the same machine clock).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Awaitable, Callable

from common import limits
from common.errors import ApiError, ErrorCode
from common.media import FLAG_KEYFRAME, MEDIA_HEADER, Codec, MediaHeader, MediaKind, pack_media
from common.packets import FILE_CHUNK_HEADER_SIZE, PacketType

from .sim import SimClient, error_kind
from .worker import Worker

DRAIN_GRACE = 5.0      # seconds to wait for in-flight deliveries after the steady phase
RECEIPT_INTERVAL = 0.2  # seconds between a recipient's batched CHAT_DELIVERED receipts


async def connect(w: Worker) -> None:
    """N clients register and log in at the ramp rate, then idle with heartbeats for the
    duration. Measures login time, and heartbeat round trips while everyone is connected
    (``heartbeat_rtt``; those sent during the ramp count as ``heartbeat_rtt_ramp``)."""
    count = w.share(w.settings.clients)
    w.target = count
    w.phase = "logging in"
    keepers: list[asyncio.Task] = []

    def idle(_i: int, client: SimClient) -> None:
        keepers.append(asyncio.create_task(w.heartbeats(client)))

    await w.login_many(count, lambda i: f"idle{w.index}-{i}", on_ready=idle)
    await w.hold(w.settings.duration)
    await asyncio.gather(*keepers)


async def befriend(w: Worker, a: SimClient, b: SimClient) -> bool:
    """Make two clients friends: a request each way makes them friends at once."""
    try:
        for asker, target in ((a, b), (b, a)):
            try:
                await asker.request(PacketType.FRIEND_REQUEST, {"user_id": target.user["id"]}, w.settings.timeout)
            except ApiError as exc:
                if exc.code != ErrorCode.ALREADY_FRIENDS:   # a rerun with the same --run-id
                    raise
        return True
    except Exception as exc:
        w.metrics.error(error_kind(exc))
        return False


async def log_in_pairs(w: Worker) -> list[tuple[SimClient, SimClient]]:
    """This process's share of pairs, logged in and befriended."""
    pairs = w.share(w.settings.clients // 2)
    w.target = 2 * pairs
    w.phase = "logging in"
    clients = await w.login_many(2 * pairs, lambda i: f"pair{w.index}-{i // 2}{'ab'[i % 2]}")
    w.phase = "befriending"
    candidates = [(clients[2 * k], clients[2 * k + 1]) for k in range(pairs)
                  if clients[2 * k] is not None and clients[2 * k + 1] is not None]
    ok = await asyncio.gather(*(befriend(w, a, b) for a, b in candidates))
    return [pair for pair, good in zip(candidates, ok) if good]


# -- chat ----------------------------------------------------------------------------------------------
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

        def on_message(frame) -> None:
            message = json.loads(frame.body)["message"]
            key = message["client_msg_id"]
            started = sent_at.get(key)
            if started is not None and key not in delivered:
                delivered.add(key)
                w.metrics.latency("chat_delivery", started)
                w.metrics.count("chat_delivered")
            receipts.append(message["id"])

        async def send_receipts() -> None:
            while client.connected and not (w.stop.is_set() and not receipts):
                await asyncio.sleep(RECEIPT_INTERVAL)
                if receipts:
                    client.send(PacketType.CHAT_DELIVERED, {"ids": receipts[:1000]})
                    del receipts[:1000]
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
        w.metrics.count("chat_sent")
        try:
            await sender.request(PacketType.CHAT_SEND, {"to": to.user["id"], "text": text, "client_msg_id": key},
                                 s.timeout)
        except Exception as exc:
            w.metrics.error(error_kind(exc))
            return
        w.metrics.latency("chat_ack", started)
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


# -- files -----------------------------------------------------------------------------------------------
CHUNK = limits.MAX_FILE_CHUNK


async def files(w: Worker) -> None:
    """Pairs of friends transfer files live (sender online, recipient accepts), one after the
    other per pair, all pairs in parallel, for the duration. Measures each transfer's time
    from offer to delivered, and the bytes per second; the recipient checks the SHA-256."""
    s = w.settings
    pairs = await log_in_pairs(w)
    data = os.urandom(s.file_size)
    digest = hashlib.sha256(data).hexdigest()
    w.phase = "transferring"

    async def transfer(sender: SimClient, recipient: SimClient, seq: int) -> None:
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        done = loop.create_future()
        confirmed = 0
        acked_more = asyncio.Event()
        received = hashlib.sha256()
        got = 0
        transfer_id = ""

        def on_offer(frame) -> None:
            body = json.loads(frame.body)
            asyncio.ensure_future(answer(body["transfer_id"]))

        async def answer(tid: str) -> None:
            try:
                await recipient.request(PacketType.FILE_ANSWER, {"transfer_id": tid, "accept": True}, s.timeout)
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)

        def on_answer(frame) -> None:
            body = json.loads(frame.body)
            if not answered.done():
                answered.set_result(body.get("accepted", False))

        def on_ack(frame) -> None:
            nonlocal confirmed
            body = json.loads(frame.body)
            confirmed = max(confirmed, int(body.get("offset", 0)))
            acked_more.set()

        def on_done(frame) -> None:
            if not done.done():
                done.set_result(json.loads(frame.body))

        def on_chunk(frame) -> None:
            nonlocal got
            payload = memoryview(frame.body)[FILE_CHUNK_HEADER_SIZE:]
            received.update(payload)
            got += len(payload)
            if got >= s.file_size:
                if received.hexdigest() != digest:
                    w.metrics.error("files: checksum mismatch at the recipient")
                final = recipient.request_future(PacketType.FILE_ACK, {"transfer_id": transfer_id, "offset": got,
                                                                       "complete": True}, s.timeout)
                final.add_done_callback(lambda f: f.exception())
            elif got - last_ack[0] >= 2 * CHUNK:
                last_ack[0] = got
                recipient.send(PacketType.FILE_ACK, {"transfer_id": transfer_id, "offset": got})
        last_ack = [0]
        recipient.handlers[PacketType.FILE_OFFER_EVENT] = on_offer
        recipient.handlers[PacketType.FILE_CHUNK] = on_chunk
        sender.handlers[PacketType.FILE_ANSWER_EVENT] = on_answer
        sender.handlers[PacketType.FILE_ACK] = on_ack
        sender.handlers[PacketType.FILE_DONE_EVENT] = on_done
        started = time.monotonic()
        offer = await sender.request(PacketType.FILE_OFFER, {"to": recipient.user["id"], "name": f"load-{seq}.bin",
                                                             "size": s.file_size, "sha256": digest}, s.timeout)
        transfer_id = offer["transfer_id"]
        window = int(offer.get("window", 2 * 1024 * 1024))
        raw_id = bytes.fromhex(transfer_id)
        if not await asyncio.wait_for(answered, s.timeout):
            raise RuntimeError("files: offer declined")
        offset = 0
        while offset < s.file_size:
            while offset + min(CHUNK, s.file_size - offset) - confirmed > window:
                acked_more.clear()
                await asyncio.wait_for(acked_more.wait(), s.timeout)
            piece = data[offset:offset + CHUNK]
            await sender.writable()
            sender.send_frame(_file_chunk(raw_id, offset, piece))
            offset += len(piece)
        await asyncio.wait_for(done, s.timeout)
        w.metrics.latency("file_transfer", started)
        w.metrics.count("file_bytes", s.file_size)
        w.metrics.count("files_done")

    async def pair_loop(a: SimClient, b: SimClient) -> None:
        seq = 0
        while not w.stop.is_set() and a.connected and b.connected:
            seq += 1
            try:
                await transfer(a, b, seq)
            except Exception as exc:
                w.metrics.error(error_kind(exc) if not isinstance(exc, asyncio.TimeoutError) else "files: timeout")
                return

    hold = asyncio.create_task(w.hold(s.duration))
    await asyncio.gather(*(pair_loop(a, b) for a, b in pairs))
    await hold


def _file_chunk(raw_id: bytes, offset: int, payload: bytes) -> bytes:
    from common import frame as wire
    return wire.encode_frame(PacketType.FILE_CHUNK, raw_id + offset.to_bytes(8, "big") + payload)


# -- rooms -----------------------------------------------------------------------------------------------
async def room(w: Worker) -> None:
    """K meetings of M members; every member publishes the pre-encoded H.264 clip at the
    given fps (and Opus audio every 20 ms). Measures capture-to-receive latency per kind and
    counts frames sent, received and missing (dropped by the relay or late)."""
    from common import frame as wire
    s = w.settings
    clip = s.extra["clip"]
    my_rooms = [r for r in range(s.rooms) if r % s.processes == w.index]
    w.target = len(my_rooms) * s.members
    w.phase = "logging in"
    clients = await w.login_many(w.target, lambda i: f"room{w.index}-{i}")
    meetings: list[list[SimClient]] = []
    for k in range(len(my_rooms)):
        members = [c for c in clients[k * s.members:(k + 1) * s.members] if c is not None]
        if len(members) < 2:
            continue
        try:
            created = await members[0].request(PacketType.ROOM_CREATE, {"title": f"load {k}"}, s.timeout)
            number = created["room"]["number"]
            for member in members[1:]:
                await member.request(PacketType.ROOM_JOIN, {"number": number}, s.timeout)
            for member in members:
                await member.request(PacketType.MEDIA_STATE, {"camera": True, "microphone": s.audio,
                                                              "screen": False}, s.timeout)
        except Exception as exc:
            w.metrics.error(error_kind(exc))
            continue
        meetings.append(members)
    w.metrics.count("rooms_joined", len(meetings))

    def on_media(frame) -> None:
        header = MediaHeader(*MEDIA_HEADER.unpack_from(frame.body))
        delay = (time.time_ns() // 1000 - header.capture_us) / 1e6   # same machine, same clock
        name = "video" if header.kind == MediaKind.CAMERA else "audio"
        w.metrics.count(f"{name}_frames_received")
        now = time.monotonic()
        w.metrics.latency(f"{name}_latency", now - delay, now)

    async def publish(member: SimClient, kind: MediaKind, fanout: int) -> None:
        video = kind == MediaKind.CAMERA
        packets = clip.video if video else [(p, False) for p in clip.audio]
        interval = 1.0 / s.fps if video else 0.02
        name = "video" if video else "audio"
        position = [0]

        def on_keyframe_request(frame) -> None:
            if json.loads(frame.body).get("kind") == MediaKind.CAMERA:
                position[0] = 0       # the clip starts with a keyframe
                w.metrics.count("keyframe_requests")
        if video:
            member.handlers[PacketType.KEYFRAME_REQUEST_EVENT] = on_keyframe_request
        loop = asyncio.get_running_loop()
        next_at = loop.time() + w.random.uniform(0, interval)
        seq = 0
        while not w.stop.is_set() and member.connected:
            await w.sleep_or_stop(max(0.0, next_at - loop.time()))
            if w.stop.is_set():
                break
            payload, keyframe = packets[position[0] % len(packets)]
            position[0] += 1
            seq = (seq + 1) & 0xFFFFFFFF
            header = MediaHeader(0, kind, Codec.H264 if video else Codec.OPUS, FLAG_KEYFRAME if keyframe else 0,
                                 seq, time.time_ns() // 1000)
            member.send_frame(wire.encode_frame(PacketType.MEDIA_FRAME, pack_media(header, payload)))
            w.metrics.count(f"{name}_frames_sent")
            w.metrics.count(f"{name}_frames_expected", fanout)
            next_at += interval
            if loop.time() - next_at > 1.0:      # fell behind (overloaded generator): do not burst
                w.metrics.count(f"{name}_frames_skipped_by_generator")
                next_at = loop.time()

    w.phase = "publishing"
    tasks = []
    for members in meetings:
        for member in members:
            member.handlers[PacketType.MEDIA_FRAME] = on_media
            tasks.append(asyncio.create_task(publish(member, MediaKind.CAMERA, len(members) - 1)))
            if s.audio and clip.audio:
                tasks.append(asyncio.create_task(publish(member, MediaKind.MICROPHONE, len(members) - 1)))
    await w.hold(s.duration)
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.5)   # frames still on the wire
    for name in ("video", "audio"):
        missing = w.metrics.counters[f"{name}_frames_expected"] - w.metrics.counters[f"{name}_frames_received"]
        if missing > 0:
            w.metrics.count(f"{name}_frames_missing", missing)


SCENARIOS: dict[str, Callable[[Worker], Awaitable[None]]] = {
    "connect": connect,
    "chat": chat,
    "files": files,
    "room": room,
}
