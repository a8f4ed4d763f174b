"""``fintask_actor``: Dramatiq's ``actor`` with the house rules enforced where actors are declared.

Every limit is a required keyword (no silent 10-minute time limit or 20 retries over a month),
the function must take ``**kwargs``, and an actor that was renamed keeps its old names as
aliases so the messages a previous release queued still find it during a deploy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import dramatiq

from app.middleware.guardrails import accepts_any_kwargs

F = TypeVar("F", bound=Callable[..., Any])


class HouseRuleViolation(TypeError):
    """An actor was declared against the house rules; the message names the actor and rule."""


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
    """Declare an actor; every duration is in milliseconds (``max_age`` is Celery's ``expires``)."""
    options.update(
        time_limit=time_limit,
        max_age=max_age,
        max_retries=max_retries,
        min_backoff=min_backoff,
        max_backoff=max_backoff,
    )

    def declare(fn: F) -> dramatiq.Actor[Any, Any]:
        if not accepts_any_kwargs(fn):
            name = actor_name or fn.__name__
            raise HouseRuleViolation(f"actor {name!r} does not accept **kwargs")
        actor = dramatiq.actor(actor_name=actor_name, queue_name=queue_name, **options)(fn)
        for alias in aliases:
            dramatiq.actor(actor_name=alias, queue_name=queue_name, **options)(fn)
        return actor

    return declare
