"""The opaque cursors every paged list hands out: its sort key as URL-safe base64 of JSON.

Clients pass a page's ``next_cursor`` back and build nothing from it, so what a list keeps in
its cursor can change without breaking them. One codec for every list (the HTTP API's, the
control plane's, the audit trail's) so that each one's cursor reads the same way and a bad one
fails with the same error, which the edges turn into a 400 or a usage error. Each list still
checks that the key it decodes is one of its own, raising ``InvalidCursor`` when it is not.
"""

from __future__ import annotations

import base64
import json
from typing import Any

#: What a malformed cursor is told, wherever it came in.
BAD_CURSOR = (
    "the cursor is not one this list handed out: pass next_cursor of the previous page as it "
    "is, or no cursor for the first page"
)


class InvalidCursor(ValueError):
    """A cursor this list did not hand out: mistyped, cut short, or from another list.

    A ``ValueError``, so a list's key check may raise either; the message says what to do.
    """

    def __init__(self, message: str = BAD_CURSOR) -> None:
        super().__init__(message)


def encode_cursor(key: object) -> str:
    """``key`` (anything JSON holds) as a cursor: compact, URL-safe and unpadded, so that it
    goes into a query string or a shell command as it is."""
    text = json.dumps(key, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> Any:
    """The key ``cursor`` holds; ``InvalidCursor`` if it is not base64 of UTF-8 JSON."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        return json.loads(raw.decode("utf-8"))
    # binascii.Error, UnicodeDecodeError and JSONDecodeError are all ValueErrors; RecursionError
    # is JSON nested deeper than Python recurses.
    except (ValueError, RecursionError):
        raise InvalidCursor() from None
