"""The console's message page: one message wherever it is, and what can be done to it there.

A message is shown as the control plane's ``MessageView``: its arguments and options masked,
its reason and traceback redacted. The actions offered are those of its state, each through
``app.control.actions.Operator`` (so audited as the signed-in token) and confirmed first:

- **cancel** a ready, delayed, retrying or held one: a waiting one is removed without running
  (that is what deleting a waiting message would be, so "delete" is for dead letters only),
  and revoked; a held one is revoked and, if running, stops softly (or, asked, at once);
- **requeue** a dead letter to its ready queue, its retries reset, or **delete** it for good;
- **run now** a delayed or retrying one: one still in its delay queue moves to the head of its
  ready queue, keeping its id; one a worker holds until its eta is released by that worker,
  which enqueues it within about 2 s (moving it would run it twice:
  ``app.control.moves``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import dramatiq
from dramatiq.common import current_millis
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from app.control.actions import MessageMoved, UnknownTarget, WrongState, queue_names
from app.control.cancel import Cancelled
from app.control.masking import MaskPolicy
from app.control.messages import MessageView, find_message
from app.control.stored import State
from app.control_state import AbortMode
from app.redis_client import get_redis
from app.web.console.access import ConsoleRefused, OperatorUser, User, operator_for
from app.web.console.confirm import confirm_or_act
from app.web.console.render import render
from app.web.deps import SessionDep

router = APIRouter()

MessageId = Annotated[str, Path(max_length=100)]

#: The states a message can be cancelled in: any but dead.
CANCELLABLE: tuple[State, ...] = ("ready", "delayed", "retrying", "held")
#: The states a message can be run now from while in its delay queue's list (a held one can
#: too if it is held until its eta: ``runnable_now``).
RUNNABLE_NOW: tuple[State, ...] = ("delayed", "retrying")


@router.get("/console/messages/{message_id}")
def message_page(message_id: MessageId, request: Request, user: User) -> Response:
    """One message by its message id or Redis id, in whichever queue and state it is."""
    view = _find(message_id)
    return render(
        request,
        user,
        "message.html",
        m=view,
        now_ms=current_millis(),
        arguments=shown_arguments(view),
        max_retries=_max_retries(view),
        cancellable=view.state in CANCELLABLE,
        runnable_now=runnable_now(view),
        queue_url=_queue_url(view.queue_name, view.state),
    )


@router.post("/console/messages/{message_id}/cancel")
async def cancel(
    message_id: MessageId, request: Request, user: OperatorUser, session: SessionDep
) -> Response:
    """Cancel one message (its confirmation says what that does in its state)."""
    form = await request.form()
    mode: AbortMode = "hard" if form.get("mode") == "hard" else "soft"
    how = "at once (hard)" if mode == "hard" else "at its flow's next check (soft)"
    view = _lookup(message_id)
    if view is not None and view.state == "held":
        outcome = f"it is held by a worker: it is revoked, and if it is running it stops {how}."
    else:
        outcome = "a waiting message is removed without running, and revoked."
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title="Cancel message",
        consequence=f"Cancel {_described(message_id, view)}? {outcome}",
        act=lambda: _cancel_line(operator.cancel(message_id, mode=mode)),
    )


@router.post("/console/messages/{message_id}/requeue")
async def requeue(
    message_id: MessageId, request: Request, user: OperatorUser, session: SessionDep
) -> Response:
    """Requeue one dead letter to its ready queue."""
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title="Requeue dead letter",
        consequence=f"Move {_described(message_id, _lookup(message_id))} back to its ready "
        "queue? Its retries start again from zero.",
        act=_done(lambda: operator.requeue(message_id), f"Requeued {message_id}"),
    )


@router.post("/console/messages/{message_id}/delete")
async def delete(
    message_id: MessageId, request: Request, user: OperatorUser, session: SessionDep
) -> Response:
    """Delete one dead letter for good (a waiting message is cancelled instead)."""
    operator = operator_for(user, session)
    return await confirm_or_act(
        request,
        user,
        title="Delete dead letter",
        consequence=f"Delete {_described(message_id, _lookup(message_id))} and the reason it "
        "died, for good? It cannot be requeued afterwards.",
        act=_done(lambda: operator.delete_dead(message_id), f"Deleted dead letter {message_id}"),
    )


@router.post("/console/messages/{message_id}/run-now")
async def run_now(
    message_id: MessageId, request: Request, user: OperatorUser, session: SessionDep
) -> Response:
    """Run one delayed or retrying message now, keeping its id: moved to its ready queue, or
    released by the worker holding it."""
    operator = operator_for(user, session)
    view = _lookup(message_id)
    if view is not None and view.state == "held" and runnable_now(view):
        how = f"Ask worker {view.worker_id} to release {_described(message_id, view)} to its "
        how += "ready queue now?"
    else:
        how = f"Move {_described(message_id, view)} to the head of its ready queue now?"
    return await confirm_or_act(
        request,
        user,
        title="Run message now",
        consequence=f"{how} It keeps its id and runs once, ahead of its eta.",
        act=lambda: _ran_now(operator.run_now(message_id)),
    )


def runnable_now(view: MessageView) -> bool:
    """Whether run now applies to ``view``: delayed or retrying, in its delay queue's list or
    held by a worker until its eta (a held one with no eta was fetched to run: it is running
    or about to)."""
    return view.state in RUNNABLE_NOW or (view.state == "held" and view.eta_ms is not None)


def shown_arguments(view: MessageView) -> str:
    """A message's masked arguments on one line, as the CLI prints them."""
    shown = [_value(value) for value in view.args]
    shown += [f"{name}={_value(value)}" for name, value in view.kwargs.items()]
    return " ".join(shown) or "(none)"


def _queue_url(queue_name: str, state: State) -> str:
    """The console page listing ``queue_name``'s messages in ``state``."""
    return f"/console/queues/{queue_name}?state={state}"


def _value(value: object) -> str:
    """A masked value: the shapes masking wrote (``<str: 5 chars>``) as they are, others as
    Python literals (ids, flags)."""
    return value if isinstance(value, str) and value.startswith("<") else repr(value)


def _lookup(message_id: str) -> MessageView | None:
    broker = dramatiq.get_broker()
    return find_message(get_redis(), queue_names(broker), message_id, policy=MaskPolicy())


def _find(message_id: str) -> MessageView:
    view = _lookup(message_id)
    if view is None:
        raise ConsoleRefused(
            404,
            f"no message {message_id} is in any queue of fintask: it ran, or it was "
            "cancelled or deleted",
        )
    return view


def _max_retries(view: MessageView) -> object:
    """The most retries the message may get: its own option, else its actor's, else unknown."""
    own = view.options.get("max_retries")
    if own is not None:
        return own
    broker = dramatiq.get_broker()
    if view.actor_name in broker.get_declared_actors():
        return broker.get_actor(view.actor_name).options.get("max_retries")
    return None


def _described(message_id: str, view: MessageView | None) -> str:
    """The message an action names, as its confirmation says it (its state and queue when it
    is still there: a confirmation that finds it gone still asks, and the action says so)."""
    if view is None:
        return f"message {message_id}"
    noun = "dead letter" if view.state == "dead" else f"{view.state} message"
    return f"{noun} {message_id} of {view.queue_name}"


def _cancel_line(cancelled: Cancelled) -> str:
    """The result line of cancelling one message; a dead or vanished one is a failed line."""
    message_id = cancelled.message_id
    if cancelled.state is None:
        raise UnknownTarget(f"message {message_id} is no longer in any queue: it ran meanwhile")
    if cancelled.state == "dead":
        raise WrongState(f"message {message_id} is a dead letter: delete it instead")
    if cancelled.removed:
        return f"Cancelled {message_id}: removed from its queue without running, and revoked"
    return f"Cancelled {message_id}: revoked; the worker that has it does not start it, or stops it"


def _ran_now(moved: MessageMoved) -> str:
    """The result line of running one message now: a held one is still held as the page
    reloads, until its worker enqueues it."""
    if moved.released:
        return (
            f"Asked the worker holding {moved.message_id} to release it: it runs within about 2 s"
        )
    return f"Moved {moved.message_id} to its ready queue"


def _done(action: Callable[[], object], line: str) -> Callable[[], str]:
    """``action`` as ``confirm_or_act`` runs it: its result line once it is done (it raises
    ``UnknownTarget`` or ``WrongState``, a failed line, when it cannot be)."""

    def act() -> str:
        action()
        return line

    return act
