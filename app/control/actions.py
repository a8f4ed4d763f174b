"""What an operator can do to the running fleet, each action with its audit row.

The ``fintask`` CLI, the HTTP API and the console call these and nothing else, so that every
face acts alike and every action is audited the same way: the change is made in Redis first,
then its row (who, when, what, how many messages) is committed; an action on a page's selected
messages commits one row per message it was done to. If the database cannot take the row the
error reaches the caller, who then knows the action was made but not recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from dramatiq import Broker
from sqlalchemy.orm import Session

from app import control_state, schedule_control
from app.broker_features import require_redis_broker
from app.control import audit, moves
from app.control.batches import settle_taken_out
from app.control.cancel import Cancelled, cancel_matching, cancel_message
from app.control.stored import Found, State, Stored, as_text, locate
from app.control_state import AbortMode
from app.inspection import DeadLetter, delete_dead_letter, find_dead_letter, requeue_dead_letter
from app.middleware.rate_limits import parse_rate
from app.queues import canonical_queue_names
from app.rabbitmq import FintaskRabbitmqBroker
from app.timestamps import rfc3339
from chunking import Batches, ChunkedRun, UnknownBatch, cancel_run, pause_run, resume_run
from chunking.redis_keys import messages_key, queue_key

#: The ``max_age`` assumed for a message whose actor this process does not declare (a week:
#: Dramatiq's default ``max_age`` is none, and its dead letters live a week).
UNKNOWN_ACTOR_MAX_AGE_MS = 7 * 24 * 3_600_000

#: Ready messages one call of ``_PURGE`` takes.
PURGE_PAGE = 1_000

# KEYS: a ready list, its messages. ARGV: how many. Takes that many ids from the head of the
# list and drops their payloads (not those of the messages workers hold, which share the hash);
# returns how many it took and the payloads of the batch members among them, which no worker
# will record. LRANGE and LTRIM, not LPOP: the web process purges, and may not pop
# (ops/redis-users.acl).
_PURGE = """
local ids = redis.call("LRANGE", KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then return {0, {}} end
redis.call("LTRIM", KEYS[1], #ids, -1)
local payloads = redis.call("HMGET", KEYS[2], unpack(ids))
redis.call("HDEL", KEYS[2], unpack(ids))
local members = {}
for _, payload in ipairs(payloads) do
  if payload and string.find(payload, "batch_member", 1, true) then
    members[#members + 1] = payload
  end
end
return {#ids, members}
"""


T = TypeVar("T")


class UnknownTarget(LookupError):
    """The queue, actor or message an action names is not one of fintask's (the text lists the
    queues or actors), or the message is no longer there."""


class WrongState(ValueError):
    """The message is in a state the action does not apply to (a ready one is not requeued, a
    running one is not run now): the text says which, and what to do instead."""


@dataclass(frozen=True)
class MessageMoved:
    """What requeueing, deleting or running now did to one message: the state it was in, and
    the one it is in now (None: deleted; ``held``: its worker was asked to release it)."""

    message_id: str
    redis_id: str
    queue_name: str
    was: State
    now: State | None

    @property
    def released(self) -> bool:
        """Whether running it now left it held by its worker, asked to release it: that worker
        enqueues it within about 2 s (``Operator.run_now``)."""
        return self.now == "held"

    def as_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "redis_message_id": self.redis_id,
            "queue_name": self.queue_name,
            "was": self.was,
            "state": self.now,
        }


@dataclass(frozen=True)
class BulkOutcome:
    """What one action did to the messages selected on a page: of those ``asked``, how many it
    was ``done`` to, how many were ``gone`` (settled, moved or deleted since the page was
    read), and how many it was ``refused`` for (now in a state it does not apply to)."""

    asked: int
    done: int
    gone: int
    refused: int


#: An audit row of one message's action: its target, its count and its detail.
_Row = tuple[str, int, dict[str, object]]


@dataclass(frozen=True)
class LimitView:
    """An actor's rate limit: as declared, and as an operator overrode it at runtime."""

    actor_name: str
    declared: str | None
    override: str | None

    @property
    def effective(self) -> str | None:
        return self.override or self.declared

    def as_dict(self) -> dict[str, Any]:
        return {
            "actor_name": self.actor_name,
            "declared": self.declared,
            "override": self.override,
            "effective": self.effective,
        }


@dataclass(frozen=True)
class Operator:
    """Someone acting on the fleet: ``who`` as the audit trail names them (``token:<name>``,
    ``cli:<user>@<host>``), with the database, Redis, the broker whose actors and queues
    the actions may name, and the batches (``pipelines.batches.BATCHES``, which the kernel may
    not import: the edges pass it) in which the members an action takes out of a queue are
    recorded as cancelled."""

    who: str
    session: Session
    client: redis.Redis
    broker: Broker
    batches: Batches

    def pause_queue(self, queue_name: str) -> bool:
        """Stop every worker starting messages of ``queue_name``; False if it was paused."""
        check_queue(self.broker, queue_name)
        changed = control_state.pause_queue(self.client, queue_name)
        self._audit("queue.pause", queue_name, detail={"changed": changed})
        return changed

    def resume_queue(self, queue_name: str) -> bool:
        """Let the workers start ``queue_name``'s messages again; False if it was not paused."""
        check_queue(self.broker, queue_name)
        changed = control_state.resume_queue(self.client, queue_name)
        self._audit("queue.resume", queue_name, detail={"changed": changed})
        return changed

    def purge_queue(self, queue_name: str) -> int:
        """Delete every ready message of ``queue_name``; how many. Delayed messages, messages
        workers hold and dead letters are kept (on RabbitMQ too: its purge takes only what
        waits for a consumer).

        On Redis the list is taken ``PURGE_PAGE`` ids a script call, up to the length it had
        when the purge began (so producers sending all along cannot keep it going), and the
        batch members among them are recorded as cancelled. RabbitMQ's purge hands back no
        payloads: a member purged there leaves its batch waiting until it is cancelled.
        """
        check_queue(self.broker, queue_name)
        if isinstance(self.broker, FintaskRabbitmqBroker):
            purged = self.broker.purge_ready(queue_name)
        else:
            purged = self._purge_redis(queue_name)
        self._audit("queue.purge", queue_name, count=purged)
        return purged

    def _purge_redis(self, queue_name: str) -> int:
        script = self.client.register_script(_PURGE)
        keys = [queue_key(queue_name), messages_key(queue_name)]
        listed = int(self.client.llen(keys[0]))
        purged = 0
        while purged < listed:
            taken, members = script(keys=keys, args=[min(PURGE_PAGE, listed - purged)])
            purged += int(taken)
            settle_taken_out(self.batches, map(_decoded, members), how="queue purged")
            if int(taken) == 0:
                break
        return purged

    def set_rate_limit(self, actor_name: str, rate: str) -> LimitView:
        """Make ``rate`` the limit of ``actor_name`` across the fleet (within about a second).

        ``ValueError`` names what is wrong with ``rate``; ``UnknownTarget`` an unknown actor.
        """
        declared = declared_rate_limit(self.broker, actor_name)
        parse_rate(rate)
        text = rate.strip().replace(" ", "")
        control_state.set_rate_limit(self.client, actor_name, text)
        self._audit("limit.set", actor_name, detail={"rate": text, "declared": declared})
        return LimitView(actor_name, declared, text)

    def clear_rate_limit(self, actor_name: str) -> bool:
        """Go back to ``actor_name``'s declared limit; False if it had no override."""
        declared_rate_limit(self.broker, actor_name)
        changed = control_state.clear_rate_limit(self.client, actor_name)
        self._audit("limit.clear", actor_name, detail={"changed": changed})
        return changed

    def cancel(self, message_id: str, *, mode: AbortMode = "soft") -> Cancelled:
        """Cancel one message wherever it is (``app.control.cancel.cancel_message``)."""
        cancelled = cancel_message(
            self.client,
            queue_names(self.broker),
            message_id,
            mode=mode,
            max_age_ms=max_age_of(self.broker),
            batches=self.batches,
        )
        if cancelled.state is not None:
            _, count, detail = _cancel_row(cancelled, mode)
            self._audit("message.cancel", message_id, count=count, detail=detail)
        return cancelled

    def cancel_many(
        self, queue_name: str, redis_ids: Iterable[str], *, mode: AbortMode = "soft"
    ) -> BulkOutcome:
        """Cancel, as ``cancel`` does, the messages of ``queue_name`` a page selected by their
        Redis ids (one lookup each: one that is gone is not searched for); a dead letter is
        refused. One audit row per message cancelled."""
        check_queue(self.broker, queue_name)

        def attempt(redis_id: str) -> Cancelled:
            cancelled = cancel_message(
                self.client,
                [queue_name],
                redis_id,
                mode=mode,
                max_age_ms=max_age_of(self.broker),
                batches=self.batches,
                by_message_id=False,
            )
            if cancelled.state is None:
                raise UnknownTarget(redis_id)
            if cancelled.state == "dead":
                raise WrongState(redis_id)
            return cancelled

        return self._bulk("message.cancel", redis_ids, attempt, lambda c: _cancel_row(c, mode))

    def requeue(self, message_id: str) -> MessageMoved:
        """Move a dead letter (by message id or Redis id) back to its ready queue, afresh: its
        retries start again from zero (``app.inspection.requeue_dead_letter``)."""
        moved = self._requeue(self._dead_letter(message_id, "only dead letters are requeued"))
        self._audit_row("message.requeue", _moved_row(moved))
        return moved

    def requeue_many(self, queue_name: str, redis_ids: Iterable[str]) -> BulkOutcome:
        """Requeue the dead letters of ``queue_name`` a page selected by their Redis ids."""
        check_queue(self.broker, queue_name)
        return self._bulk(
            "message.requeue",
            redis_ids,
            lambda redis_id: self._requeue(self._dead_letter_of(queue_name, redis_id)),
            _moved_row,
        )

    def delete_dead(self, message_id: str) -> MessageMoved:
        """Delete one dead letter (by message id or Redis id) and the reason it died, for good.

        Only dead letters: a waiting message is removed without running by ``cancel``.
        """
        hint = "cancel it to remove it without running"
        moved = self._delete(self._dead_letter(message_id, hint))
        self._audit_row("message.delete", _moved_row(moved))
        return moved

    def delete_dead_many(self, queue_name: str, redis_ids: Iterable[str]) -> BulkOutcome:
        """Delete the dead letters of ``queue_name`` a page selected by their Redis ids."""
        check_queue(self.broker, queue_name)
        return self._bulk(
            "message.delete",
            redis_ids,
            lambda redis_id: self._delete(self._dead_letter_of(queue_name, redis_id)),
            _moved_row,
        )

    def run_now(self, message_id: str) -> MessageMoved:
        """Run a delayed or retrying message (by message id or Redis id) once, now, ahead of
        its eta, keeping its message id.

        One still in its delay queue's list is moved to the head of its ready queue
        (``app.control.moves``). One a worker's delay consumer already holds in memory is left
        where it is, and the worker is asked, through the control state, to release it: it
        enqueues it within about 2 s, as it would at its eta (``app.middleware.fleet``);
        the answer says so (``MessageMoved.released``). A message a worker fetched from its
        ready queue (prefetched or running) is refused: it runs now already.
        """
        require_redis_broker("running a delayed message now")
        found = locate(self.client, queue_names(self.broker), message_id)
        if found is None:
            raise UnknownTarget(f"no message {message_id} is in any queue of fintask")
        if found.state == "held" and found.stored.place == "delay":
            return self._release(found)
        if found.state not in ("delayed", "retrying"):
            raise WrongState(_not_delayed(message_id, found))
        stored = found.stored
        outcome = moves.run_now(self.client, stored.queue_name, stored.redis_id)
        if outcome == "missing":
            raise UnknownTarget(f"message {message_id} went meanwhile: it ran or was cancelled")
        if outcome == "held":
            return self._release(found)  # a delay consumer fetched it since it was located
        if outcome != "ready":
            raise WrongState(f"message {message_id} moved meanwhile ({outcome}): look again")
        moved = MessageMoved(
            stored.message_id, as_text(stored.redis_id), stored.queue_name, found.state, "ready"
        )
        self._audit_row("message.run_now", _run_now_row(moved, stored, "moved to its ready queue"))
        return moved

    def cancel_matching(
        self,
        actor_name: str,
        arguments: Mapping[str, object],
        *,
        dry_run: bool,
        mode: AbortMode = "soft",
    ) -> int:
        """Cancel (or, with ``dry_run``, count) every waiting or held message of
        ``actor_name`` whose keyword arguments include ``arguments``. A dry run is not
        audited: it changes nothing."""
        declared_rate_limit(self.broker, actor_name)
        count = cancel_matching(
            self.client,
            [self.broker.get_actor(actor_name).queue_name],
            actor_name=actor_name,
            arguments=arguments,
            dry_run=dry_run,
            mode=mode,
            max_age_ms=max_age_of(self.broker),
            batches=self.batches,
        )
        if not dry_run:
            detail = {"arguments": dict(arguments), "mode": mode}
            self._audit("message.cancel_matching", actor_name, count=count, detail=detail)
        return count

    def pause_job(self, job: str, *, known: Collection[str]) -> bool:
        """Stop sending ``job``'s ticks on every scheduler; False if it was paused. Its ticks
        due meanwhile are not caught up on resume: a pause means "do not run"."""
        check_job(job, known)
        changed = schedule_control.pause_job(self.client, job)
        self._audit("schedule.pause", job, detail={"changed": changed})
        return changed

    def resume_job(self, job: str, *, known: Collection[str]) -> bool:
        """Send ``job``'s ticks again from its next one; False if it was not paused."""
        check_job(job, known)
        changed = schedule_control.resume_job(self.client, job)
        self._audit("schedule.resume", job, detail={"changed": changed})
        return changed

    def run_job(self, job: str, *, known: Collection[str]) -> str:
        """Ask the schedulers to run ``job`` once now, as a tick of its own (so it runs once);
        the id of the request."""
        check_job(job, known)
        request_id = schedule_control.request_run(self.client, job, requested_by=self.who)
        self._audit("schedule.run", job, detail={"request_id": request_id})
        return request_id

    def pause_run(self, run_id: int) -> bool:
        """Stop chunked run ``run_id`` after its current chunk; False if it was not running."""
        with self.session.begin():
            changed = pause_run(self.session, run_id)
            self._record("run.pause", str(run_id), detail={"changed": changed})
        return changed

    def resume_run(self, run_id: int, chunked_run: ChunkedRun) -> bool:
        """Restart run ``run_id`` (of ``chunked_run``, which the edges look up by the run's
        name: the runs are the workloads') from its cursor; False if it cannot resume."""
        with self.session.begin():
            changed = resume_run(self.session, chunked_run, run_id)
            self._record("run.resume", str(run_id), detail={"changed": changed})
        return changed

    def cancel_run(self, run_id: int) -> bool:
        """End run ``run_id`` for good; False if it had already ended. A run with a fan-in has
        its batch cancelled once the run's end commits (``chunking.cancel_run``): no chunk
        will add its remaining members, so its ``on_failure`` fires now instead of never."""
        with self.session.begin():
            changed = cancel_run(self.session, run_id, batches=self.batches)
            self._record("run.cancel", str(run_id), detail={"changed": changed})
        return changed

    def cancel_batch(self, batch_id: str) -> int:
        """Cancel batch ``batch_id``: every member not yet done counts as cancelled (those
        still queued are skipped when they come up), and ``on_failure`` and ``on_complete``
        fire once; how many members were pending. ``UnknownTarget`` for a batch not kept,
        ``WrongState`` for one already complete."""
        progress = self.batches.progress(batch_id)
        if progress is None:
            raise UnknownTarget(
                f"no batch {batch_id!r}: never created, or expired a week after it completed"
            )
        try:
            cancelled = self.batches.cancel(batch_id)
        except UnknownBatch as error:
            raise UnknownTarget(str(error)) from None
        if not cancelled:
            raise WrongState(
                f"batch {batch_id} is complete already ({progress.succeeded} succeeded, "
                f"{progress.failed} failed): there is nothing left to cancel"
            )
        detail = {"name": progress.name, "state": progress.state}
        self._audit("batch.cancel", batch_id, count=progress.pending, detail=detail)
        return progress.pending

    def _release(self, found: Found) -> MessageMoved:
        """Ask the worker holding delayed message ``found`` to enqueue it now (its Redis id in
        the control state's releases, until an hour past its eta), and audit it."""
        stored = found.stored
        redis_id = as_text(stored.redis_id)
        control_state.release(self.client, redis_id, eta_ms=stored.eta_ms)
        moved = MessageMoved(stored.message_id, redis_id, stored.queue_name, found.state, "held")
        self._audit_row("message.run_now", _run_now_row(moved, stored, "released by its worker"))
        return moved

    def _dead_letter(self, wanted: str, hint: str) -> DeadLetter:
        """The dead letter ``wanted`` names (message id or Redis id), in any queue;
        ``WrongState`` with ``hint`` when the message is in another state, else
        ``UnknownTarget``."""
        names = queue_names(self.broker)
        letter = find_dead_letter(self.client, names, wanted)
        if letter is not None:
            return letter
        found = locate(self.client, names, wanted)
        if found is not None:
            raise WrongState(f"message {wanted} is {found.state}, not a dead letter: {hint}")
        raise UnknownTarget(f"no message {wanted} is in any queue of fintask")

    def _dead_letter_of(self, queue_name: str, redis_id: str) -> DeadLetter:
        """The dead letter of ``queue_name`` with this Redis id (one lookup, no scan)."""
        letter = find_dead_letter(self.client, [queue_name], redis_id, by_message_id=False)
        if letter is None:
            raise UnknownTarget(f"no dead letter {redis_id} is in {queue_name}")
        return letter

    def _requeue(self, letter: DeadLetter) -> MessageMoved:
        outcome = requeue_dead_letter(self.client, letter.queue_name, letter.redis_id)
        if outcome == "missing":
            raise UnknownTarget(
                f"dead letter {letter.message_id} was requeued or deleted meanwhile"
            )
        if outcome == "already_queued":
            raise WrongState(f"message {letter.message_id} is queued already: it was not moved")
        if outcome != "requeued":
            raise WrongState(f"dead letter {letter.message_id} changed as it was moved: try again")
        return MessageMoved(letter.message_id, letter.redis_id, letter.queue_name, "dead", "ready")

    def _delete(self, letter: DeadLetter) -> MessageMoved:
        if not delete_dead_letter(self.client, letter.queue_name, letter.redis_id):
            raise UnknownTarget(
                f"dead letter {letter.message_id} was requeued or deleted meanwhile"
            )
        return MessageMoved(letter.message_id, letter.redis_id, letter.queue_name, "dead", None)

    def _bulk(
        self,
        action: str,
        redis_ids: Iterable[str],
        attempt: Callable[[str], T],
        row: Callable[[T], _Row],
    ) -> BulkOutcome:
        """``attempt`` on each Redis id once, counting what was done, gone or refused; the rows
        of those done commit together, after the last one was made in Redis."""
        unique = list(dict.fromkeys(redis_ids))
        done: list[T] = []
        gone = refused = 0
        for redis_id in unique:
            try:
                done.append(attempt(redis_id))
            except UnknownTarget:
                gone += 1
            except WrongState:
                refused += 1
        with self.session.begin():
            for result in done:
                target, count, detail = row(result)
                self._record(action, target, count=count, detail=detail)
        return BulkOutcome(len(unique), len(done), gone, refused)

    def _audit_row(self, action: str, row: _Row) -> None:
        target, count, detail = row
        self._audit(action, target, count=count, detail=detail)

    def _audit(
        self,
        action: str,
        target: str,
        *,
        count: int = 0,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        with self.session.begin():
            self._record(action, target, count=count, detail=detail)

    def _record(
        self,
        action: str,
        target: str,
        *,
        count: int = 0,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """Add the action's audit row to the transaction in progress: a change made in the
        database commits with its row, or neither does."""
        audit.record(
            self.session, who=self.who, action=action, target=target, count=count, detail=detail
        )


def _decoded(payload: bytes) -> dict[str, Any] | None:
    """A payload the purge took, as JSON decodes it (None if it is not a JSON object)."""
    try:
        decoded = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return decoded if isinstance(decoded, dict) else None


def _not_delayed(message_id: str, found: Found) -> str:
    """Why a message in ``found.state`` cannot be run now, and what to do instead."""
    if found.state == "held":
        return (
            f"message {message_id} is held by worker {found.worker_id}, fetched from its ready "
            "queue: it is running or about to"
        )
    if found.state == "dead":
        return f"message {message_id} is a dead letter: requeue it to run it again"
    return f"message {message_id} is ready already: the next consumer of its queue takes it"


def _cancel_row(cancelled: Cancelled, mode: AbortMode) -> _Row:
    count = int(cancelled.removed or cancelled.revoked)
    detail: dict[str, object] = {
        "state": cancelled.state,
        "removed": cancelled.removed,
        "mode": mode,
    }
    return cancelled.message_id, count, detail


def _run_now_row(moved: MessageMoved, stored: Stored, how: str) -> _Row:
    """The audit row of running ``moved`` now: its eta, and ``how`` it was made to run."""
    return _moved_row(moved, eta=rfc3339(stored.eta_ms), how=how)


def _moved_row(moved: MessageMoved, **more: object) -> _Row:
    detail: dict[str, object] = {
        "queue": moved.queue_name,
        "redis_message_id": moved.redis_id,
        "was": moved.was,
        **more,
    }
    return moved.message_id, 1, detail


def rate_limits(client: redis.Redis, broker: Broker) -> list[LimitView]:
    """Every actor with a declared or overriding rate limit, by name."""
    overrides = control_state.read_state(client).limits
    views = []
    for name in sorted(broker.get_declared_actors()):
        declared = broker.get_actor(name).options.get("rate_limit")
        if declared is not None or name in overrides:
            views.append(LimitView(name, declared, overrides.get(name)))
    return views


def declared_rate_limit(broker: Broker, actor_name: str) -> str | None:
    """``actor_name``'s declared rate limit; ``UnknownTarget`` if it is no actor of fintask."""
    if actor_name not in broker.get_declared_actors():
        known = ", ".join(sorted(broker.get_declared_actors()))
        raise UnknownTarget(f"{actor_name!r} is not an actor of fintask ({known})")
    rate: str | None = broker.get_actor(actor_name).options.get("rate_limit")
    return rate


def queue_names(broker: Broker) -> list[str]:
    """The queues fintask declares (delay queues left out), sorted."""
    return canonical_queue_names(broker.get_declared_queues())


def check_queue(broker: Broker, queue_name: str) -> None:
    """Raise ``UnknownTarget`` unless ``queue_name`` is a declared queue."""
    names = queue_names(broker)
    if queue_name not in names:
        raise UnknownTarget(f"{queue_name!r} is not a queue of fintask ({', '.join(names)})")


def check_job(job: str, known: Collection[str]) -> None:
    """Raise ``UnknownTarget`` unless ``job`` is one of the schedule's ``known`` jobs (the
    schedule is the scheduler's: the edges that act on it pass its job names)."""
    if job not in known:
        names = ", ".join(sorted(known))
        raise UnknownTarget(f"{job!r} is not a job of the schedule ({names})")


def max_age_of(broker: Broker) -> Callable[[str], int]:
    """An actor's ``max_age`` in ms, by actor name (a week for an actor not declared here)."""

    def max_age_ms(actor_name: str) -> int:
        if actor_name not in broker.get_declared_actors():
            return UNKNOWN_ACTOR_MAX_AGE_MS
        max_age = broker.get_actor(actor_name).options.get("max_age")
        return int(max_age) if max_age else UNKNOWN_ACTOR_MAX_AGE_MS

    return max_age_ms
