"""The console's Batches pages: the recent batches with their progress, rate and ETA, and one
batch with its failures by kind, its failed members a page at a time and its Cancel button.

They read what ``GET /api/batches`` reads (``app.control.batches`` over
``pipelines.batches.BATCHES``); Cancel goes through ``Operator.cancel_batch``, audited like
``fintask batches cancel``.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.control.batches import BatchView, batch_view, failed_page, recent_batches
from app.cursors import InvalidCursor
from app.web.console.access import ConsoleRefused, OperatorUser, User, operator_for
from app.web.console.confirm import confirm_or_act
from app.web.console.render import render
from app.web.deps import SessionDep
from app.web.pages import Cursor
from chunking import UnknownBatch
from pipelines.batches import BATCHES

router = APIRouter()

#: Batches the list shows: the most recently created.
LISTED = 100

BatchId = Annotated[str, Path(max_length=100, description="a batch's id")]


@router.get("/console/batches")
def batches_page(request: Request, user: User) -> Response:
    """The most recently created batches, newest first, with progress, rate and ETA."""
    views = recent_batches(BATCHES, now=_now(), limit=LISTED)
    return render(request, user, "batches.html", batches=views, listed=LISTED)


@router.get("/console/batches/{batch_id}")
def batch_page(request: Request, user: User, batch_id: BatchId, cursor: Cursor = None) -> Response:
    """One batch: its counts, failures by kind and a page of its failed members."""
    view = _view(batch_id)
    try:
        page = failed_page(BATCHES, batch_id, cursor=cursor)
    except InvalidCursor as error:
        raise ConsoleRefused(400, str(error)) from None
    query = f"?{urlencode({'cursor': cursor})}" if cursor else ""
    return render(
        request,
        user,
        "batch.html",
        batch=view,
        failed=page.items,
        cursor=cursor,
        next_cursor=page.next_cursor,
        back=f"/console/batches/{quote(batch_id, safe='')}{query}",
    )


@router.post("/console/batches/{batch_id}/cancel")
async def cancel_batch(
    request: Request, batch_id: BatchId, user: OperatorUser, session: SessionDep
) -> Response:
    """Cancel the batch: its pending members count as cancelled, its callbacks fire once."""
    view = _view(batch_id)
    operator = operator_for(user, session)

    def act() -> str:
        cancelled = operator.cancel_batch(batch_id)
        return f"batch {batch_id} cancelled: {cancelled} pending members counted as cancelled"

    return await confirm_or_act(
        request,
        user,
        title=f"Cancel batch {batch_id}?",
        consequence=f"Batch {batch_id} ({view.progress.name or 'unnamed'}) completes now: its "
        f"{view.progress.pending} pending members count as cancelled (those still queued are "
        "skipped when they come up), and its on_failure and on_complete callbacks fire once.",
        act=act,
    )


def _view(batch_id: str) -> BatchView:
    """Batch ``batch_id`` now; a 404 page naming it if it is not kept."""
    try:
        return batch_view(BATCHES, batch_id, now=_now())
    except UnknownBatch as error:
        raise ConsoleRefused(404, str(error)) from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
