"""The schedule's declaration: every cron spec fires when periodiq says, Sunday included, and
wrong specs or actors fail at import with the job named."""

from __future__ import annotations

import datetime as dt
from typing import Any

import dramatiq
import pendulum
import periodiq
import pytest

from app.house_rules import house_rule_problems
from app.middleware.ticks import TICK_TTL_S
from app.schedule_control import RunRequest
from scheduler.cron import ONE_MINUTE, CronSpec, ScheduleError, next_tick, parse_spec
from scheduler.jobs import Schedule, every
from scheduler.render import ScheduleLive, render_schedule, schedule_data
from scheduler.schedule import SCHEDULE
from tests.support.scheduler_actors import declare_noop_actor

SATURDAY = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)


def scan(cron: periodiq.CronSpec, after: dt.datetime, days: int) -> dt.datetime | None:
    """The first minute after ``after`` that periodiq's ``validate`` accepts, minute by minute."""
    moment = after.replace(second=0, microsecond=0)
    for _ in range(days * 1440):
        moment += ONE_MINUTE
        if cron.validate(moment):
            return moment
    return None


@pytest.fixture
def declare(stub_broker):
    """Declare a throwaway actor on the stub broker; forgotten after the test."""
    names: list[str] = []

    def declare_actor(name: str, **limits: Any) -> dramatiq.Actor[..., Any]:
        names.append(name)
        return declare_noop_actor(name, **limits)

    yield declare_actor
    for name in names:
        del stub_broker.actors[name]


# The schedule itself


@pytest.mark.parametrize("job", list(SCHEDULE), ids=lambda job: job.name)
def test_each_job_fires_at_the_minutes_periodiq_validates(job):
    # Given fintask's schedule, from several starting points over a week
    starts = [SATURDAY + dt.timedelta(hours=h, minutes=h * 7 % 60) for h in range(0, 24 * 8, 5)]

    for start in starts:
        # When the next tick is computed
        tick = next_tick(job.cron, start)

        # Then it is the first minute periodiq's validate accepts: nothing skipped, nothing extra
        assert tick == scan(job.cron, start, days=8)


@pytest.mark.parametrize("job", list(SCHEDULE), ids=lambda job: job.name)
def test_each_periodic_actor_follows_the_house_rules(job):
    actor = job.actor

    assert house_rule_problems(actor) == []
    assert actor.options["max_age"] < TICK_TTL_S * 1000
    assert actor.options["periodic"] is job.cron  # plain periodiq finds it too


def test_daily_and_weekly_jobs_catch_up_and_frequent_jobs_do_not():
    catching_up = {job.name for job in SCHEDULE if job.catch_up}

    assert catching_up == {"send_daily_digests", "start_weekly_report"}


# Sunday


@pytest.mark.parametrize(
    "spec", ["0 6 * * 0", "0 6 * * sun", "0 6 * * SUN", "0 6 * * 7", "@weekly"]
)
def test_sunday_fires_every_sunday_however_it_is_written(spec):
    # Given a weekly spec naming Sunday in any of the usual ways
    cron = parse_spec(spec, job="weekly")

    # When the ticks are followed from each day of a week, by fintask and by periodiq itself
    for day in range(7):
        start = SATURDAY + dt.timedelta(days=day, hours=12)
        ours = next_tick(cron, start)
        periodiqs = cron.next_valid_date(pendulum.instance(start))

        # Then both land on the coming Sunday, and periodiq's validate accepts it
        assert ours is not None
        assert ours.isoweekday() == 7
        assert ours - start < dt.timedelta(days=7)
        assert periodiqs == ours
        assert cron.validate(ours)


def test_periodiq_alone_never_fires_sunday_as_zero():
    # The trap this module closes: periodiq's own spec for Sunday 0 never validates
    plain = periodiq.cron("0 6 * * 0")

    assert scan(plain, SATURDAY, days=15) is None
    assert scan(parse_spec("0 6 * * 0", job="weekly"), SATURDAY, days=15) is not None


def test_periodiq_alone_skips_a_sunday_written_as_seven():
    # At 00:00 on Sunday 2 June, the next 06:00 on a Sunday is the same day
    sunday_midnight = SATURDAY + dt.timedelta(days=1)
    plain = periodiq.cron("0 6 * * 7")

    assert plain.next_valid_date(pendulum.instance(sunday_midnight)).day == 9  # a week late
    assert next_tick(parse_spec("0 6 * * 7", job="weekly"), sunday_midnight).day == 2


def test_a_week_without_saturday_stays_restricted_once_sunday_is_doubled():
    # Given Sunday to Friday: with Sunday as 0 and 7 periodiq would count seven entries
    cron = parse_spec("0 6 * * sun-fri", job="weekdays")

    # Then Saturday still never fires, and every other day does
    assert cron.is_dow_restricted
    fired = {next_tick(cron, SATURDAY + dt.timedelta(days=d)).isoweekday() for d in range(7)}
    assert fired == {7, 1, 2, 3, 4, 5}


# Wrong declarations


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("* * * *", "has 4 fields; expected 5"),
        ("61 * * * *", "has minute 61, outside 0-59"),
        ("0 24 * * *", "has hour 24, outside 0-23"),
        ("0 0 * * 8", "has day of week 8, outside 0-7"),
        ("0 0 31 2 *", "never fires"),
        ("*/0 * * * *", "does not parse"),
        ("5-1 * * * *", "has a range that selects nothing"),
        ("0 0 1 jan *", "does not parse"),
        ("@fortnightly", "is not a known alias"),
    ],
)
def test_a_spec_that_cannot_fire_is_refused_naming_the_job(spec, reason):
    with pytest.raises(ScheduleError) as refused:
        parse_spec(spec, job="nightly_report")

    assert str(refused.value).startswith(f"job 'nightly_report': cron spec {spec!r} {reason}")


def test_an_actor_breaking_the_house_rules_cannot_be_scheduled(stub_broker):
    @dramatiq.actor(queue_name="scheduler_test")
    def lazy(**kwargs: Any) -> None:
        pass

    try:
        with pytest.raises(ScheduleError, match="job 'lazy': the actor does not state time_limit"):
            every("* * * * *", run=lazy)
    finally:
        del stub_broker.actors["lazy"]


def test_an_actor_outliving_its_tick_key_cannot_be_scheduled(declare):
    actor = declare("patient", max_age=TICK_TTL_S * 1000)

    with pytest.raises(ScheduleError, match="job 'patient': max_age=172800000 ms must be below"):
        every("* * * * *", run=actor)


def test_an_actor_scheduled_twice_is_refused(declare):
    actor = declare("twice")

    with pytest.raises(ScheduleError, match="jobs scheduled more than once: twice"):
        Schedule(every("* * * * *", run=actor), every("0 * * * *", run=actor))


# The schedule as data


def test_the_schedule_is_data_with_next_runs_in_utc(declare):
    # Given a schedule and a moment in a time zone other than UTC
    hourly, daily = declare("hourly"), declare("daily")
    schedule = Schedule(
        every("5 * * * *", run=hourly), every("0 6 * * *", run=daily, catch_up=True)
    )
    now = dt.datetime(2024, 6, 1, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))  # 05:30 UTC

    # with its state in Redis: the daily job sent yesterday, paused, and asked to run now
    request = RunRequest("daily", "r-1", dt.datetime(2024, 6, 1, 5, 29, tzinfo=dt.UTC), "cli:ada")
    live = ScheduleLive(
        last_sent={"daily": dt.datetime(2024, 5, 31, 6, tzinfo=dt.UTC)},
        paused=frozenset({"daily"}),
        pending=[request],
    )

    # When it is read as data
    rows = schedule_data(now, schedule, live=live)

    # Then each job comes with its next run in UTC (RFC 3339), soonest first, and its state
    assert [row.as_dict() for row in rows] == [
        {
            "name": "daily",
            "queue": "scheduler_test",
            "spec": "0 6 * * *",
            "catch_up": True,
            "next_run": "2024-06-01T06:00:00.000Z",
            "last_sent": "2024-05-31T06:00:00.000Z",
            "paused": True,
            "run_requests": [
                {
                    "job": "daily",
                    "request_id": "r-1",
                    "requested_at": "2024-06-01T05:29:00.000Z",
                    "requested_by": "cli:ada",
                }
            ],
        },
        {
            "name": "hourly",
            "queue": "scheduler_test",
            "spec": "5 * * * *",
            "catch_up": False,
            "next_run": "2024-06-01T06:05:00.000Z",
            "last_sent": None,
            "paused": False,
            "run_requests": [],
        },
    ]


def test_without_redis_the_schedules_state_is_unknown_not_empty(declare):
    schedule = Schedule(every("5 * * * *", run=declare("hourly")))

    (row,) = schedule_data(SATURDAY, schedule)

    assert (row.last_sent, row.paused, row.run_requests) == (None, None, None)


def test_the_schedule_renders_as_a_table(declare):
    hourly, daily = declare("hourly"), declare("daily")
    schedule = Schedule(every("5 * * * *", run=hourly), every("0 6 * * *", run=daily))
    request = RunRequest("daily", "r-1", SATURDAY, "cli:ada")
    live = ScheduleLive(last_sent={}, paused=frozenset({"hourly"}), pending=[request])

    assert render_schedule(SATURDAY, schedule, live=live).splitlines() == [
        "job     queue           cron (UTC)  catch up  next run (UTC)    last sent (UTC)  paused  "
        "run now",
        "hourly  scheduler_test  5 * * * *   no        2024-06-01 00:05  -                yes     "
        "-",
        "daily   scheduler_test  0 6 * * *   no        2024-06-01 06:00  -                no      "
        "1 waiting",
        "run-now request r-1 of daily: asked by cli:ada at 2024-06-01T00:00:00.000Z, not yet "
        "taken by a scheduler",
    ]
    assert render_schedule(SATURDAY, schedule).splitlines()[1] == (
        "hourly  scheduler_test  5 * * * *   no        2024-06-01 00:05  ?                ?       ?"
    )


def test_fintasks_schedule_renders_every_job():
    table = render_schedule(SATURDAY)

    for job in SCHEDULE:
        assert job.name in table
    assert isinstance(SCHEDULE.jobs[0].cron, CronSpec)
