"""Finding users and friend requests, answers, lists and removal: three clients, both backends."""
from __future__ import annotations

import threading

import pytest

from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from tests.helpers import wait_until
from tests.social import befriend, trio, uid, wait_session_ready  # noqa: F401 - trio is a fixture


def error_of(fn, *args, **kwargs) -> ErrorCode:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    return info.value.code


def test_search_by_phone(trio):
    _, (a, b, _c) = trio
    reply = a.kernel.friends.search(b.phone)
    assert reply["friend"] is False
    assert reply["user"] == {"id": uid(b), "phone": b.phone, "nickname": "Bob", "signature": "",
                             "avatar": {"builtin": 0, "version": 0}}
    assert error_of(a.kernel.friends.search, "19999999999") == ErrorCode.USER_NOT_FOUND
    assert error_of(a.kernel.request, PacketType.USER_SEARCH, {"phone": "12ab"}) == ErrorCode.INVALID_PHONE


def test_request_accept_and_every_refusal(trio):
    _, (a, b, _c) = trio
    mark = b.events.mark()
    reply = a.kernel.friends.add(phone=b.phone, greeting="hi, it's Alice")
    assert reply["status"] == "pending"
    request = b.events.wait_for("friend_request", start=mark)["request"]
    assert request["from"] == uid(a) and request["greeting"] == "hi, it's Alice"
    assert request["user"]["nickname"] == "Alice"
    assert request["id"] in b.kernel.friends.incoming and reply["request"]["id"] in a.kernel.friends.outgoing

    assert error_of(a.kernel.friends.add, user_id=uid(b)) == ErrorCode.REQUEST_PENDING
    assert error_of(a.kernel.friends.add, user_id=uid(a)) == ErrorCode.CANNOT_ADD_SELF
    assert error_of(a.kernel.friends.add, phone=a.phone) == ErrorCode.CANNOT_ADD_SELF
    assert error_of(a.kernel.friends.add, phone="19999999998") == ErrorCode.USER_NOT_FOUND
    assert error_of(a.kernel.request, PacketType.FRIEND_REQUEST,
                    {"user_id": uid(b), "greeting": "x" * 101}) == ErrorCode.BAD_REQUEST
    # only the addressee may answer
    assert error_of(a.kernel.friends.answer, request["id"], True) == ErrorCode.NO_SUCH_REQUEST

    mark_a = a.events.mark()
    answer = b.kernel.friends.answer(request["id"], True)
    assert answer["accepted"] is True and answer["friend"]["id"] == uid(a)
    told = a.events.wait_for("friend_answer", start=mark_a)
    assert told["accepted"] is True and told["user"]["id"] == uid(b)
    added = a.events.wait_for("friend_added", start=mark_a)["friend"]
    assert added["id"] == uid(b)
    b.events.wait_for("friend_added", lambda e: e["friend"]["id"] == uid(a))
    # Each sees the other online: in the reply and the event, or, when a login moments ago was
    # still being announced (its friend list loads after the login reply), by FRIEND_ONLINE.
    wait_until(lambda: b.kernel.friends.is_online(uid(a)) and a.kernel.friends.is_online(uid(b)), 5,
               "the new friends seeing each other online")
    assert [f["id"] for f in a.kernel.friends.friend_list()] == [uid(b)]
    assert [f["id"] for f in b.kernel.friends.friend_list()] == [uid(a)]
    assert not b.kernel.friends.incoming and not a.kernel.friends.outgoing

    assert error_of(a.kernel.friends.add, user_id=uid(b)) == ErrorCode.ALREADY_FRIENDS
    assert error_of(b.kernel.friends.add, user_id=uid(a)) == ErrorCode.ALREADY_FRIENDS
    assert error_of(b.kernel.friends.answer, request["id"], True) == ErrorCode.NO_SUCH_REQUEST
    assert a.kernel.friends.search(b.phone)["friend"] is True


def test_request_to_offline_user_waits_for_login_then_refusal(trio):
    _, (a, _b, c) = trio
    c_id = uid(c)
    c.kernel.logout()
    a.kernel.friends.add(user_id=c_id, greeting="hello")
    mark = c.events.mark()
    c.kernel.login(c.phone, c.password)
    c.events.wait_for("friend_requests_changed", lambda e: len(e["incoming"]) == 1, start=mark)
    [request] = c.kernel.friends.incoming.values()
    assert request["from"] == uid(a) and request["greeting"] == "hello"

    mark_a = a.events.mark()
    assert c.kernel.friends.answer(request["id"], False) == {"request_id": request["id"], "accepted": False}
    told = a.events.wait_for("friend_answer", start=mark_a)
    assert told["accepted"] is False and told["user"]["id"] == uid(c)
    assert a.kernel.friends.friend_list() == [] and c.kernel.friends.friend_list() == []
    assert not a.kernel.friends.outgoing and not c.kernel.friends.incoming
    # a refused request is gone: asking again is allowed
    assert a.kernel.friends.add(user_id=uid(c))["status"] == "pending"


def test_requests_both_ways_make_friends(trio):
    _, (a, b, c) = trio
    assert b.kernel.friends.add(user_id=uid(c))["status"] == "pending"
    mark_b = b.events.mark()
    reply = c.kernel.friends.add(user_id=uid(b))
    assert reply["status"] == "friends" and reply["friend"]["id"] == uid(b)
    b.events.wait_for("friend_added", lambda e: e["friend"]["id"] == uid(c), start=mark_b)
    assert [f["id"] for f in b.kernel.friends.friend_list()] == [uid(c)]
    assert not b.kernel.friends.outgoing

    # at the very same moment from both sides: friends, and no request is left behind
    results, errors = [], []

    def ask(x, y):
        try:
            results.append(x.kernel.friends.add(user_id=uid(y))["status"])
        except ApiError as exc:
            errors.append(exc.code)
    threads = [threading.Thread(target=ask, args=(a, c)), threading.Thread(target=ask, args=(c, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert sorted(results) == ["friends", "pending"] and not errors
    a.events.wait_for("friend_added", lambda e: e["friend"]["id"] == uid(c))
    c.events.wait_for("friend_added", lambda e: e["friend"]["id"] == uid(a))
    assert a.kernel.request(PacketType.FRIEND_REQUESTS, {"direction": "outgoing"})["requests"] == []
    assert c.kernel.request(PacketType.FRIEND_REQUESTS, {"direction": "outgoing"})["requests"] == []


def test_remove_friend_updates_both_lists_and_keeps_history(trio):
    _, (a, b, _c) = trio
    befriend(a, b)
    a.kernel.chat.send_and_wait(uid(b), "before the quarrel")
    mark_a, mark_b = a.events.mark(), b.events.mark()
    assert a.kernel.friends.remove(uid(b)) == {"user_id": uid(b)}
    a.events.wait_for("friend_removed", lambda e: e["user_id"] == uid(b), start=mark_a)
    b.events.wait_for("friend_removed", lambda e: e["user_id"] == uid(a), start=mark_b)
    assert a.kernel.friends.friend_list() == [] and b.kernel.friends.friend_list() == []
    for me, peer in ((a, b), (b, a)):
        texts = [m["text"] for m in me.kernel.chat.history(uid(peer))["messages"]]
        assert texts == ["before the quarrel"]
    assert error_of(a.kernel.friends.remove, uid(b)) == ErrorCode.NOT_FRIENDS
    assert error_of(a.kernel.chat.send_and_wait, uid(b), "still there?") == ErrorCode.NOT_FRIENDS


def test_long_friend_list_comes_in_pages(storage, server_factory, client_factory):
    running = server_factory(storage=storage)
    me = client_factory(running.port)
    me.register_and_login("Popular")
    wait_session_ready(me)
    my_id = uid(me)
    for n in range(260):
        friend = storage.create_user(f"177{n:08d}", "x", f"friend {n} " + "é" * 20, 1)
        storage.add_friendship(my_id, friend.id, 1)
    first = me.kernel.request(PacketType.FRIEND_LIST, {})
    assert first["more"] is True and len(first["friends"]) < 260
    mark = me.events.mark()
    me.kernel.friends.refresh()
    friends = me.events.wait_for("friends_changed", start=mark)["friends"]
    assert len(friends) == 260 and not any(f["online"] for f in friends)


def test_crossing_requests_race_in_storage(storage):
    """Two transactions asking each other at the same instant: exactly one stores a request and
    the other turns it into a friendship; nothing is left pending."""
    for n in range(15):
        a = storage.create_user(f"1660000{n:04d}", "x", "a", 1).id
        b = storage.create_user(f"1670000{n:04d}", "x", "b", 1).id
        start, outcomes = threading.Barrier(2), []

        def ask(x, y):
            start.wait(5)
            outcomes.append(storage.request_friend(x, y, "", 1).status)
        threads = [threading.Thread(target=ask, args=(a, b)), threading.Thread(target=ask, args=(b, a))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(15)
        assert sorted(outcomes) == ["friends", "pending"], n
        assert storage.are_friends(a, b) and storage.are_friends(b, a)
        assert storage.friend_requests_page(a, True, 0, 10) == [] and storage.friend_requests_page(b, True, 0, 10) == []
