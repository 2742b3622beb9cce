"""Meetings in the client core: rooms (create, join, host controls, chat) and the media seam.

``kernel.rooms`` is what the media pipeline, the bots, the UI and the tests use:

* ``publish(...)`` hands one encoded frame to the network thread (thread-safe, never blocks)
  and numbers it within its stream;
* ``add_media_listener(fn)`` gets every received MEDIA_FRAME on the network thread;
* ``add_keyframe_listener(fn)`` hears when a keyframe of this client's own stream is needed:
  the server asked for one, or ``publish`` dropped video locally (the frames after a dropped
  one cannot be decoded, so video is held back until the next keyframe).

``room`` is None or the room as the server last described it (see ROOM_MEMBERS_EVENT in
docs/PROTOCOL.md). Events through ``kernel.emit``: ``room_members`` (room), ``room_chat``
(user_id, nickname, text, time), ``room_removed`` (reason, message), ``room_mute`` (by, all),
``room_closed`` (message: the host ended the meeting, or it ended while we were away),
``room_left``, ``room_waiting`` (number, title: we wait to be let into a locked meeting),
``room_refused`` (number, message), ``room_waiting_list`` (number, waiting: for the host, who
is in the waiting room).

Joining a locked meeting waits in its waiting room: ``join`` blocks until the host lets us in
(it returns the room) or refuses (ApiError ROOM_LOCKED); ``leave`` stops waiting (ApiError
NOT_WAITING from ``join``).

After a reconnect the server gives a member the place back by itself (within its grace
period); the client then checks by joining again, so a place that was lost (the meeting
ended, or the grace period ran out and the room was locked) ends in ``room_closed`` or
``room_removed`` instead of a meeting that silently shows nobody.
"""
from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

from common import frame as wire
from common import limits
from common.errors import ApiError, ErrorCode
from common.media import FLAG_KEYFRAME, Codec, MediaHeader, MediaKind, media_frame, unpack_media
from common.packets import PacketType

from .events import EventKind, SessionState
from .kernel_api import KernelApi

log = logging.getLogger("client.rooms")

# Video is dropped locally (and a keyframe asked of the encoder) once this much is waiting
# to be sent: about two seconds of 640x480 video at 500 kbit/s.
VIDEO_SEND_BUDGET = 128 * 1024

MediaListener = Callable[[MediaHeader, bytes], None]
KeyframeListener = Callable[[MediaKind], None]


ADMISSION_TIMEOUT = 3600.0    # how long ``join`` waits in a waiting room at most


class RoomsClient:
    def __init__(self, kernel: KernelApi) -> None:
        self.kernel = kernel
        self.room: dict | None = None
        self.waiting: dict | None = None          # {"number", "title"} while in a waiting room
        self.waiting_list: list[dict] = []        # as host: who waits to be let in
        self._password = ""
        self._media_state: dict | None = None      # what we last told the room we send
        self._admission: Future | None = None
        self._waiting_lock = threading.Lock()
        self._joining: str | None = None          # the number of a ROOM_JOIN in flight
        self._early_answer: dict | None = None    # a ROOM_ADMIT_EVENT that came before its reply
        self._lock = threading.Lock()
        self._seq: dict[int, int] = {}
        self._held: set[int] = set()        # video kinds dropped locally until the next keyframe
        self._media_listeners: list[MediaListener] = []
        self._keyframe_listeners: list[KeyframeListener] = []
        kernel.on_packet(PacketType.ROOM_MEMBERS_EVENT, self._on_members)
        kernel.on_packet(PacketType.ROOM_CHAT_EVENT, self._on_chat)
        kernel.on_packet(PacketType.ROOM_REMOVED_EVENT, self._on_removed)
        kernel.on_packet(PacketType.ROOM_MUTE_EVENT, self._on_mute)
        kernel.on_packet(PacketType.ROOM_WAITING_EVENT, self._on_waiting_list)
        kernel.on_packet(PacketType.ROOM_ADMIT_EVENT, self._on_admit)
        kernel.on_packet(PacketType.KEYFRAME_REQUEST_EVENT, self._on_keyframe_request)
        kernel.on_binary(PacketType.MEDIA_FRAME, self._on_media)
        kernel.session_hooks.append(self._after_session)

    # -- rooms (blocking requests) ---------------------------------------------------------------
    def create(self, title: str = "", password: str = "") -> dict:
        reply = self.kernel.request(PacketType.ROOM_CREATE, {"title": title, "password": password})
        return self._entered(reply["room"], password)

    def join(self, number: str, password: str = "", timeout: float = ADMISSION_TIMEOUT) -> dict:
        """Join; for a locked meeting, wait (up to ``timeout``) until the host answers."""
        admission: Future = Future()
        self._admission = admission
        try:
            reply = self._send_join(str(number), password)
            if "room" in reply:
                return self._entered(reply["room"], password)
            return admission.result(timeout)
        except FutureTimeout:
            self.leave()
            raise ApiError(ErrorCode.ROOM_LOCKED, "nobody let you in") from None
        except ApiError:
            if admission.done():            # refused, or we stopped waiting (even mid-request)
                self.waiting = None
            raise
        finally:
            if self._admission is admission:
                self._admission = None

    def _send_join(self, number: str, password: str) -> dict:
        with self._waiting_lock:
            self._joining, self._early_answer = number, None
        try:
            reply = self.kernel.request(PacketType.ROOM_JOIN, {"number": number, "password": password})
        except BaseException:
            with self._waiting_lock:
                self._joining = None
            raise
        with self._waiting_lock:
            self._joining = None
            early, self._early_answer = self._early_answer, None
            if reply.get("waiting"):
                self._password = password
                self.waiting = {"number": reply.get("number", number), "title": reply.get("title", "")}
        if reply.get("waiting"):
            self.kernel.emit(EventKind.ROOM_WAITING, number=self.waiting["number"], title=self.waiting["title"])
            if early is not None:           # the host answered before our thread saw the reply
                self._on_admit(early)
        return reply

    def leave(self) -> None:
        """Leave the meeting, or stop waiting to be let in."""
        try:
            self.kernel.request(PacketType.ROOM_LEAVE, {})
        except ApiError as exc:
            if exc.code != ErrorCode.NOT_IN_ROOM:
                raise
        if self.waiting is not None or (self._admission is not None and self.room is None):
            self._answered(ApiError(ErrorCode.NOT_WAITING, "you left the waiting room"))
            return
        self._forget()
        self.kernel.emit(EventKind.ROOM_LEFT)

    def end(self) -> None:
        """Host: end the meeting for everyone."""
        self.kernel.request(PacketType.ROOM_END, {})
        self._forget()
        self.kernel.emit(EventKind.ROOM_CLOSED, message="You ended the meeting for everyone.")

    def hand_over(self, user_id: int) -> None:
        """Host: make another member the host."""
        self._set_room(self.kernel.request(PacketType.ROOM_HOST, {"user_id": user_id})["room"])

    def admit(self, user_id: int, admit: bool = True) -> None:
        """Host: let somebody in from the waiting room (or refuse them)."""
        self.kernel.request(PacketType.ROOM_ADMIT, {"user_id": user_id, "admit": admit})

    def kick(self, user_id: int) -> None:
        self.kernel.request(PacketType.ROOM_KICK, {"user_id": user_id})

    def mute(self, user_id: int | None = None) -> None:
        """Ask one member (or, with None, everyone else) to mute their microphone."""
        self.kernel.request(PacketType.ROOM_MUTE, {"user_id": user_id})

    def lock(self, locked: bool) -> None:
        self._set_room(self.kernel.request(PacketType.ROOM_LOCK, {"locked": locked})["room"])

    def chat(self, text: str) -> int:
        """Send a message to the room; returns the server's time stamp (ms)."""
        return int(self.kernel.request(PacketType.ROOM_CHAT, {"text": text})["time"])

    def set_media_state(self, camera: bool, microphone: bool, screen: bool) -> None:
        self._media_state = {"camera": camera, "microphone": microphone, "screen": screen}
        reply = self.kernel.request(PacketType.MEDIA_STATE, self._media_state)
        self._set_room(reply["room"])

    def request_keyframe(self, user_id: int, kind: MediaKind) -> None:
        """Ask for a keyframe of another member's stream (also the way to report loss)."""
        self.kernel.send(PacketType.KEYFRAME_REQUEST, {"user_id": user_id, "kind": int(kind)})

    def subscribe(self, user_id: int, kind: MediaKind, paused: bool) -> None:
        """Pause (or resume) receiving one member's stream."""
        self.kernel.request(PacketType.MEDIA_SUBSCRIBE, {"user_id": user_id, "kind": int(kind), "paused": paused})

    def stats(self) -> dict:
        """The relay's per-stream counters for this room (MEDIA_STATS)."""
        return self.kernel.request(PacketType.MEDIA_STATS, {})

    # -- media ---------------------------------------------------------------------------------------
    def publish(self, kind: MediaKind, codec: Codec, payload: bytes, keyframe: bool, capture_us: int) -> bool:
        """Queue one encoded frame (any thread, never blocks). False when the frame was not
        sent: not in a room, not connected, or video dropped because the link is congested."""
        if len(payload) > limits.MAX_MEDIA_PAYLOAD:
            raise ValueError(f"a media frame carries at most {limits.MAX_MEDIA_PAYLOAD} bytes")
        if self.room is None:
            return False
        if self.kernel.state != SessionState.ONLINE:
            # reconnecting: nothing goes out before the session is resumed (the server would
            # refuse a large frame from a connection that has not logged in yet)
            if kind != MediaKind.MICROPHONE:
                with self._lock:
                    self._held.add(kind)
            return False
        hold = False
        with self._lock:
            if kind != MediaKind.MICROPHONE:
                if keyframe:
                    self._held.discard(kind)
                hold = kind in self._held or self.kernel.queued_bytes > VIDEO_SEND_BUDGET
                newly_held = hold and kind not in self._held
                if hold:
                    self._held.add(kind)
            if not hold:
                return self._send_locked(kind, codec, payload, keyframe, capture_us)
        if newly_held:
            self._notify_keyframe(kind)     # outside the lock: a listener may publish at once
        return False

    def _send_locked(self, kind: MediaKind, codec: Codec, payload: bytes, keyframe: bool, capture_us: int) -> bool:
        seq = self._seq.get(kind, 0)
        header = MediaHeader(0, kind, codec, FLAG_KEYFRAME if keyframe else 0, seq, capture_us)
        if not self.kernel.send_frame(media_frame(header, payload)):
            return False
        self._seq[kind] = (seq + 1) & 0xFFFFFFFF
        return True

    def add_media_listener(self, fn: MediaListener) -> None:
        self._media_listeners.append(fn)

    def add_keyframe_listener(self, fn: KeyframeListener) -> None:
        self._keyframe_listeners.append(fn)

    def remove_media_listener(self, fn: MediaListener) -> None:
        if fn in self._media_listeners:
            self._media_listeners.remove(fn)

    def remove_keyframe_listener(self, fn: KeyframeListener) -> None:
        if fn in self._keyframe_listeners:
            self._keyframe_listeners.remove(fn)

    # -- network thread ------------------------------------------------------------------------------
    def _on_media(self, body: bytes) -> None:
        try:
            header, payload = unpack_media(body)
        except wire.ProtocolError as exc:
            log.warning("bad MEDIA_FRAME from the server: %s", exc)
            return
        data = bytes(payload)
        for listener in list(self._media_listeners):
            try:
                listener(header, data)
            except Exception:
                log.exception("media listener failed")

    def _on_keyframe_request(self, body: dict) -> None:
        try:
            kind = MediaKind(body.get("kind"))
        except ValueError:
            return
        self._notify_keyframe(kind)

    def _notify_keyframe(self, kind: MediaKind) -> None:
        for listener in list(self._keyframe_listeners):
            try:
                listener(kind)
            except Exception:
                log.exception("keyframe listener failed")

    def _on_members(self, body: dict) -> None:
        room = body.get("room")
        if isinstance(room, dict):
            self._set_room(room)

    def _on_chat(self, body: dict) -> None:
        self.kernel.emit(EventKind.ROOM_CHAT, user_id=body.get("user_id"), nickname=body.get("nickname", ""),
                         text=body.get("text", ""), time=body.get("time", 0))

    def _on_removed(self, body: dict) -> None:
        if self.room is not None and body.get("number") not in (None, self.room.get("number")):
            return
        self._forget()
        reason = str(body.get("reason", ""))
        message = str(body.get("message", ""))
        if reason in ("closed", "ended"):
            self.kernel.emit(EventKind.ROOM_CLOSED, message=message)
        else:
            self.kernel.emit(EventKind.ROOM_REMOVED, reason=reason, message=message)

    def _on_waiting_list(self, body: dict) -> None:
        waiting = body.get("waiting")
        if isinstance(waiting, list):
            self.waiting_list = [w for w in waiting if isinstance(w, dict)]
            self.kernel.emit(EventKind.ROOM_WAITING_LIST, number=body.get("number"), waiting=self.waiting_list)

    def _on_admit(self, body: dict) -> None:
        with self._waiting_lock:
            if self.waiting is None or body.get("number") != self.waiting["number"]:
                if self._joining is not None and body.get("number") == self._joining:
                    self._early_answer = body       # kept until the join's reply is seen
                return
        if body.get("admitted") and isinstance(body.get("room"), dict):
            self.waiting = None
            self._answered(self._entered(body["room"], self._password))
        else:
            message = str(body.get("message") or "the host did not let you in")
            self.kernel.emit(EventKind.ROOM_REFUSED, number=body.get("number"), message=message)
            self._answered(ApiError(ErrorCode.ROOM_LOCKED, message))

    def _answered(self, outcome: dict | ApiError) -> None:
        """The wait in the waiting room is over: let a blocked ``join`` return or raise."""
        self.waiting = None
        admission, self._admission = self._admission, None
        if admission is None or admission.done():
            return
        if isinstance(outcome, ApiError):
            self._password = ""
            admission.set_exception(outcome)
        else:
            admission.set_result(outcome)

    def _on_mute(self, body: dict) -> None:
        self.kernel.emit(EventKind.ROOM_MUTE, by=body.get("by"), all=bool(body.get("all")))

    # -- state ---------------------------------------------------------------------------------------
    def _entered(self, room: dict, password: str) -> dict:
        self._password = password
        with self._lock:
            self._seq.clear()
            self._held.clear()
        self._set_room(room)
        return room

    def _set_room(self, room: dict) -> None:
        self.room = room
        self.kernel.emit(EventKind.ROOM_MEMBERS, room=room)

    def _forget(self) -> None:
        self.room = None
        self.waiting_list = []
        self._password = ""
        self._media_state = None

    def _after_session(self, resumed: bool) -> None:
        """Task thread, after a reconnect: make sure the place in the room is still ours."""
        room = self.room
        if resumed and self.waiting is not None:
            self._send_join(self.waiting["number"], self._password)   # the server forgot our turn
            return
        if not resumed or room is None:
            return
        try:
            reply = self._send_join(room["number"], self._password)
        except ApiError as exc:
            if exc.code == ErrorCode.ALREADY_IN_ROOM and exc.details.get("number") == room["number"]:
                self._back_in_room()        # the server kept the place
                return
            if self.room is None or self.room.get("number") != room["number"]:
                return                      # the user left or joined another room meanwhile
            self._forget()
            if exc.code == ErrorCode.NO_SUCH_ROOM:
                self.kernel.emit(EventKind.ROOM_CLOSED, message="the meeting ended while you were away")
            else:
                self.kernel.emit(EventKind.ROOM_REMOVED, reason="rejoin_failed", message=exc.message)
            return
        if "room" in reply:
            self._entered(reply["room"], self._password)
            self._back_in_room()
        else:                               # locked meanwhile: we wait to be let in again
            self.room = None

    def _back_in_room(self) -> None:
        """After a reconnect: tell the room again what we send (after a server restart it knows
        nothing of it), and start our video again at a keyframe (the others missed frames)."""
        if self._media_state is not None:
            self.set_media_state(**self._media_state)
        for kind in (MediaKind.CAMERA, MediaKind.SCREEN):
            self._notify_keyframe(kind)
