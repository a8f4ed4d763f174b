"""The API's lists, a page at a time: ``{"items": [...], "next_cursor": ...}``.

Pages are keyset pages: a page ends at the sort key of its last item and the next one starts
strictly after that key, so rows added while a client pages through never make it skip or see
twice a row, as an offset would. The cursor holds that key (``app.cursors``); it is opaque to
clients, who pass ``next_cursor`` back as ``cursor`` (``null`` on the last page), so what it
holds can change. Short lists read whole on every call page by offset (``offset_page``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, Generic, TypeVar

from fastapi import HTTPException, Query
from pydantic import BaseModel, Field

from app import cursors
from app.cursors import InvalidCursor, encode_cursor
from app.web.deps import ErrorOut

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")

#: The most items one page holds.
MAX_LIMIT = 200

Cursor = Annotated[
    str | None,
    Query(max_length=500, description="`next_cursor` of the previous page; none for the first"),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="the most items on the page")]

#: The OpenAPI entry of the 400 a malformed cursor gets.
BAD_CURSOR_RESPONSE: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The cursor is not one this list handed out."}
}


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    items: list[T]
    next_cursor: str | None = Field(
        description="pass it as `cursor` for the next page; null on the last page"
    )


@contextmanager
def bad_cursor_is_400() -> Iterator[None]:
    """Answer an ``InvalidCursor`` raised inside with a 400 carrying its message: the client
    sent a cursor no list of ours handed out, which it can fix."""
    try:
        yield
    except InvalidCursor as error:
        raise HTTPException(400, str(error)) from None


def decode_cursor(cursor: str | None, parse: Callable[[Any], K]) -> K | None:
    """The key ``cursor`` holds, read by ``parse`` (None for the first page); 400 if it is
    not a cursor of ours: ``parse`` raises ``ValueError`` or ``TypeError`` for a key it refuses."""
    if cursor is None:
        return None
    with bad_cursor_is_400():
        key = cursors.decode_cursor(cursor)
        try:
            return parse(key)
        except (ValueError, TypeError):
            raise InvalidCursor() from None


def page_of(
    rows: Sequence[R], limit: int, key: Callable[[R], list[Any]]
) -> tuple[list[R], str | None]:
    """The first ``limit`` of ``rows`` (fetched as ``limit + 1``, to know whether more follow)
    and the cursor of the next page: the ``key`` of the last row kept, None when none follow."""
    kept = list(rows[:limit])
    if len(rows) <= limit:
        return kept, None
    return kept, encode_cursor(key(kept[-1]))


def offset_page(items: Sequence[T], cursor: str | None, limit: int) -> Page[T]:
    """A page of a short list read whole on every call (workers, queues, limits, the schedule).

    Such a list is built in memory, not queried, so it has no index to cut a keyset page at:
    its cursor holds an offset, and an item added meanwhile may shift one into the next page.
    """
    start = decode_cursor(cursor, _offset) or 0
    end = start + limit
    next_cursor = encode_cursor({"offset": end}) if end < len(items) else None
    return Page(items=list(items[start:end]), next_cursor=next_cursor)


def _offset(key: Any) -> int:
    """An offset cursor's key: how many items the pages before held."""
    offset = key.get("offset") if isinstance(key, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ValueError(f"not an offset: {key!r}")
    return offset
