"""The house rules for actors, enforced where they are declared (``fintask_actor``).

Every limit is a required keyword (no silent 10-minute time limit or 20 retries over a month),
the function must take ``**kwargs`` (old and new releases exchange messages during a deploy),
an actor that was renamed keeps its old names as aliases so the messages a previous release
queued still find it, and a limit is in milliseconds: one under a second is refused as the
Celery seconds it almost certainly was (``time_limit=30`` ported from Celery is 30 ms).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import dramatiq

from app.declarations import check_options, current_broker

F = TypeVar("F", bound=Callable[..., Any])

REQUIRED_ACTOR_OPTIONS = ("time_limit", "max_age", "max_retries", "min_backoff", "max_backoff")

#: The shortest plausible ``time_limit`` and ``max_age`` (ms): below it, a Celery value in
#: seconds was ported as it stood. Backoffs may be shorter (a retry 100 ms later is a choice).
MIN_PLAUSIBLE_LIMIT_MS = 1_000

#: What Celery called each limit, for the message that refuses an implausible one.
_CELERY_NAMES = {"time_limit": "time_limit", "max_age": "expires"}


class HouseRuleViolation(TypeError):
    """An actor was declared against the house rules; the message names the actor and rule."""


def accepts_any_kwargs(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes ``**kwargs`` (a "rubber signature")."""
    parameters = inspect.signature(fn).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def house_rule_problems(actor: dramatiq.Actor[Any, Any]) -> list[str]:
    """Why ``actor`` breaks the house rules (empty when it follows them)."""
    problems = []
    if not accepts_any_kwargs(actor.fn):
        problems.append("does not accept **kwargs")
    for option in REQUIRED_ACTOR_OPTIONS:
        if option not in actor.options:
            problems.append(f"does not state {option}")
    for option in _CELERY_NAMES:
        problem = implausible_limit(option, actor.options.get(option, MIN_PLAUSIBLE_LIMIT_MS))
        if problem is not None:
            problems.append(problem)
    return problems


def implausible_limit(name: str, value: int) -> str | None:
    """Why ``value`` ms is an implausible ``time_limit`` or ``max_age`` (None if plausible)."""
    if value >= MIN_PLAUSIBLE_LIMIT_MS:
        return None
    return (
        f"{name}={value} is {value} ms: Dramatiq limits are in milliseconds; a Celery "
        f"{_CELERY_NAMES[name]} of {value} s is {name}={value * 1000:_}"
    )


def fintask_actor(
    *,
    queue_name: str,
    time_limit: int,
    max_age: int,
    max_retries: int,
    min_backoff: int,
    max_backoff: int,
    actor_name: str | None = None,
    aliases: Iterable[str] = (),
    **options: Any,
) -> Callable[[F], dramatiq.Actor[Any, Any]]:
    """Declare an actor; every duration is in milliseconds (``max_age`` is Celery's ``expires``).

    The actor is declared on this process's broker, or, before the entry point has built it,
    on the placeholder the broker takes its actors from (``app.declarations``).
    """
    options.update(
        time_limit=time_limit,
        max_age=max_age,
        max_retries=max_retries,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
    )

    def declare(fn: F) -> dramatiq.Actor[Any, Any]:
        name = actor_name or fn.__name__
        if not accepts_any_kwargs(fn):
            raise HouseRuleViolation(f"actor {name!r} does not accept **kwargs")
        for option in _CELERY_NAMES:
            problem = implausible_limit(option, options[option])
            if problem is not None:
                raise HouseRuleViolation(f"actor {name!r}: {problem}")
        broker = current_broker()
        check_options(broker, name, options)
        for alias in aliases:
            dramatiq.Actor(
                fn,
                broker=broker,
                actor_name=alias,
                queue_name=queue_name,
                priority=0,
                options=dict(options),
            )
        return dramatiq.Actor(
            fn, broker=broker, actor_name=name, queue_name=queue_name, priority=0, options=options
        )

    return declare
