"""Storage safety: every query is parameterised, and text full of SQL metacharacters, NUL and
4-byte emoji goes in and comes back byte for byte, on SQLite and on MySQL."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from server.clock import now_ms
from server.storage.files import FileRecord
from tests import helpers
from tests.helpers import insert_message_tx, start_server, unique_phone

ROOT = Path(__file__).resolve().parents[1]

NASTY = [
    "O'Brien \"double\" `back`",
    "back\\slash \\\\ \\' \\x00 \\n",
    "100% %s %d %% _ LIKE wildcards",
    "'; DROP TABLE users; --",
    "Robert'); DROP TABLE messages;--",
    "nul\x00inside\x00",
    "emoji \U0001F600\U0001F389 \U0001D11E clef",
    "?, ?) -- placeholder",
    "\u202eRTL override \u200b zero width",
    "中文 ünïcödé ﷽",
]


# -- every query is parameterised ------------------------------------------------------------------

SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES|FROM|SET|CREATE|DROP|ORDER|LIMIT)\b")
# Interpolations reviewed as safe: constants (column lists), "?, ?, ?" placeholder lists, and
# column names picked from literals in the same function.
PLACEHOLDER_LIST = re.compile(r"""^['"], ['"]\.join\(\(?['"]\?['"] for \w+ in \w+\)?\)$""")
REVIEWED_NAMES = {"marks", "mine", "other", "placeholders"}


def _safe_interpolation(expr: ast.expr) -> bool:
    text = ast.unparse(expr)
    if isinstance(expr, ast.Name) and (expr.id.lstrip("_").isupper() or expr.id in REVIEWED_NAMES):
        return True
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id == "_in" \
            and all(isinstance(a, ast.Name) for a in expr.args):
        return True  # server/storage/files.py: "(?, ?, ...)" for a tuple of states
    return bool(PLACEHOLDER_LIST.match(text))


def sql_built_from_values() -> list[str]:
    """Places in server/ where SQL text is built by interpolating something not known safe."""
    found = []
    for path in sorted((ROOT / "server").rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        where = lambda node: f"{path.relative_to(ROOT)}:{node.lineno}"  # noqa: E731
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if SQL_WORDS.search(text):
                    for value in node.values:
                        if isinstance(value, ast.FormattedValue) and not _safe_interpolation(value.value):
                            found.append(f"{where(node)} f-string interpolates {ast.unparse(value.value)}")
            elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
                for side in (node.left, node.right):
                    if isinstance(side, ast.Constant) and isinstance(side.value, str) \
                            and SQL_WORDS.search(side.value) and "?" not in side.value \
                            and isinstance(node.op, ast.Mod):
                        found.append(f"{where(node)} %-formatted SQL")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                    and node.func.attr == "format" and isinstance(node.func.value, ast.Constant) \
                    and SQL_WORDS.search(str(node.func.value.value)):
                found.append(f"{where(node)} str.format SQL")
    return found


def test_no_sql_is_built_from_values():
    assert sql_built_from_values() == []


def test_the_sql_check_catches_formatted_queries(tmp_path, monkeypatch):
    """The scanner itself: it must flag the three classic mistakes."""
    bad = ast.parse('cur.execute(f"SELECT * FROM users WHERE phone = {phone}")\n'
                    'cur.execute("DELETE FROM users WHERE id = %s" % uid)\n'
                    'cur.execute("UPDATE users SET nickname = \'{}\'".format(name))\n')
    flagged = []
    for node in ast.walk(bad):
        if isinstance(node, ast.JoinedStr):
            flagged += [v for v in node.values if isinstance(v, ast.FormattedValue)
                        and not _safe_interpolation(v.value)]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            flagged.append(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            flagged.append(node)
    assert len(flagged) == 3
    assert _safe_interpolation(ast.parse('", ".join("?" for _ in ids)', mode="eval").body)
    assert not _safe_interpolation(ast.parse("nickname", mode="eval").body)


# -- round trips on both backends -------------------------------------------------------------------

def make_users(storage, count: int) -> list[int]:
    return [storage.create_user(unique_phone(), "scrypt$x", f"user{i}", now_ms()).id for i in range(count)]


def test_nicknames_and_signatures_round_trip(storage):
    ids = []
    for text in NASTY:
        user = storage.create_user(unique_phone(), "scrypt$x", text, now_ms())
        ids.append(user.id)
    for user_id, text in zip(ids, NASTY):
        assert storage.get_user(user_id).nickname == text
    for user_id, text in zip(ids, reversed(NASTY)):
        storage.update_profile(user_id, signature=text)
    for user_id, text in zip(ids, reversed(NASTY)):
        got = storage.get_user(user_id)
        assert got.signature == text and got.signature.encode("utf-8") == text.encode("utf-8")
    assert len([storage.get_user(i) for i in ids]) == len(NASTY), "the users table survived"


def test_messages_round_trip(storage):
    alice, bob = make_users(storage, 2)
    storage.add_friendship(alice, bob, now_ms())
    sent = []
    with storage.db.tx() as cur:
        for i, text in enumerate(NASTY):
            message, created = insert_message_tx(cur, alice, bob, f"id-{i}-{text[:20]}", text, now_ms())
            assert created
            sent.append(message)
    page = storage.history_page(alice, bob, None, 100)
    assert sorted(m.body for m in page) == sorted(NASTY)
    for message in sent:
        got = storage.get_message(message.id)
        assert got.body == message.body and got.client_msg_id == message.client_msg_id


def test_file_names_round_trip(storage):
    alice, bob = make_users(storage, 2)
    for i, name in enumerate(NASTY):
        storage.create_file(FileRecord(f"{i:032x}", alice, bob, name, 10, "0" * 64, "offered", 0,
                                       now_ms(), now_ms() + 60_000))
    for i, name in enumerate(NASTY):
        assert storage.get_file(f"{i:032x}").name == name


def test_friend_request_greetings_round_trip(storage):
    ids = make_users(storage, len(NASTY) + 1)
    target = ids[0]
    for sender, text in zip(ids[1:], NASTY):
        storage.request_friend(sender, target, text, now_ms())
    incoming = storage.friend_requests_page(target, True, 0, 100)
    assert [req.greeting for req, _ in incoming] == NASTY


def test_nasty_text_over_the_wire(backend, storage, tmp_path, client_factory):
    """Through the real server: register, profile, and read back exactly (or a clean refusal)."""
    running = start_server(helpers.test_config(tmp_path), storage)
    try:
        for text in NASTY:
            client = client_factory(running.port)
            try:
                user = client.register_and_login(text)
            except ApiError as exc:
                # Control characters are refused as a nickname; that is the only refusal allowed.
                assert exc.code == ErrorCode.INVALID_NICKNAME and "\x00" in text
                continue
            assert user["nickname"] == text.strip()
            reply = client.kernel.request(PacketType.PROFILE_UPDATE, {"signature": text.replace("\x00", "")})
            assert reply["user"]["signature"] == text.replace("\x00", "").strip()
            client.close()
        assert storage.get_user_by_phone("0") is None  # the tables are all still there
    finally:
        running.stop()
