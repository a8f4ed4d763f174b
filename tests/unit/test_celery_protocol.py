"""A Celery message becomes a fintask message's arguments, delay and max_age, or a reason."""

from __future__ import annotations

import datetime as dt
import json

from app.celery_protocol import CeleryTask, delivery_of, read_task

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
HEADERS = {"task": "shop.tasks.record", "id": "t-1", "eta": None, "expires": None}
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def body(*args: object, **kwargs: object) -> bytes:
    return json.dumps([list(args), kwargs, EMBED]).encode()


def test_a_json_task_is_read_with_its_arguments_and_times():
    headers = {**HEADERS, "eta": "2026-12-02T12:00:30+00:00", "expires": "2026-12-02T13:00:00"}

    task = read_task(headers, "application/json", body(7, day="2026-12-01"))

    assert task == CeleryTask(
        "shop.tasks.record",
        "t-1",
        (7,),
        {"day": "2026-12-01"},
        eta=NOW + dt.timedelta(seconds=30),
        expires=NOW + dt.timedelta(hours=1),  # a naive time is UTC, as Celery's enable_utc
    )


def test_a_pickled_body_is_refused_by_its_content_type_unread():
    reason = read_task(HEADERS, "application/x-python-serialize", b"\x80\x04not even read")

    assert isinstance(reason, str)
    assert "'application/x-python-serialize', not JSON" in reason


def test_protocol_1_a_bad_body_and_a_chain_are_refused_with_the_reason():
    assert "not a Celery protocol 2 message" in str(read_task({}, "application/json", body()))
    assert "its body is not JSON" in str(read_task(HEADERS, "application/json", b"{"))
    chained = json.dumps([[], {}, {**EMBED, "chain": [{"task": "next"}]}]).encode()
    assert "it carries chain, which the bridge does not run" in str(
        read_task(HEADERS, "application/json", chained)
    )
    bad_eta = {**HEADERS, "eta": "tomorrow"}
    assert "its eta header 'tomorrow' is not an ISO 8601 time" in str(
        read_task(bad_eta, "application/json", body())
    )


def task(*, eta: dt.datetime | None = None, expires: dt.datetime | None = None) -> CeleryTask:
    return CeleryTask("shop.tasks.record", "t-1", (), {}, eta=eta, expires=expires)


def test_countdown_is_a_delay_and_the_actors_max_age_counts_after_it():
    delivery = delivery_of(task(eta=NOW + dt.timedelta(minutes=2)), now=NOW, actor_max_age=60_000)

    assert (delivery.delay_ms, delivery.max_age) == (120_000, 180_000)


def test_expires_shortens_max_age_and_never_lengthens_it():
    soon = delivery_of(task(expires=NOW + dt.timedelta(seconds=10)), now=NOW, actor_max_age=60_000)
    late = delivery_of(task(expires=NOW + dt.timedelta(hours=2)), now=NOW, actor_max_age=60_000)
    gone = delivery_of(task(expires=NOW - dt.timedelta(seconds=1)), now=NOW, actor_max_age=None)

    assert (soon.delay_ms, soon.max_age) == (None, 10_000)
    assert late.max_age == 60_000
    assert gone.expired


def test_a_task_with_neither_keeps_its_actors_own_max_age():
    assert delivery_of(task(), now=NOW, actor_max_age=60_000).max_age is None
