"""Operators' control of the running schedule: a paused job sends nothing and catches nothing up
when resumed; a run-now request is sent once, as a tick of its own, within a poll; and
``fintask schedule`` pauses, resumes and runs jobs, audited, and still shows the schedule when
Redis is down. Schedulers run on a clock the test moves, against the test's own Redis."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from dramatiq import Message
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine, select

from app import schedule_control
from app.cli.common import cli_identity
from app.cli.main import main
from app.db.metadata import target_metadata
from app.db.models import AuditEvent
from app.db.session import default_engine, reset_default_engine, transaction
from app.local.ports import free_port
from app.middleware.ticks import tick_id, tick_key
from app.redis_client import get_redis
from app.schedule_control import (
    RUN_NOW_KEY,
    RunRequest,
    pause_job,
    paused_jobs,
    pending_run_requests,
    request_run,
    resume_job,
    take_run_requests,
)
from scheduler.claims import TickClaims
from scheduler.delivery import Sent, TickOutcome
from scheduler.jobs import Schedule, every
from scheduler.schedule import SCHEDULE
from scheduler.ticker import TickScheduler
from tests.support.clock import Clock
from tests.support.scheduler_actors import QUEUE, declare_noop_actor

START = dt.datetime(2024, 6, 3, 9, 30, 0, 50_000, tzinfo=dt.UTC)
MINUTELY, OTHER = "control_minutely", "control_other"


def at(minute: int, second: int = 0) -> dt.datetime:
    return dt.datetime(2024, 6, 3, 9, minute, second, tzinfo=dt.UTC)


def ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def queued(broker: StubBroker) -> list[Message[Any]]:
    return [Message.decode(data) for data in list(broker.queues[QUEUE].queue)]


def queued_ticks(broker: StubBroker) -> Counter[tuple[str, str]]:
    return Counter((m.actor_name, m.kwargs["tick"]) for m in queued(broker))


def outcomes(sent: list[Sent]) -> list[tuple[str, TickOutcome]]:
    return [(s.job, s.outcome) for s in sent]


@pytest.fixture
def schedule(stub_broker: StubBroker) -> Iterator[Schedule]:
    """Two jobs every minute; the first catches up missed ticks (so a pause must stop it)."""
    actors = [declare_noop_actor(MINUTELY), declare_noop_actor(OTHER)]
    yield Schedule(
        every("* * * * *", run=actors[0], catch_up=True), every("* * * * *", run=actors[1])
    )
    for actor in actors:
        del stub_broker.actors[actor.actor_name]


def scheduler_at(client: redis.Redis, schedule: Schedule, clock: Clock) -> TickScheduler:
    return TickScheduler(schedule, claims=TickClaims(client), clock=clock)


# The state in Redis


def test_a_pause_and_a_resume_say_whether_they_changed_anything(client):
    assert pause_job(client, MINUTELY) is True
    assert pause_job(client, MINUTELY) is False
    assert paused_jobs(client) == {MINUTELY}

    assert resume_job(client, OTHER, now_ms=1_000) is False
    assert resume_job(client, MINUTELY, now_ms=2_000) is True
    assert resume_job(client, MINUTELY, now_ms=3_000) is False

    assert paused_jobs(client) == frozenset()
    # only a real resume is kept: resuming a running job hides none of its missed ticks
    assert schedule_control.resumed_times(client) == {
        MINUTELY: dt.datetime(1970, 1, 1, 0, 0, 2, tzinfo=dt.UTC)
    }


def test_run_requests_wait_until_taken_and_each_is_taken_once(client):
    # Given fifty requests, and two schedulers taking them at once
    ids = [request_run(client, MINUTELY, requested_by="cli:ada") for _ in range(50)]
    assert [r.request_id for r in pending_run_requests(client)] == ids
    barrier = threading.Barrier(2)
    taken: list[list[RunRequest]] = [[], []]

    def take(index: int) -> None:
        barrier.wait()
        while len(taken[0]) + len(taken[1]) < len(ids):
            taken[index] += take_run_requests(client)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    # Then each request went to one of them, and none is left
    assert sorted(r.request_id for r in taken[0] + taken[1]) == sorted(ids)
    assert pending_run_requests(client) == []


def test_a_requests_tick_is_a_time_but_never_a_scheduled_ticks():
    on_the_minute = RunRequest(MINUTELY, "r-1", at(31), "cli:ada")

    assert on_the_minute.tick == "2024-06-03T09:31:00.000000+00:00"
    assert on_the_minute.tick != tick_id(at(31))
    assert dt.datetime.fromisoformat(on_the_minute.tick) == at(31)  # actors read it as a time


def test_a_request_that_does_not_parse_is_dropped_not_blocking_the_others(client, caplog):
    client.rpush(RUN_NOW_KEY, "not json")
    request_id = request_run(client, MINUTELY, requested_by="cli:ada")

    assert [r.request_id for r in take_run_requests(client)] == [request_id]
    assert "Dropped a run-now request that does not parse" in caplog.text


# Pauses


def test_a_paused_job_sends_nothing_at_its_tick_and_resumes_at_the_next(
    client, stub_broker, schedule, caplog
):
    caplog.set_level(logging.INFO, logger="scheduler")
    # Given a scheduler that sent 09:30, and the first job paused at 09:30:30
    clock = Clock(START)
    scheduler = scheduler_at(client, schedule, clock)
    scheduler.wake()
    pause_job(client, MINUTELY)

    # When 09:31 comes due, the job is resumed at 09:31:30, and 09:32 comes due
    clock.advance(minutes=1)
    during = scheduler.wake()
    resume_job(client, MINUTELY, now_ms=ms(at(31, 30)))
    clock.advance(minutes=1)
    after = scheduler.wake()

    # Then 09:31 was not sent, saying so once, and 09:32 was; 09:31 is not caught up
    assert outcomes(during) == [(OTHER, TickOutcome.SENT)]
    assert outcomes(after) == [(MINUTELY, TickOutcome.SENT), (OTHER, TickOutcome.SENT)]
    assert queued_ticks(stub_broker) == {
        **{(OTHER, tick_id(at(m))): 1 for m in (30, 31, 32)},
        **{(MINUTELY, tick_id(at(m))): 1 for m in (30, 32)},
    }
    assert (
        caplog.messages.count(f"job {MINUTELY} is paused: tick 2024-06-03T09:31:00+00:00 not sent")
        == 1
    )
    assert "missed" not in caplog.text


def test_ticks_due_while_paused_are_not_caught_up_by_a_scheduler_started_after(
    client, stub_broker, schedule, caplog
):
    # Given 09:30 sent, the job paused, no scheduler running from 09:31 to 09:34, and the job
    # resumed at 09:34:30
    scheduler_at(client, schedule, Clock(START)).wake()
    pause_job(client, MINUTELY)
    resume_job(client, MINUTELY, now_ms=ms(at(34, 30)))

    # When a new scheduler wakes at 09:35
    sent = scheduler_at(client, schedule, Clock(START + dt.timedelta(minutes=5))).wake()

    # Then it sends 09:35 only: 09:34, paused, is not the catch-up job's missed tick
    assert [(s.job, f"{s.tick:%H:%M}") for s in sent] == [(MINUTELY, "09:35"), (OTHER, "09:35")]
    assert "catching up" not in caplog.text
    missed = [line for line in caplog.messages if "missed" in line]
    assert missed == [
        f"{OTHER}: 4 tick(s) since 2024-06-03T09:30:00+00:00 were missed while no scheduler ran, "
        "not sent (catch_up is off): 2024-06-03T09:31:00+00:00, 2024-06-03T09:32:00+00:00, "
        "2024-06-03T09:33:00+00:00, 2024-06-03T09:34:00+00:00"
    ]


def test_when_redis_cannot_say_the_pauses_last_read_stay_in_force(
    client, stub_broker, schedule, caplog, monkeypatch
):
    # Given a scheduler that read the first job's pause at 09:30
    pause_job(client, MINUTELY)
    clock = Clock(START)
    scheduler = scheduler_at(client, schedule, clock)
    assert outcomes(scheduler.wake()) == [(OTHER, TickOutcome.SENT)]

    # When Redis stops answering the pause and request reads (the claims still go through)
    def refused(*_args: Any, **_kwargs: Any) -> Any:
        raise redis.ConnectionError("Connection refused.")

    for name in ("paused_jobs", "take_run_requests"):
        monkeypatch.setattr(f"scheduler.ticker.{name}", refused)
    clock.advance(minutes=1)
    sent = scheduler.wake()
    polled = [scheduler.poll(), scheduler.poll()]

    # Then the loop goes on: the paused job stays paused, the other is sent, each failure is
    # one warning (the request reads' once for the outage)
    assert outcomes(sent) == [(OTHER, TickOutcome.SENT)]
    assert polled == [[], []]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "Could not read the paused jobs (ConnectionError: Connection refused.); the pauses last "
        f"read stay in force: {MINUTELY}",
        "Could not take the run-now requests (ConnectionError: Connection refused.); they wait "
        "in Redis",
    ]


# Run now


def test_a_run_now_request_is_sent_once_as_its_own_tick_by_two_schedulers(
    client, stub_broker, schedule
):
    # Given two schedulers on one Redis that sent 09:30
    clocks = [Clock(START), Clock(START + dt.timedelta(milliseconds=300))]
    schedulers = [scheduler_at(client, schedule, clock) for clock in clocks]
    for scheduler in schedulers:
        scheduler.wake()

    # When an operator asks for a run at 09:30:20, and both poll at once, then wake at 09:31
    request_id = request_run(client, MINUTELY, requested_by="cli:ada")
    (request,) = pending_run_requests(client)
    for clock in clocks:
        clock.advance(seconds=20)
    barrier = threading.Barrier(2)
    polled: list[Sent] = []

    def poll(scheduler: TickScheduler) -> None:
        barrier.wait()
        polled.extend(scheduler.poll())

    threads = [threading.Thread(target=poll, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    last_after_the_request = TickClaims(client).last_ticks([MINUTELY])
    for clock in clocks:
        clock.advance(seconds=40)
    woken = [s.outcome for scheduler in schedulers for s in scheduler.wake()]

    # Then the request was sent once, by one of them, stamped with its own tick
    assert [(s.job, s.outcome, s.request_id) for s in polled] == [
        (MINUTELY, TickOutcome.SENT, request_id)
    ]
    assert queued_ticks(stub_broker)[(MINUTELY, request.tick)] == 1
    (message,) = [m for m in queued(stub_broker) if m.kwargs["tick"] == request.tick]
    assert client.get(tick_key(MINUTELY, request.tick)) == message.message_id.encode()
    # and it was not the job's scheduled tick: 09:30 stayed its last, and 09:31 still went, once
    assert last_after_the_request == {MINUTELY: at(30)}
    assert Counter(woken) == {TickOutcome.SENT: 2, TickOutcome.TAKEN: 2}
    assert queued_ticks(stub_broker)[(MINUTELY, tick_id(at(31)))] == 1
    assert TickClaims(client).last_ticks([MINUTELY]) == {MINUTELY: at(31)}


def test_a_request_taken_twice_is_still_sent_once(client, stub_broker, schedule):
    # Given a request, and two schedulers
    request_run(client, MINUTELY, requested_by="cli:ada")
    entry = client.lindex(RUN_NOW_KEY, 0)
    schedulers = [scheduler_at(client, schedule, Clock(START)) for _ in range(2)]

    # When one takes it, and the other takes it again (as if it had been given back)
    first = schedulers[0].poll()
    client.rpush(RUN_NOW_KEY, entry)
    second = schedulers[1].poll()

    # Then the claim lets only the first message out
    assert [s.outcome for s in first + second] == [TickOutcome.SENT, TickOutcome.TAKEN]
    assert len(queued(stub_broker)) == 1


def test_a_request_made_while_no_scheduler_runs_is_sent_by_the_next_to_start(
    client, stub_broker, schedule
):
    # Given a scheduler that ran at 09:30 and stopped, and a request made after it stopped
    scheduler_at(client, schedule, Clock(START)).wake()
    request_run(client, OTHER, requested_by="cli:ada")

    # When the next scheduler starts and polls
    sent = scheduler_at(client, schedule, Clock(START + dt.timedelta(seconds=5))).poll()

    # Then it sends the request
    assert outcomes(sent) == [(OTHER, TickOutcome.SENT)]
    assert pending_run_requests(client) == []


def test_a_paused_job_runs_when_asked_to(client, stub_broker, schedule):
    pause_job(client, MINUTELY)
    request_run(client, MINUTELY, requested_by="cli:ada")

    sent = scheduler_at(client, schedule, Clock(START)).wake()

    assert [(s.job, s.request_id is not None) for s in sent] == [
        (OTHER, False),
        (MINUTELY, True),
    ]


def test_a_request_for_a_job_this_schedule_lacks_is_dropped_saying_so(
    client, stub_broker, schedule, caplog
):
    request_id = request_run(client, "not_scheduled_here", requested_by="cli:ada")

    assert scheduler_at(client, schedule, Clock(START)).poll() == []
    assert (
        f"Run-now request {request_id} names not_scheduled_here, not a job of this schedule: "
        "dropped"
    ) in caplog.text


# The CLI


@pytest.fixture
def redis_down(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``REDIS_URL`` at a loopback port nothing listens on."""
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()


@pytest.fixture
def audit_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A SQLite database with the audit trail behind fintask's default engine."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'audit.db'}")
    reset_default_engine()
    for metadata in target_metadata:
        metadata.create_all(default_engine())
    yield default_engine()
    reset_default_engine()


def fintask(*args: str) -> Result:
    return CliRunner().invoke(main, ["schedule", *args])


def audited() -> list[tuple[str, str, str, object]]:
    with transaction() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.who, e.action, e.target, e.detail) for e in events]


def test_pause_resume_and_run_change_redis_and_are_audited(client, redis_env, audit_db):
    paused = fintask("pause", "send_daily_digests")
    again = fintask("pause", "send_daily_digests")
    assert paused_jobs(client) == {"send_daily_digests"}
    resumed = fintask("resume", "send_daily_digests")
    run = fintask("run", "start_weekly_report")

    assert [r.exit_code for r in (paused, again, resumed, run)] == [0, 0, 0, 0], run.output
    assert paused.output == "send_daily_digests: paused\n"
    assert again.output == "send_daily_digests: was paused already\n"
    assert resumed.output == "send_daily_digests: resumed from its next tick\n"
    assert paused_jobs(client) == frozenset()
    (request,) = pending_run_requests(client)
    assert (request.job, request.requested_by) == ("start_weekly_report", cli_identity())
    assert f"run-now request {request.request_id}" in run.output
    who = cli_identity()
    assert audited() == [
        (who, "schedule.pause", "send_daily_digests", {"changed": True}),
        (who, "schedule.pause", "send_daily_digests", {"changed": False}),
        (who, "schedule.resume", "send_daily_digests", {"changed": True}),
        (who, "schedule.run", "start_weekly_report", {"request_id": request.request_id}),
    ]


@pytest.mark.parametrize("action", ["pause", "resume", "run"])
def test_an_unknown_job_is_a_usage_error_naming_the_known_ones(action, redis_env, audit_db):
    result = fintask(action, "send_daily_digest")

    assert result.exit_code == 2
    assert "'send_daily_digest' is not a job of the schedule (" in result.stderr
    for job in SCHEDULE:
        assert job.name in result.stderr
    assert audited() == []


def test_an_action_with_redis_down_is_one_line(redis_down, audit_db):
    result = fintask("pause", "send_daily_digests")

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Redis did not answer (")
    assert len(result.stderr.splitlines()) == 1
    assert audited() == []


def test_the_schedule_shows_pauses_and_waiting_requests(client, redis_env):
    pause_job(client, "relay_outbox")
    request_id = request_run(client, "purge_raw_blobs", requested_by="cli:ada")

    listing = json.loads(fintask("--json").stdout)
    table = fintask().stdout

    rows = {row["name"]: row for row in listing["items"]}
    assert listing["next_cursor"] is None
    assert rows["relay_outbox"]["paused"] is True
    assert rows["purge_raw_blobs"]["paused"] is False
    (waiting,) = rows["purge_raw_blobs"]["run_requests"]
    assert waiting["request_id"] == request_id
    assert waiting["requested_at"].endswith("Z")
    assert f"run-now request {request_id} of purge_raw_blobs: asked by cli:ada" in table


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_with_redis_down_the_schedule_still_shows_every_spec(as_json, redis_down):
    result = fintask(*(["--json"] if as_json else []))

    assert result.exit_code == 0
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "last sent ticks, pauses and run-now requests unknown: Redis did not answer ("
    )
    for job in SCHEDULE:
        assert job.spec in result.stdout
        assert job.name in result.stdout
    if as_json:
        items = json.loads(result.stdout)["items"]
        assert {(item["paused"], item["run_requests"]) for item in items} == {(None, None)}
