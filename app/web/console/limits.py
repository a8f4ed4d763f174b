"""The console's Limits page: each actor's rate limit as declared and as overridden, how busy
its limiter is, how many of its messages it deferred minute by minute; set and clear overrides.

The limits are the control plane's (``app.control.actions.rate_limits``, as ``GET /api/limits``
lists them). Usage is read from the limiters' own Redis keys and deferrals from the counts per
minute the workers' ``RateLimits`` keep (``app.middleware.rate_limits``). A limit is the
actor's whole: fintask's limits have no partitions, so each actor has the one, ``all``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import dramatiq
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.control.actions import LimitView, UnknownTarget, declared_rate_limit, rate_limits
from app.middleware.rate_limits import (
    ALL_PARTITIONS,
    deferral_series,
    parse_rate,
    read_booked,
)
from app.minute_counts import read_many_minutes
from app.redis_client import get_redis
from app.web.console.access import ConsoleRefused, OperatorUser, User, operator_for
from app.web.console.confirm import confirm_or_act
from app.web.console.render import render
from app.web.deps import SessionDep

router = APIRouter()

#: How many minutes of deferrals the page shows (and sums).
MINUTES = 60
#: The height of a deferral sparkline's tallest bar, in SVG units.
BAR_HEIGHT = 20

ActorField = Annotated[str, Form(max_length=200)]
RateField = Annotated[str, Form(max_length=32)]


@router.get("/console/limits")
def limits_page(request: Request, user: User) -> Response:
    """Every actor with a declared or overriding limit, by name."""
    client = get_redis()
    broker = dramatiq.get_broker()
    views = rate_limits(client, broker)
    booked = read_booked(client, [view.actor_name for view in views])
    deferrals = read_many_minutes(
        client, [deferral_series(view.actor_name) for view in views], minutes=MINUTES
    )
    rows = [
        limit_row(
            broker, view, booked[view.actor_name], deferrals[deferral_series(view.actor_name)]
        )
        for view in views
    ]
    limited = {view.actor_name for view in views}
    others = sorted(set(broker.get_declared_actors()) - limited)
    return render(
        request,
        user,
        "limits.html",
        limits=rows,
        others=others,
        back=request.url.path,
        minutes=MINUTES,
        bar_height=BAR_HEIGHT,
    )


def limit_row(
    broker: dramatiq.Broker,
    view: LimitView,
    booked_s: float,
    deferrals: dict[str, list[int]],
) -> dict[str, Any]:
    """``view`` as the page shows it: with its queue, its limiter's usage and its deferrals
    (its series of ``read_many_minutes``)."""
    deferred = deferrals.get(ALL_PARTITIONS, [0] * MINUTES)
    return {
        **view.as_dict(),
        "queue": broker.get_actor(view.actor_name).queue_name,
        "partition": ALL_PARTITIONS,
        "booked_s": booked_s,
        "booked_starts": _starts(view.effective, booked_s),
        "deferred": deferred,
        "deferred_total": sum(deferred),
        "deferred_bars": bars(deferred),
    }


def bars(counts: list[int]) -> list[tuple[int, int]]:
    """A sparkline of ``counts`` as SVG bars: (x, height) of each minute that has any, the
    busiest ``BAR_HEIGHT`` high (an SVG with attributes, as the page's CSP allows)."""
    top = max(counts, default=0)
    if not top:
        return []
    return [
        (index, max(1, round(BAR_HEIGHT * count / top)))
        for index, count in enumerate(counts)
        if count
    ]


def _starts(rate: str | None, booked_s: float) -> int | None:
    """How many slots of ``rate`` the ``booked_s`` seconds hold, one partly gone counted (None
    without a rate)."""
    if rate is None:
        return None
    try:
        interval_us = parse_rate(rate).interval_us
    except ValueError:  # an override written by hand into Redis
        return None
    return math.ceil(booked_s * 1_000_000 / interval_us)


@router.post("/console/limits/set")
async def set_limit(
    request: Request,
    user: OperatorUser,
    session: SessionDep,
    actor: ActorField,
    rate: RateField = "",
) -> Response:
    """Override ``actor``'s rate limit across the fleet."""
    declared = _declared(actor)
    operator = operator_for(user, session)

    def act() -> str:
        try:
            view = operator.set_rate_limit(actor, rate)
        except ValueError as error:
            raise ValueError(f"{actor}: {rate.strip()!r} {error}") from None
        return (
            f"{actor} is limited to {view.effective} across the fleet within about a second "
            f"(declared: {declared or 'none'})"
        )

    return await confirm_or_act(
        request,
        user,
        title=f"Limit {actor} to {rate.strip()}?",
        consequence=f"Every worker starts {actor} at most {rate.strip()} within about a "
        f"second, instead of its declared {declared or 'no limit'}, until the override is "
        "cleared. Messages over the limit wait for their slot.",
        act=act,
    )


@router.post("/console/limits/clear")
async def clear_limit(
    request: Request, user: OperatorUser, session: SessionDep, actor: ActorField
) -> Response:
    """Remove ``actor``'s override: its declared limit applies again."""
    declared = _declared(actor)
    operator = operator_for(user, session)
    after = f"its declared {declared} applies" if declared else "it is not limited"

    def act() -> str:
        if operator.clear_rate_limit(actor):
            return f"{actor}'s override is cleared: {after} again within about a second"
        return f"{actor} had no override: {after}"

    return await confirm_or_act(
        request,
        user,
        title=f"Clear the limit override of {actor}?",
        consequence=f"Every worker drops the override of {actor} within about a second: {after}.",
        act=act,
    )


def _declared(actor: str) -> str | None:
    """``actor``'s declared rate limit; a 404 page if it is no actor of fintask."""
    try:
        return declared_rate_limit(dramatiq.get_broker(), actor)
    except UnknownTarget as error:
        raise ConsoleRefused(404, str(error)) from None
