"""`files`: pairs of friends transferring files over the live path."""
from __future__ import annotations

import asyncio
import hashlib
import os
import time

from common import limits, messages
from common.chunks import chunk_frame, unpack_chunk
from common.packets import PacketType

from ..sim import SimClient, error_kind
from ..worker import Worker
from .pairs import log_in_pairs

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

        def on_offer(offer: messages.Offer) -> None:
            asyncio.ensure_future(answer(offer.transfer_id))

        async def answer(tid: str) -> None:
            try:
                await recipient.request(PacketType.FILE_ANSWER, {"transfer_id": tid, "accept": True}, s.timeout)
            except Exception as exc:
                if not done.done():
                    done.set_exception(exc)

        def on_answer(event: messages.FileAnswerEvent) -> None:
            if not answered.done():
                answered.set_result(event.accepted)

        def on_ack(ack: messages.FileAck) -> None:
            nonlocal confirmed
            confirmed = max(confirmed, ack.offset)
            acked_more.set()

        def on_done(event: messages.FileDoneEvent) -> None:
            if not done.done():
                done.set_result(event)

        def on_chunk(body: bytes) -> None:
            nonlocal got
            chunk = unpack_chunk(body)
            if chunk is None:
                return
            payload = chunk[1]
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
            sender.send_frame(chunk_frame(raw_id, offset, piece))
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

