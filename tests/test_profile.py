"""Profiles: nickname and signature, built-in avatars, uploaded pictures, hostile uploads."""
from __future__ import annotations

import base64
import io
import os

import pytest
from PIL import Image

from client.profile import builtin_avatar, builtin_avatar_count
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from tests.social import befriend, trio, uid  # noqa: F401 - trio is a fixture


def error_of(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)
    return info.value


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image


def test_nickname_and_signature(trio):
    _, (a, b, c) = trio
    befriend(a, b)
    mark_b = b.events.mark()
    user = a.kernel.profile.update(nickname="  Alice L.  ", signature="out for lunch")
    assert user["nickname"] == "Alice L." and user["signature"] == "out for lunch"
    assert a.kernel.user["nickname"] == "Alice L."
    changed = b.events.wait_for("profile_changed", start=mark_b)["user"]
    assert changed["id"] == uid(a) and changed["nickname"] == "Alice L." and changed["signature"] == "out for lunch"
    friend = b.kernel.friends.friend_list()[0]
    assert friend["nickname"] == "Alice L." and friend["online"] is True
    assert a.kernel.friends.search(a.phone)["user"]["signature"] == "out for lunch"
    assert c.events.count("profile_changed") == 0      # not a friend: not told

    request = a.kernel.request
    assert error_of(request, PacketType.PROFILE_UPDATE, {"nickname": "x" * 33}).code == ErrorCode.INVALID_NICKNAME
    assert error_of(request, PacketType.PROFILE_UPDATE, {"nickname": "   "}).code == ErrorCode.INVALID_NICKNAME
    assert error_of(request, PacketType.PROFILE_UPDATE, {"signature": "y" * 101}).code == ErrorCode.INVALID_SIGNATURE
    assert error_of(request, PacketType.PROFILE_UPDATE, {}).code == ErrorCode.BAD_REQUEST
    assert request(PacketType.PROFILE_UPDATE, {"nickname": "写" * 32, "signature": "s" * 100})["user"]["nickname"] \
        == "写" * 32


def test_builtin_avatars_ship_and_can_be_chosen(trio):
    running, (a, b, _c) = trio
    assert builtin_avatar_count() >= 12
    for number in range(1, builtin_avatar_count() + 1):
        image = decode(builtin_avatar(number))
        assert image.size == (128, 128)
    assert len({builtin_avatar(n) for n in range(1, 13)}) == 12
    befriend(a, b)
    mark = b.events.mark()
    user = a.kernel.profile.choose_builtin_avatar(7)
    assert user["avatar"] == {"builtin": 7, "version": 1}
    assert b.events.wait_for("profile_changed", start=mark)["user"]["avatar"] == {"builtin": 7, "version": 1}
    assert b.kernel.profile.avatar_png(b.kernel.friends.friend_list()[0]) == builtin_avatar(7)
    assert a.kernel.profile.choose_builtin_avatar(8)["avatar"] == {"builtin": 8, "version": 2}
    for bad in (0, 13, "1"):
        assert error_of(a.kernel.request, PacketType.PROFILE_UPDATE,
                        {"avatar_builtin": bad}).code == ErrorCode.BAD_REQUEST
    # someone who never chose gets a built-in one picked by id
    assert b.kernel.profile.avatar_png(b.kernel.user) in {builtin_avatar(n) for n in range(1, 13)}


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_uploaded_picture_is_cropped_to_128_png(fmt, storage, server_factory, client_factory):
    running = server_factory(storage=storage)
    a, b = client_factory(running.port), client_factory(running.port)
    a.register_and_login("Alice")
    b.register_and_login("Bob")
    befriend(a, b)
    # 300x100: red | green | blue; the centre square is the green third
    wide = Image.new("RGB", (300, 100), "red")
    wide.paste((0, 200, 0), (100, 0, 200, 100))
    wide.paste((0, 0, 255), (200, 0, 300, 100))
    mark = b.events.mark()
    user = a.kernel.profile.upload_avatar(encode(wide, fmt))
    assert user["avatar"] == {"builtin": 0, "version": 1}
    changed = b.events.wait_for("profile_changed", start=mark)["user"]
    assert changed["avatar"] == {"builtin": 0, "version": 1}

    png = b.kernel.profile.avatar_png(changed)
    image = decode(png).convert("RGB")
    assert image.size == (128, 128)
    for x, y in ((5, 5), (64, 64), (122, 122)):
        r, g, bl = image.getpixel((x, y))
        assert g > 150 and r < 60 and bl < 60, (fmt, (x, y), (r, g, bl))
    assert storage.get_avatar(uid(a)).png == png

    # cached by (user, version): shown again without asking; a new version is fetched
    asked = []
    request = b.kernel.request
    b.kernel.request = lambda ptype, *args, **kw: (asked.append(ptype), request(ptype, *args, **kw))[1]
    assert b.kernel.profile.avatar_png(changed) == png and PacketType.AVATAR_GET not in asked
    mark = b.events.mark()
    a.kernel.profile.upload_avatar(encode(wide.transpose(Image.Transpose.ROTATE_90), fmt))
    newer = b.events.wait_for("profile_changed", start=mark)["user"]
    assert newer["avatar"]["version"] == 2
    assert b.kernel.profile.avatar_png(newer) != png and asked.count(PacketType.AVATAR_GET) == 1


def test_noisy_photo_fits_one_reply(storage, server_factory, client_factory):
    running = server_factory(storage=storage)
    a = client_factory(running.port)
    a.register_and_login("Alice")
    noise = Image.frombytes("RGBA", (640, 480), os.urandom(640 * 480 * 4))
    user = a.kernel.profile.upload_avatar(encode(noise, "PNG"))
    reply = a.kernel.request(PacketType.AVATAR_GET, {"user_id": uid(a)})
    assert reply["version"] == user["avatar"]["version"] == 1
    image = decode(base64.b64decode(reply["png"]))
    assert image.size == (128, 128)
    assert len(reply["png"]) < 60_000


# As in the server process (server/avatars.py): a bomb warning is an error, whatever pytest sets.
@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_hostile_avatars_are_refused_and_nothing_is_stored(storage, server_factory, client_factory):
    running = server_factory(storage=storage)
    a = client_factory(running.port)
    a.register_and_login("Alice")
    upload = a.kernel.profile.upload_avatar
    photo = encode(Image.new("RGB", (400, 300), "orange"), "JPEG", quality=90)

    bomb = encode(Image.new("1", (10_000, 10_000)), "PNG")           # 100 Mpixel, ~12 KB on the wire
    refused = error_of(upload, bomb)
    assert refused.code == ErrorCode.INVALID_AVATAR and "pixels" in refused.message

    refused = error_of(upload, photo[: len(photo) // 2])              # truncated JPEG
    assert refused.code == ErrorCode.INVALID_AVATAR and "truncated" in refused.message

    refused = error_of(upload, b"this is not a picture, only text in a file named me.png\n" * 20)
    assert refused.code == ErrorCode.INVALID_AVATAR

    three_mb = os.urandom(3 * 1000 * 1000)
    assert error_of(upload, three_mb).code == ErrorCode.AVATAR_TOO_LARGE               # refused by the client
    assert error_of(a.kernel.request, PacketType.AVATAR_UPLOAD, three_mb,              # and by the server
                    timeout=30).code == ErrorCode.AVATAR_TOO_LARGE

    refused = error_of(upload, encode(Image.new("RGB", (64, 64)), "BMP"))             # a real picture, not allowed
    assert refused.code == ErrorCode.INVALID_AVATAR and "BMP" in refused.message

    avatar = storage.get_avatar(uid(a))
    assert avatar.version == 0 and avatar.png is None and avatar.builtin == 0
    assert a.kernel.request(PacketType.AVATAR_GET, {"user_id": uid(a)})["png"] is None
    # the connection is still in good standing
    assert upload(photo)["avatar"]["version"] == 1
    assert error_of(a.kernel.request, PacketType.AVATAR_GET, {"user_id": 999_999}).code == ErrorCode.USER_NOT_FOUND
