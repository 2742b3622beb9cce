"""Friends in the client core: the friend list with presence, pending requests, and the
requests a user makes (search, ask, answer, remove).

After every login and resume the lists are fetched again; events keep them current in
between. The UI listens for: ``friends_changed``, ``friend_requests_changed``,
``friend_request`` (a new incoming one), ``friend_answer``, ``friend_added``, ``friend_removed``,
``friend_online``, ``friend_offline``, ``profile_changed``.
"""
from __future__ import annotations

import threading

from common.packets import PacketType
from common.validation import normalize_phone

from .events import Event, EventKind
from .kernel_api import KernelApi
from .ordered import request_in_order, wait


class FriendsClient:
    def __init__(self, kernel: KernelApi) -> None:
        self.kernel = kernel
        self.friends: dict[int, dict] = {}     # user id -> User + "online"
        self.incoming: dict[int, dict] = {}    # request id -> request (from others to me)
        self.outgoing: dict[int, dict] = {}    # request id -> request (from me)
        self._lock = threading.RLock()
        self._touched: set[int] = set()        # friends changed by events during a list fetch
        self._touched_requests: set[int] = set()
        for packet_type, fn in ((PacketType.FRIEND_REQUEST_EVENT, self._on_request),
                                (PacketType.FRIEND_ANSWER_EVENT, self._on_answer),
                                (PacketType.FRIEND_ADDED_EVENT, self._on_added),
                                (PacketType.FRIEND_REMOVED_EVENT, self._on_removed),
                                (PacketType.FRIEND_ONLINE, self._on_online),
                                (PacketType.FRIEND_OFFLINE, self._on_offline),
                                (PacketType.PROFILE_CHANGED_EVENT, self._on_profile)):
            kernel.on_packet(packet_type, fn)
        kernel.session_hooks.append(self._on_session)
        kernel.add_listener(self._on_kernel_event)

    # -- reading state ------------------------------------------------------------------------------
    def friend_list(self) -> list[dict]:
        with self._lock:
            return sorted((dict(f) for f in self.friends.values()), key=lambda f: f["nickname"].lower())

    def is_online(self, user_id: int) -> bool:
        with self._lock:
            return bool(self.friends.get(user_id, {}).get("online"))

    # -- requests -------------------------------------------------------------------------------------
    def search(self, phone: str) -> dict:
        """{"user": User, "friend": bool}; ApiError USER_NOT_FOUND or INVALID_PHONE."""
        return self.kernel.request(PacketType.USER_SEARCH, {"phone": normalize_phone(phone)})

    def add(self, user_id: int | None = None, phone: str | None = None, greeting: str = "") -> dict:
        """Ask for friendship. The reply's status is "pending" or, if they had asked you too,
        "friends"."""
        body: dict = {"greeting": greeting}
        if user_id is not None:
            body["user_id"] = user_id
        else:
            body["phone"] = normalize_phone(phone or "")

        def apply(reply: dict) -> None:
            if reply.get("status") == "pending":
                self.outgoing[reply["request"]["id"]] = reply["request"]
                self._touched_requests.add(reply["request"]["id"])
                self._requests_changed()
        return wait(self.kernel, request_in_order(self.kernel, self._lock, PacketType.FRIEND_REQUEST, body, apply))

    def answer(self, request_id: int, accept: bool) -> dict:
        def apply(reply: dict) -> None:
            self.incoming.pop(request_id, None)
            self._requests_changed()
        return wait(self.kernel, request_in_order(self.kernel, self._lock, PacketType.FRIEND_ANSWER,
                                                  {"request_id": request_id, "accept": accept}, apply))

    def remove(self, user_id: int) -> dict:
        """Unfriend; both lists update through FRIEND_REMOVED_EVENT. The history stays."""
        return self.kernel.request(PacketType.FRIEND_REMOVE, {"user_id": user_id})

    def refresh(self) -> None:
        """Fetch the friend list (with presence) and the pending requests again."""
        self._fetch_friends()
        self._fetch_requests()

    # -- fetching ------------------------------------------------------------------------------------
    def _on_session(self, resumed: bool) -> None:
        self.refresh()

    def _fetch_friends(self) -> None:
        seen: set[int] = set()
        with self._lock:
            self._touched = set()

        def apply(reply: dict) -> None:
            for friend in reply.get("friends", []):
                seen.add(friend["id"])
                self.friends[friend["id"]] = friend
            if not reply.get("more"):
                for gone in set(self.friends) - seen - self._touched:
                    del self.friends[gone]
                self.kernel.emit(EventKind.FRIENDS_CHANGED, friends=self.friend_list())

        after = 0
        while True:
            reply = wait(self.kernel, request_in_order(self.kernel, self._lock, PacketType.FRIEND_LIST,
                                                       {"after": after}, apply))
            if not reply.get("more"):
                return
            after = reply["next"]

    def _fetch_requests(self) -> None:
        for direction in ("incoming", "outgoing"):
            seen: set[int] = set()
            with self._lock:
                self._touched_requests = set()

            def apply(reply: dict, direction: str = direction, seen: set[int] = seen) -> None:
                table = self.incoming if direction == "incoming" else self.outgoing
                for request in reply.get("requests", []):
                    seen.add(request["id"])
                    table[request["id"]] = request
                if not reply.get("more"):
                    for gone in set(table) - seen - self._touched_requests:
                        del table[gone]
                    self._requests_changed()

            after = 0
            while True:
                reply = wait(self.kernel, request_in_order(self.kernel, self._lock, PacketType.FRIEND_REQUESTS,
                                                           {"direction": direction, "after": after}, apply))
                if not reply.get("more"):
                    break
                after = reply["next"]

    def _requests_changed(self) -> None:
        self.kernel.emit(EventKind.FRIEND_REQUESTS_CHANGED, incoming=list(self.incoming.values()),
                         outgoing=list(self.outgoing.values()))

    def _on_kernel_event(self, event: "Event") -> None:
        if event.kind == EventKind.LOGGED_OUT:
            with self._lock:
                self.friends.clear()
                self.incoming.clear()
                self.outgoing.clear()
            self.kernel.emit(EventKind.FRIENDS_CHANGED, friends=[])
            self._requests_changed()

    # -- events (network thread) ------------------------------------------------------------------------
    def _on_request(self, body: dict) -> None:
        request = body["request"]
        with self._lock:
            self.incoming[request["id"]] = request
            self._touched_requests.add(request["id"])
        self.kernel.emit(EventKind.FRIEND_REQUEST, request=request)
        self._requests_changed()

    def _on_answer(self, body: dict) -> None:
        with self._lock:
            self.outgoing.pop(body["request_id"], None)
        self.kernel.emit(EventKind.FRIEND_ANSWER, request_id=body["request_id"], accepted=body["accepted"],
                         user=body["user"])
        self._requests_changed()

    def _on_added(self, body: dict) -> None:
        friend = body["friend"]
        with self._lock:
            self.friends[friend["id"]] = friend
            self._touched.add(friend["id"])
            settled = 0
            for table, side in ((self.incoming, "from"), (self.outgoing, "to")):
                for request_id in [k for k, r in table.items() if r[side] == friend["id"]]:
                    del table[request_id]
                    settled += 1
        self.kernel.emit(EventKind.FRIEND_ADDED, friend=friend)
        self.kernel.emit(EventKind.FRIENDS_CHANGED, friends=self.friend_list())
        if settled:
            self._requests_changed()

    def _on_removed(self, body: dict) -> None:
        user_id = body["user_id"]
        with self._lock:
            self.friends.pop(user_id, None)
            self._touched.add(user_id)
        self.kernel.emit(EventKind.FRIEND_REMOVED, user_id=user_id)
        self.kernel.emit(EventKind.FRIENDS_CHANGED, friends=self.friend_list())

    def _set_online(self, user_id: int, online: bool) -> None:
        with self._lock:
            if user_id in self.friends:
                self.friends[user_id]["online"] = online

    def _on_online(self, body: dict) -> None:
        self._set_online(body["user_id"], True)
        self.kernel.emit(EventKind.FRIEND_ONLINE, user_id=body["user_id"])

    def _on_offline(self, body: dict) -> None:
        self._set_online(body["user_id"], False)
        self.kernel.emit(EventKind.FRIEND_OFFLINE, user_id=body["user_id"])

    def _on_profile(self, body: dict) -> None:
        user = body["user"]
        with self._lock:
            if user["id"] in self.friends:
                self.friends[user["id"]] = {**user, "online": self.friends[user["id"]].get("online", False)}
        self.kernel.emit(EventKind.PROFILE_CHANGED, user=user)
