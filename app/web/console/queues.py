"""The console's Queues pages: every queue with its counts, and each queue's messages by state.

``/console/queues`` counts each declared queue's messages in the five states operators browse
(``app.control.queue_counts``), says which are paused, and offers pause, resume and purge.
``/console/queues/<queue>`` lists one state a page at a time, filtered by actor, exception and
age if asked. The filter runs in ``app.control.messages`` (the API filters the same way): a page
reads on until it is full or its scan bound is reached, and then says how many it read, so a
short page never hides matches: its "Next page" continues after the last message it read. The
messages a page selects can be cancelled, or (dead letters) requeued or deleted, at once.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

import dramatiq
from dramatiq.common import current_millis
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import RedirectResponse, Response

from app.control.actions import BulkOutcome, UnknownTarget, check_queue, queue_names
from app.control.masking import MaskPolicy
from app.control.messages import MessageFilter, list_messages
from app.control.queue_counts import queue_counts
from app.control.stored import STATES, State
from app.control_state import AbortMode
from app.cursors import InvalidCursor
from app.redis_client import get_redis
from app.web.console.access import ConsoleRefused, OperatorUser, User, operator_for, safe_next
from app.web.console.confirm import confirm_or_act
from app.web.console.messages import CANCELLABLE, shown_arguments
from app.web.console.render import render
from app.web.console.sessions import set_flash
from app.web.deps import SessionDep
from chunking.redis_keys import queue_key

router = APIRouter()

#: Messages on one page of a queue's listing.
PAGE_SIZE = 50
#: The most messages one bulk action takes: a page's worth, and then some.
MAX_SELECTED = 200

QueueName = Annotated[str, Path(max_length=200)]
Text = Annotated[str | None, Query(max_length=200)]

#: What each bulk action is called, on its button and in its result line.
_BULK_VERBS = {"cancel": "Cancelled", "requeue": "Requeued", "delete": "Deleted"}


@router.get("/console/queues")
def queues_page(request: Request, user: User) -> Response:
    """Every declared queue: its messages by state, whether it is paused, and its actions."""
    names = queue_names(dramatiq.get_broker())
    return render(request, user, "queues.html", queues=queue_counts(get_redis(), names))


@router.post("/console/queues/{queue_name}/pause")
async def pause(
    queue_name: QueueName, request: Request, user: OperatorUser, session: SessionDep
) -> Response:
    """Stop the workers starting the queue's messages."""
    _known(queue_name)
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title="Pause queue",
        consequence=f"Pause {queue_name}? Workers stop starting its messages within about a "
        "second; new messages are still accepted, and wait until it is resumed.",
        act=lambda: (
            f"Paused {queue_name}"
            if operator.pause_queue(queue_name)
            else f"{queue_name} was paused already"
        ),
    )


@router.post("/console/queues/{queue_name}/resume")
async def resume(
    queue_name: QueueName, request: Request, user: OperatorUser, session: SessionDep
) -> Response:
    """Let the workers start the queue's messages again."""
    _known(queue_name)
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title="Resume queue",
        consequence=f"Resume {queue_name}? Workers start its messages again.",
        act=lambda: (
            f"Resumed {queue_name}"
            if operator.resume_queue(queue_name)
            else f"{queue_name} was not paused"
        ),
    )


@router.post("/console/queues/{queue_name}/purge")
async def purge(
    queue_name: QueueName, request: Request, user: OperatorUser, session: SessionDep
) -> Response:
    """Delete the queue's ready messages; the confirmation says how many there are."""
    _known(queue_name)
    ready = int(get_redis().llen(queue_key(queue_name)))
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title="Purge queue",
        consequence=f"Delete the {ready} ready messages of {queue_name}, for good? Delayed, "
        "retrying and held messages and dead letters are kept.",
        act=lambda: f"Purged {operator.purge_queue(queue_name)} ready messages of {queue_name}",
    )


@router.get("/console/queues/{queue_name}")
def queue_page(
    queue_name: QueueName,
    request: Request,
    user: User,
    state: State = "ready",
    order: Literal["oldest", "newest"] = "oldest",
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    actor: Text = None,
    exception: Text = None,
    min_age_s: Annotated[str | None, Query(max_length=20)] = None,
) -> Response:
    """One state of a queue's messages, a page at a time, filtered if asked."""
    _known(queue_name)
    where = _filter(actor, exception, min_age_s)
    client = get_redis()
    try:
        page = list_messages(
            client,
            queue_name,
            state=state,
            newest_first=order == "newest",
            cursor=cursor or None,
            limit=PAGE_SIZE,
            policy=MaskPolicy(),
            where=where,
        )
    except InvalidCursor as error:
        raise ConsoleRefused(400, f"this page's cursor is not valid: {error}") from None
    (counts,) = queue_counts(client, [queue_name])
    next_url = None
    if page.next_cursor is not None:
        next_url = _page_url(queue_name, state, order, where, page.next_cursor)
    broker = dramatiq.get_broker()
    actors = sorted(
        name
        for name in broker.get_declared_actors()
        if broker.get_actor(name).queue_name == queue_name
    )
    return render(
        request,
        user,
        "queue.html",
        queue_name=queue_name,
        counts=counts,
        states=STATES,
        state=state,
        order=order,
        where=where,
        page=page,
        next_url=next_url,
        first_url=_page_url(queue_name, state, order, where, None),
        actors=actors,
        bulk=_bulk_actions(state),
        arguments=shown_arguments,
        now_ms=current_millis(),
    )


@router.post("/console/queues/{queue_name}/bulk")
async def bulk(
    queue_name: QueueName, request: Request, user: OperatorUser, session: SessionDep
) -> Response:
    """One action on the messages a page selected (their Redis ids, as ``ids``)."""
    _known(queue_name)
    form = await request.form()
    action = form.get("bulk")
    if not isinstance(action, str) or action not in _BULK_VERBS:
        raise ConsoleRefused(400, f"{action!r} is not an action on selected messages")
    ids = [value for value in form.getlist("ids") if isinstance(value, str) and value]
    if not ids:
        set_flash(get_redis(), user.session_id, "No message was selected: nothing done", ok=False)
        return RedirectResponse(safe_next(form.get("back")), status_code=303)
    if len(ids) > MAX_SELECTED:
        raise ConsoleRefused(400, f"{len(ids)} messages were selected: at most {MAX_SELECTED}")
    operator = operator_for(user, session)
    if action == "cancel":
        mode: AbortMode = "hard" if form.get("mode") == "hard" else "soft"
        consequence = (
            f"Cancel the {len(ids)} selected messages of {queue_name}? Waiting ones are removed "
            "without running; every one is revoked, and one that is running stops "
            + ("at once (hard)." if mode == "hard" else "at its flow's next check (soft).")
        )

        def act() -> BulkOutcome:
            return operator.cancel_many(queue_name, ids, mode=mode)

    elif action == "requeue":
        consequence = (
            f"Requeue the {len(ids)} selected dead letters of {queue_name} to their ready queue? "
            "Their retries start again from zero."
        )

        def act() -> BulkOutcome:
            return operator.requeue_many(queue_name, ids)

    else:
        consequence = (
            f"Delete the {len(ids)} selected dead letters of {queue_name} and the reasons they "
            "died, for good?"
        )

        def act() -> BulkOutcome:
            return operator.delete_dead_many(queue_name, ids)

    return await confirm_or_act(
        request,
        user,
        title=f"{action.capitalize()} selected messages",
        consequence=consequence,
        act=lambda: _bulk_line(_BULK_VERBS[action], act()),
    )


def _bulk_line(verb: str, outcome: BulkOutcome) -> str:
    """The result line of a bulk action: how many it was done to, and what became of the rest."""
    line = f"{verb} {outcome.done} of {outcome.asked} selected messages"
    if outcome.gone:
        line += f"; {outcome.gone} no longer there"
    if outcome.refused:
        line += f"; {outcome.refused} in a state this action does not apply to"
    return line


def _known(queue_name: str) -> None:
    try:
        check_queue(dramatiq.get_broker(), queue_name)
    except UnknownTarget as error:
        raise ConsoleRefused(404, str(error)) from None


def _filter(actor: str | None, exception: str | None, min_age_s: str | None) -> MessageFilter:
    """The filter the page's form asks for (a blank field asks for nothing); a readable 400
    for an age that is no number of seconds."""
    try:
        age = float(min_age_s) if min_age_s is not None and min_age_s.strip() else None
        return MessageFilter.of(actor=actor, exception=exception, min_age_s=age)
    except ValueError:
        raise ConsoleRefused(
            400, f"the age {min_age_s!r} is not a number of seconds, 0 or more"
        ) from None


def _page_url(
    queue_name: str,
    state: State,
    order: str,
    where: MessageFilter,
    cursor: str | None,
) -> str:
    """The link to a page of this listing: its state, order and filter, and ``cursor``."""
    query: dict[str, object] = {"state": state}
    if order != "oldest":
        query["order"] = order
    for name, value in (
        ("actor", where.actor),
        ("exception", where.exception),
        ("min_age_s", where.min_age_s),
    ):
        if value is not None:
            query[name] = f"{value:g}" if isinstance(value, float) else value
    if cursor is not None:
        query["cursor"] = cursor
    return f"/console/queues/{queue_name}?{urlencode(query)}"


def _bulk_actions(state: State) -> tuple[str, ...]:
    """The actions a page of messages in ``state`` offers on its selected ones."""
    if state == "dead":
        return ("requeue", "delete")
    return ("cancel",) if state in CANCELLABLE else ()
