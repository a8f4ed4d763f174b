"""The audit trail: one row for each thing an operator did, read back newest first.

Pages are cut by id, not by offset: rows keep arriving at the top while someone pages down,
and a cursor that says "older than this id" neither skips nor repeats a row when they do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cursors import InvalidCursor, decode_cursor, encode_cursor
from app.db.models import AUDIT_TARGET_CHARS, AuditEvent, utcnow
from app.timestamps import rfc3339

#: Ids are BIGINT: a cursor holding an id past this is not one of ours.
_MAX_ID = 2**63 - 1


def record(
    session: Session,
    *,
    who: str,
    action: str,
    target: str,
    count: int = 0,
    detail: Mapping[str, object] | None = None,
) -> AuditEvent:
    """Add the row of one action to ``session``; the caller's transaction commits it.

    Nothing is committed here, so that a row about a database change commits with that change
    or not at all. An action made elsewhere (in Redis) has a row that commits with nothing
    else: its caller wraps the call in ``with session.begin():``. A target too long for its
    column is shortened rather than failing the record of an action already made.
    """
    if len(target) > AUDIT_TARGET_CHARS:
        target = target[: AUDIT_TARGET_CHARS - 1] + "…"
    event = AuditEvent(
        at=utcnow(),
        who=who,
        action=action,
        target=target,
        count=count,
        detail=None if detail is None else dict(detail),
    )
    session.add(event)
    return event


def list_events(
    session: Session, *, cursor: str | None, limit: int = 50, action: str | None = None
) -> tuple[list[AuditEvent], str | None]:
    """Up to ``limit`` events, newest first, and the cursor of the next page (None at the end).

    ``cursor`` is the one the previous page returned (None for the first page); ``action``
    keeps only events of that action. ``InvalidCursor`` if the cursor is not one of ours.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(AuditEvent.id < _last_id(cursor))
    if action is not None:
        query = query.where(AuditEvent.action == action)
    events = list(session.scalars(query))
    if len(events) <= limit:
        return events, None
    page = events[:limit]
    return page, encode_cursor(page[-1].id)


def as_dict(event: AuditEvent) -> dict[str, Any]:
    """``event`` as the CLI's ``--json`` and the HTTP API show it, its time in RFC 3339."""
    return {
        "id": event.id,
        "at": rfc3339(event.at),
        "who": event.who,
        "action": event.action,
        "target": event.target,
        "count": event.count,
        "detail": event.detail,
    }


def _last_id(cursor: str) -> int:
    """The id of the last event a page showed, which its cursor holds; ``InvalidCursor`` for a
    cursor that holds anything else."""
    last_id = decode_cursor(cursor)
    if not isinstance(last_id, int) or isinstance(last_id, bool) or not 1 <= last_id <= _MAX_ID:
        raise InvalidCursor()
    return last_id
