"""The console's Audit page: the control plane's trail, newest first, a page at a time.

The rows are ``app.control.audit``'s, as ``GET /api/audit`` and ``fintask audit`` list them:
who (``token:<name>``, ``cli:<user>@<host>``), when, what, on what, how many messages. A row's
detail is free text to a person (a cancel-matching's arguments can hold an address), so it is
shown redacted.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.control import audit
from app.redaction import redact
from app.web.console.access import User
from app.web.console.render import render
from app.web.deps import SessionDep
from app.web.pages import Cursor, bad_cursor_is_400

router = APIRouter()

#: Rows on one page of the trail.
PAGE_SIZE = 50

ActionFilter = Annotated[str | None, Query(max_length=64, description="only this action")]


@router.get("/console/audit")
def audit_page(
    request: Request,
    user: User,
    session: SessionDep,
    cursor: Cursor = None,
    action: ActionFilter = None,
) -> Response:
    """A page of the trail, newest first, of one action or all."""
    action = (action or "").strip() or None
    with bad_cursor_is_400():
        events, next_cursor = audit.list_events(
            session, cursor=cursor, limit=PAGE_SIZE, action=action
        )
    rows = [_row(audit.as_dict(event)) for event in events]
    return render(
        request,
        user,
        "audit.html",
        events=rows,
        next_cursor=next_cursor,
        cursor=cursor,
        action=action,
    )


def _row(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the page shows it: its detail as one line of redacted ``key: value`` JSON."""
    detail = event["detail"]
    text = "" if not detail else json.dumps(detail, sort_keys=True, ensure_ascii=False)
    return {**event, "detail": redact(text)}
