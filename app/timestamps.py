"""One timestamp format for everything fintask prints or answers: RFC 3339, in UTC.

``2026-12-01T20:00:00.123Z``: millisecond precision (what Dramatiq and Redis keep), a ``Z``
rather than ``+00:00``, so that a CLI's ``--json`` and the HTTP API read the same.
"""

from __future__ import annotations

import datetime as dt


def rfc3339(moment: object) -> str | None:
    """``moment`` (an aware or UTC-naive datetime, or ms since the epoch) in RFC 3339, UTC;
    None for anything else (a message's options are whatever its producer wrote)."""
    if isinstance(moment, bool):
        return None
    if isinstance(moment, int | float):
        moment = dt.datetime.fromtimestamp(moment / 1000, tz=dt.UTC)
    if not isinstance(moment, dt.datetime):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
