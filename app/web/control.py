"""The control plane over HTTP: workers, queues, messages, limits, batches and the audit trail.

Reading needs a viewer's token, acting an operator's (``app.web.auth``): the token travels in
the ``Authorization`` header only, so no browser sends it by itself and a cross-site request
cannot act. Every list answers the API's one shape (``app.web.pages``): pass ``next_cursor``
back as ``cursor`` for the next page; it is ``null`` on the last one. Errors are
``application/problem+json`` with a ``detail`` sentence (``app.web.errors``). Every action
goes through ``app.control.actions``, which writes its audit row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypeVar

import dramatiq
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, Field

from app.control import audit
from app.control.actions import (
    MessageMoved,
    Operator,
    UnknownTarget,
    WrongState,
    check_queue,
    queue_names,
    rate_limits,
)
from app.control.batches import BatchView, batch_view, failed_page, recent_batches
from app.control.masking import MaskPolicy
from app.control.messages import MessageFilter, find_message, list_messages
from app.control.workers import list_workers
from app.control_state import read_state
from app.inspection import queue_stats
from app.redis_client import get_redis
from app.web.auth import AUTH_RESPONSES, Principal, Viewer, require_operator
from app.web.deps import ErrorOut, SessionDep
from app.web.pages import BAD_CURSOR_RESPONSE, Cursor, Limit, Page, bad_cursor_is_400, offset_page
from chunking import BatchStoreUnavailable, UnknownBatch
from pipelines.batches import BATCHES
from scheduler.render import default_schedule, job_names, read_live, schedule_data

router = APIRouter(prefix="/api", tags=["control"])

T = TypeVar("T")

#: A page of any control list: each item is the ``as_dict`` of what it lists.
Listed = Page[dict[str, Any]]

OperatorToken = Annotated[Principal, Depends(require_operator)]
QueueName = Annotated[str, Path(max_length=200, description="a queue fintask declares")]
ActorName = Annotated[str, Path(max_length=200, description="an actor fintask declares")]
JobName = Annotated[str, Path(max_length=200, description="a job of the periodic schedule")]
MessageId = Annotated[str, Path(max_length=100, description="a message id, or a Redis id")]
BatchId = Annotated[str, Path(max_length=100, description="a batch's id")]

#: The most recent batches ``GET /api/batches`` pages through (each read is one HGETALL).
RECENT_BATCHES = 500

_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    404: {"model": ErrorOut, "description": "No such queue, actor or message."},
}
_LIST_ERRORS = {**_ERRORS, **BAD_CURSOR_RESPONSE}
_MOVE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    409: {"model": ErrorOut, "description": "The message is in a state the action skips."},
}
_PURGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"model": ErrorOut, "description": "`confirm` is not the queue's name."},
}


class CancelIn(BaseModel):
    """How a running copy of the message stops."""

    mode: Literal["soft", "hard"] = Field(
        "soft",
        description="soft: at its flow's next check_deadline(); hard: at once, as a time "
        "limit interrupts a thread",
    )


class CancelMatchingIn(CancelIn):
    """Which messages of the actor to cancel: those whose keyword arguments include these."""

    arguments: dict[str, str | int | float | bool | None] = Field(min_length=1)
    dry_run: bool = Field(True, description="only count them (the default)")


class PurgeIn(BaseModel):
    """The queue's name again, so that a purge is never a slip."""

    confirm: str


class MessagePage(Listed):
    """A page of a queue's messages, and how many entries were read for it."""

    scanned: int = Field(
        description="entries read for this page: a filtered page holds those that matched, "
        "and next_cursor continues after the last one read (a page may be short, even empty, "
        "and still have one)"
    )


class BatchOut(BaseModel):
    """A batch's counts, state and times, and how fast it goes (``app.control.batches``)."""

    batch_id: str
    name: str
    state: Literal["open", "sealed", "firing", "fired"]
    added: int = Field(description="members added so far")
    total: int | None = Field(description="members in all, known once sealed")
    succeeded: int
    failed: int
    failed_by_kind: dict[str, int] = Field(
        description="failed members by kind: dead_lettered, expired, cancelled, failed"
    )
    pending: int = Field(description="members added and not done yet (0 once complete)")
    done: int = Field(description="succeeded + failed")
    percent: float | None = Field(description="done / total; null while the batch is open")
    rate_per_s: float | None = Field(
        description="members done per second since the batch was created (null before the "
        "first, and for a cancelled batch)"
    )
    eta_s: float | None = Field(
        description="pending / rate for a sealed batch; null while unknown, 0 once complete"
    )
    cancelled: bool
    complete: bool
    parent: list[str | int] | None = Field(description="[parent batch id, ordinal] of a child")
    created_at: str
    sealed_at: str | None
    completed_at: str | None
    cancelled_at: str | None


class FailedMemberOut(BaseModel):
    """A member that failed for good; its reason is redacted (as a dead letter's is)."""

    ordinal: int
    message_id: str
    kind: str
    reason: str


class BatchCancelledOut(BaseModel):
    batch_id: str
    cancelled_members: int = Field(description="members pending when it was cancelled")
    batch: BatchOut


class RateIn(BaseModel):
    rate: str = Field(examples=["10/s", "600/m"], max_length=32)


@router.get("/workers", response_model=Listed, responses=_LIST_ERRORS)
def get_workers(_: Viewer, cursor: Cursor = None, limit: Limit = 100) -> Listed:
    """Every worker process seen in the last day: alive, stopped, or gone with its last
    heartbeat and the messages it left waiting for recovery."""
    workers = list_workers(get_redis(), queue_names(dramatiq.get_broker()))
    return offset_page([w.as_dict() for w in workers], cursor, limit)


@router.get("/queues", response_model=Listed, responses=_LIST_ERRORS)
def get_queues(_: Viewer, cursor: Cursor = None, limit: Limit = 100) -> Listed:
    """Each queue's messages by state, its oldest ready message's age, and whether paused."""
    client = get_redis()
    paused = read_state(client).paused
    stats = queue_stats(client, queue_names(dramatiq.get_broker()))
    items = [{**q.as_dict(), "paused": q.queue_name in paused} for q in stats]
    return offset_page(items, cursor, limit)


@router.get("/queues/{queue_name}/messages", response_model=MessagePage, responses=_LIST_ERRORS)
def get_queue_messages(
    queue_name: QueueName,
    _: Viewer,
    state: Literal["ready", "delayed", "retrying", "held", "dead"] = "ready",
    order: Literal["oldest", "newest"] = "oldest",
    cursor: Cursor = None,
    limit: Limit = 50,
    actor: Annotated[str | None, Query(max_length=200, description="only this actor's")] = None,
    exception: Annotated[
        str | None,
        Query(max_length=200, description="only those whose last exception is of this class"),
    ] = None,
    min_age_s: Annotated[
        float | None,
        Query(ge=0, allow_inf_nan=False, description="only those sent this long ago or more"),
    ] = None,
) -> MessagePage:
    """A queue's messages in one state, oldest or newest first, filtered if asked; arguments
    masked except ids, reasons and tracebacks redacted. A filtered page reads a bounded number
    of entries (``scanned``): it may hold fewer than ``limit`` and still have a next page."""
    _known_queue(queue_name)
    where = MessageFilter.of(actor=actor, exception=exception, min_age_s=min_age_s)
    with bad_cursor_is_400():
        page = list_messages(
            get_redis(),
            queue_name,
            state=state,
            newest_first=order == "newest",
            cursor=cursor,
            limit=limit,
            policy=MaskPolicy(),
            where=where,
        )
    return MessagePage(
        items=[m.as_dict() for m in page.items],
        next_cursor=page.next_cursor,
        scanned=page.scanned,
    )


@router.get("/messages/{message_id}", responses=_ERRORS)
def get_message(message_id: MessageId, _: Viewer) -> dict[str, Any]:
    """One message by its id (or its Redis id), wherever it is: queued, delayed, held by a
    worker, or dead."""
    broker = dramatiq.get_broker()
    found = find_message(get_redis(), queue_names(broker), message_id, policy=MaskPolicy())
    if found is None:
        raise HTTPException(404, f"no message {message_id} is in any queue of fintask")
    return found.as_dict()


@router.post("/messages/{message_id}/cancel", responses=_ERRORS)
def cancel_message(
    message_id: MessageId,
    principal: OperatorToken,
    session: SessionDep,
    body: CancelIn | None = None,
) -> dict[str, Any]:
    """Cancel a message: a waiting one is removed, one a worker holds is revoked (a running
    one stops as ``mode`` says). Revocations outlast the message's ``max_age``."""
    mode = body.mode if body is not None else "soft"
    cancelled = _operator(principal, session).cancel(message_id, mode=mode)
    if cancelled.state is None:
        raise HTTPException(404, f"no message {message_id} is in any queue of fintask")
    if cancelled.state == "dead":
        raise HTTPException(409, f"message {message_id} is a dead letter: purge it from the DLQ")
    return {
        "message_id": message_id,
        "state": cancelled.state,
        "removed": cancelled.removed,
        "revoked": cancelled.revoked,
    }


@router.post("/messages/{message_id}/requeue", responses=_MOVE_ERRORS)
def requeue_message(
    message_id: MessageId, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Move a dead letter back to its ready queue, its retries reset; 409 for a message that
    is not a dead letter."""
    return _moved(lambda: _operator(principal, session).requeue(message_id))


@router.delete("/messages/{message_id}", responses=_MOVE_ERRORS)
def delete_message(
    message_id: MessageId, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Delete a dead letter and the reason it died, for good. Only dead letters: a waiting
    message is removed without running by cancelling it (409 says so)."""
    return _moved(lambda: _operator(principal, session).delete_dead(message_id))


@router.post("/messages/{message_id}/run-now", responses=_MOVE_ERRORS)
def run_message_now(
    message_id: MessageId, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Run a delayed or retrying message once, now, keeping its id. One still in its delay
    queue moves to the head of its ready queue (``state``: ``ready``); one a worker holds
    until its eta stays held (``state``: ``held``) and that worker, asked through the control
    state, enqueues it within about 2 s. 409 for a message a worker fetched from its ready
    queue (it is running or about to), a ready one or a dead letter."""
    return _moved(lambda: _operator(principal, session).run_now(message_id))


@router.post("/actors/{actor_name}/cancel", responses=_ERRORS)
def cancel_matching(
    actor_name: ActorName, body: CancelMatchingIn, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Cancel every waiting or held message of an actor whose keyword arguments include
    ``arguments``; with ``dry_run`` (the default) only count them."""
    count = _acting(
        lambda: _operator(principal, session).cancel_matching(
            actor_name, body.arguments, dry_run=body.dry_run, mode=body.mode
        )
    )
    return {"actor_name": actor_name, "count": count, "dry_run": body.dry_run}


@router.post("/queues/{queue_name}/pause", responses=_ERRORS)
def pause_queue(
    queue_name: QueueName, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Stop every worker starting the queue's messages (within about a second); new messages
    are still accepted and wait."""
    changed = _acting(lambda: _operator(principal, session).pause_queue(queue_name))
    return {"queue_name": queue_name, "paused": True, "changed": changed}


@router.post("/queues/{queue_name}/resume", responses=_ERRORS)
def resume_queue(
    queue_name: QueueName, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Let the workers start the queue's messages again."""
    changed = _acting(lambda: _operator(principal, session).resume_queue(queue_name))
    return {"queue_name": queue_name, "paused": False, "changed": changed}


@router.post("/queues/{queue_name}/purge", responses=_PURGE_ERRORS)
def purge_queue(
    queue_name: QueueName, body: PurgeIn, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Delete every ready message of the queue; ``confirm`` must repeat its name."""
    if body.confirm != queue_name:
        raise HTTPException(400, f"confirm must be the queue's name, {queue_name!r}, to purge it")
    purged = _acting(lambda: _operator(principal, session).purge_queue(queue_name))
    return {"queue_name": queue_name, "purged": purged}


@router.get("/limits", response_model=Listed, responses=_LIST_ERRORS)
def get_limits(_: Viewer, cursor: Cursor = None, limit: Limit = 100) -> Listed:
    """Each rate-limited actor: its declared limit, an operator's override, the one in force."""
    views = rate_limits(get_redis(), dramatiq.get_broker())
    return offset_page([v.as_dict() for v in views], cursor, limit)


@router.put("/actors/{actor_name}/rate-limit", responses=_ERRORS)
def put_rate_limit(
    actor_name: ActorName, body: RateIn, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Override the actor's rate limit across the fleet (in force within about a second)."""
    view = _acting(lambda: _operator(principal, session).set_rate_limit(actor_name, body.rate))
    return view.as_dict()


@router.delete("/actors/{actor_name}/rate-limit", responses=_ERRORS)
def delete_rate_limit(
    actor_name: ActorName, principal: OperatorToken, session: SessionDep
) -> dict[str, Any]:
    """Remove the override: the declared limit applies again."""
    changed = _acting(lambda: _operator(principal, session).clear_rate_limit(actor_name))
    return {"actor_name": actor_name, "changed": changed}


@router.get("/schedule", response_model=Listed, responses=_LIST_ERRORS)
def get_schedule(_: Viewer, cursor: Cursor = None, limit: Limit = 100) -> Listed:
    """Each periodic job: its cron spec (UTC), next and last tick, paused or not, and the
    run-now requests no scheduler has taken yet."""
    jobs = default_schedule()
    rows = schedule_data(dt.datetime.now(dt.UTC), jobs, live=read_live(get_redis(), jobs))
    return offset_page([row.as_dict() for row in rows], cursor, limit)


@router.post("/schedule/{job}/pause", responses=_ERRORS)
def pause_job(job: JobName, principal: OperatorToken, session: SessionDep) -> dict[str, Any]:
    """Stop sending the job's ticks on every scheduler; those due meanwhile are not caught up."""
    changed = _acting(lambda: _operator(principal, session).pause_job(job, known=job_names()))
    return {"job": job, "paused": True, "changed": changed}


@router.post("/schedule/{job}/resume", responses=_ERRORS)
def resume_job(job: JobName, principal: OperatorToken, session: SessionDep) -> dict[str, Any]:
    """Send the job's ticks again, from its next one."""
    changed = _acting(lambda: _operator(principal, session).resume_job(job, known=job_names()))
    return {"job": job, "paused": False, "changed": changed}


@router.post("/schedule/{job}/run", status_code=202, responses=_ERRORS)
def run_job(job: JobName, principal: OperatorToken, session: SessionDep) -> dict[str, Any]:
    """Run the job once now, as a tick of its own (it runs once), even while paused; a
    running scheduler sends it within seconds."""
    request_id = _acting(lambda: _operator(principal, session).run_job(job, known=job_names()))
    return {"job": job, "request_id": request_id}


@router.get("/batches", response_model=Page[BatchOut], responses=_LIST_ERRORS)
def get_batches(_: Viewer, cursor: Cursor = None, limit: Limit = 50) -> Page[BatchOut]:
    """The most recently created batches (of the last 500 still kept), newest first, each
    with its progress, rate and ETA as ``GET /api/batches/{id}``."""
    with _batch_errors():
        views = recent_batches(BATCHES, now=_now(), limit=RECENT_BATCHES)
    page = offset_page([_batch_out(view) for view in views], cursor, limit)
    return Page[BatchOut](items=page.items, next_cursor=page.next_cursor)


@router.get("/batches/{batch_id}", response_model=BatchOut, responses=_ERRORS)
def get_batch(batch_id: BatchId, _: Viewer) -> BatchOut:
    """A batch's members added, succeeded, failed (by kind) and pending, its rate and ETA."""
    with _batch_errors():
        return _batch_out(batch_view(BATCHES, batch_id, now=_now()))


@router.get(
    "/batches/{batch_id}/failed", response_model=Page[FailedMemberOut], responses=_LIST_ERRORS
)
def get_batch_failed(batch_id: BatchId, _: Viewer, cursor: Cursor = None) -> Page[FailedMemberOut]:
    """A page (about 100) of the batch's failed members: ordinal, message id, kind and the
    reason, redacted. Pages are read with ``HSCAN``: stable while members fail meanwhile,
    sorted by ordinal within a page, not across pages."""
    with _batch_errors(), bad_cursor_is_400():
        page = failed_page(BATCHES, batch_id, cursor=cursor)
    items = [FailedMemberOut(**vars(member)) for member in page.items]
    return Page[FailedMemberOut](items=items, next_cursor=page.next_cursor)


@router.post("/batches/{batch_id}/cancel", response_model=BatchCancelledOut, responses=_MOVE_ERRORS)
def cancel_batch(
    batch_id: BatchId, principal: OperatorToken, session: SessionDep
) -> BatchCancelledOut:
    """Cancel a batch: every member not yet done counts as cancelled (those still queued are
    skipped when they come up) and ``on_failure`` and ``on_complete`` fire once. 409 for a
    batch complete already."""
    with _batch_errors():
        cancelled = _acting(lambda: _operator(principal, session).cancel_batch(batch_id))
        view = batch_view(BATCHES, batch_id, now=_now())
    return BatchCancelledOut(batch_id=batch_id, cancelled_members=cancelled, batch=_batch_out(view))


@router.get("/audit", response_model=Listed, responses=_LIST_ERRORS)
def get_audit(
    _: Viewer,
    session: SessionDep,
    cursor: Cursor = None,
    limit: Limit = 50,
    action: Annotated[str | None, Query(max_length=64)] = None,
) -> Listed:
    """Every control action, newest first: who, when, what, how many messages."""
    with bad_cursor_is_400():
        events, next_cursor = audit.list_events(session, cursor=cursor, limit=limit, action=action)
    return Listed(items=[audit.as_dict(e) for e in events], next_cursor=next_cursor)


def _operator(principal: Principal, session: SessionDep) -> Operator:
    return Operator(principal.who, session, get_redis(), dramatiq.get_broker(), BATCHES)


def _acting(action: Callable[[], T]) -> T:
    """Run an action; an unknown target is a 404, a message in a state the action skips a
    409, a bad value (a rate) a 422."""
    try:
        return action()
    except UnknownTarget as error:
        raise HTTPException(404, str(error)) from None
    except WrongState as error:
        raise HTTPException(409, str(error)) from None
    except ValueError as error:
        raise HTTPException(422, str(error)) from None


def _moved(action: Callable[[], MessageMoved]) -> dict[str, Any]:
    return _acting(action).as_dict()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _batch_out(view: BatchView) -> BatchOut:
    return BatchOut(**view.as_dict())


@contextmanager
def _batch_errors() -> Iterator[None]:
    """An unknown batch is a 404 naming it; the batch store not answering a 503."""
    try:
        yield
    except UnknownBatch as error:
        raise HTTPException(404, str(error)) from None
    except BatchStoreUnavailable as error:
        raise HTTPException(503, f"the batch store is unavailable: {error}") from None


def _known_queue(queue_name: str) -> None:
    try:
        check_queue(dramatiq.get_broker(), queue_name)
    except UnknownTarget as error:
        raise HTTPException(404, str(error)) from None
