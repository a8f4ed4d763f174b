"""What an operator can do to the running fleet, each action with its audit row.

The ``fintask`` CLI and the HTTP API call these and nothing else, so that both faces act alike
and every action is audited the same way: the change is made in Redis first, then its row
(who, when, what, how many messages) is committed. If the database cannot take the row the
error reaches the caller, who then knows the action was made but not recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from dramatiq import Broker
from sqlalchemy.orm import Session

from app import control_state, schedule_control
from app.control import audit
from app.control.cancel import Cancelled, cancel_matching, cancel_message
from app.control_state import AbortMode
from app.middleware.rate_limits import parse_rate
from app.queues import canonical_queue_names
from chunking.redis_keys import messages_key, queue_key

#: The ``max_age`` assumed for a message whose actor this process does not declare (a week:
#: Dramatiq's default ``max_age`` is none, and its dead letters live a week).
UNKNOWN_ACTOR_MAX_AGE_MS = 7 * 24 * 3_600_000

# KEYS: a ready list, its messages. Empties the list and drops the payloads of the ids it held
# (not of the messages workers hold, which share the hash), 1,000 at a time. Returns how many.
_PURGE = """
local purged = 0
while true do
  local ids = redis.call("LPOP", KEYS[1], 1000)
  if not ids then break end
  redis.call("HDEL", KEYS[2], unpack(ids))
  purged = purged + #ids
end
return purged
"""


class UnknownTarget(LookupError):
    """The queue or actor an action names is not one of fintask's; the text lists them."""


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
    ``cli:<user>@<host>``), with the database, Redis and the broker whose actors and queues
    the actions may name."""

    who: str
    session: Session
    client: redis.Redis
    broker: Broker

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
        workers hold and dead letters are kept."""
        check_queue(self.broker, queue_name)
        script = self.client.register_script(_PURGE)
        purged = int(script(keys=[queue_key(queue_name), messages_key(queue_name)]))
        self._audit("queue.purge", queue_name, count=purged)
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
        )
        if cancelled.state is not None:
            count = int(cancelled.removed or cancelled.revoked)
            detail = {"state": cancelled.state, "removed": cancelled.removed, "mode": mode}
            self._audit("message.cancel", message_id, count=count, detail=detail)
        return cancelled

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

    def _audit(
        self,
        action: str,
        target: str,
        *,
        count: int = 0,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        with self.session.begin():
            audit.record(
                self.session, who=self.who, action=action, target=target, count=count, detail=detail
            )


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
