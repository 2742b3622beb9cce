"""Replies sent outside the mediator's return path, and replies paged to fit one frame.

A handler that must finish on the reactor thread (to read presence there, or because the reply
comes from the group-commit writer) returns None and sends its RESULT or ERROR through the
``Replies`` its domain was built with (the mediator).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Protocol, TypeVar

from common import messages
from common.errors import ApiError

if TYPE_CHECKING:
    from ..connection import Connection

T = TypeVar("T")
V = TypeVar("V")

# Room left in a 64 KiB control frame for the list of a paged reply (the rest: keys, flags).
PAGE_BUDGET = 60_000


class Replies(Protocol):
    """Where a handler sends the reply it finishes itself (server/mediator.py's ``Mediator``)."""

    def send_result(self, conn: Connection, request_id: int, body: messages.Body | dict) -> None:
        """Reactor thread: the RESULT of a request (nothing for a fire-and-forget request id 0)."""

    def send_error(self, conn: Connection, request_id: int, error: ApiError) -> None:
        """Reactor thread: the ERROR of a request."""


def fit_page(items: Iterable[T], view: Callable[[T], V], budget: int = PAGE_BUDGET) -> tuple[list[V], bool]:
    """Take items in order while their JSON fits ``budget`` bytes; True if some were left out.

    The first item is always taken (every single item is far below the budget)."""
    page: list[V] = []
    used = 0
    for item in items:
        wired = view(item)
        size = len(messages.encode(wired)) + 1
        if page and used + size > budget:
            return page, True
        page.append(wired)
        used += size
    return page, False
