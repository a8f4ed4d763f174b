"""The weekly report: one email per active user, through a chunked run, never twice."""

from __future__ import annotations

import dramatiq
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from actors.reports import start_weekly_report, weekly_report
from app.cli.main import main
from app.control import audit
from app.db.models import Notification, User
from app.db.session import default_engine, new_session, transaction
from app.local.seed import seed
from app.web import create_app
from chunking import ChunkRun, RunStatus
from pipelines import reports
from tests.support.stub_workers import run_until_idle

# The runs fan in through a batch kept in Redis (chunking.batches).
pytestmark = pytest.mark.usefixtures("redis_env")

WEEK = "2026-W47"


@pytest.fixture
def users(database) -> int:
    """1,200 seeded users: every tenth is inactive, so 1,080 get the report."""
    seed(default_engine(), users=1_200)
    return 1_080


def _run_all(broker, *queues: str) -> None:
    """Run the fan-out's queues only: the emails it queues are counted, not sent."""
    worker = dramatiq.Worker(broker, queues=set(queues), worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        for _ in range(3):  # chunks send notifications, notifications are drained
            for queue in queues:
                broker.join(queue, fail_fast=True)
        worker.join()
    finally:
        worker.stop()


def _reports_by_user() -> dict[int, int]:
    with transaction() as session:
        rows = session.execute(
            select(Notification.user_id, func.count())
            .where(Notification.kind == "weekly_report")
            .group_by(Notification.user_id)
        )
        return dict(rows.all())


def test_every_active_user_gets_one_report_and_inactive_ones_none(users, stub_broker):
    start_weekly_report.send(week=WEEK)

    _run_all(stub_broker, "fanout")

    per_user = _reports_by_user()
    assert len(per_user) == users
    assert set(per_user.values()) == {1}
    with transaction() as session:
        inactive = set(session.scalars(select(User.id).where(User.is_active.is_(False))))
    assert inactive.isdisjoint(per_user)
    assert stub_broker.queues["emails"].qsize() == users


def test_a_chunk_past_its_soft_time_limit_sends_nothing_and_fails_the_run(
    database, stub_broker, monkeypatch
):
    # Given active users, and chunks whose soft time limit (1 ms) passes mid-chunk (and whose
    # retries follow each other at once),
    seed(default_engine(), users=100)
    for option, value in {"soft_time_limit_ms": 1, "min_backoff": 1, "max_backoff": 1}.items():
        monkeypatch.setitem(weekly_report.actor.options, option, value)

    # when the report's first chunk runs, and is retried until its retries run out,
    start_weekly_report.send(week=WEEK)
    run_until_idle(stub_broker, "fanout")

    # then each attempt stopped at a check between two users and its transaction rolled back
    # (no notification, no e-mail, the cursor where it was), and the run failed saying why.
    run = _the_run()
    assert run.error is not None
    assert run.error.startswith("SoftTimeLimitExceeded: soft time limit passed")
    assert (run.status, run.seq, run.cursor, run.processed) == (RunStatus.FAILED, 0, None, 0)
    assert run.failures == weekly_report.max_retries + 1
    assert _reports_by_user() == {}
    assert stub_broker.queues["emails"].qsize() == 0


def _the_run() -> ChunkRun:
    with transaction() as session:
        return session.scalars(select(ChunkRun)).one()


def test_a_duplicated_chunk_message_does_not_double_any_report(users, stub_broker):
    # Given the first chunk message of a run, delivered twice,
    start_weekly_report.send(week=WEEK)
    _run_start_only(stub_broker)
    (chunk,) = list(stub_broker.queues["fanout"].queue)
    stub_broker.queues["fanout"].put(chunk)

    # when everything has run,
    _run_all(stub_broker, "fanout")

    # then the run did not fork: each user has one report, and one email is queued for each.
    assert set(_reports_by_user().values()) == {1}
    assert stub_broker.queues["emails"].qsize() == users


def test_starting_the_same_week_twice_makes_one_run(users, stub_broker):
    start_weekly_report.send(week=WEEK)
    start_weekly_report.send(week=WEEK)

    _run_all(stub_broker, "fanout")

    with transaction() as session:
        assert session.scalar(select(func.count()).select_from(ChunkRun)) == 1
    assert set(_reports_by_user().values()) == {1}


def test_a_report_week_runs_monday_to_monday_and_round_trips(database):
    start, end = reports.week_bounds(WEEK)

    assert (start.isoformat(), end.isoformat()) == ("2026-11-16", "2026-11-23")
    assert reports.iso_week(start) == WEEK


def test_progress_is_served_as_json_and_a_missing_run_is_a_404(users, stub_broker):
    start_weekly_report.send(week=WEEK)
    _run_all(stub_broker, "fanout")
    with transaction() as session:
        run_id = session.scalar(select(ChunkRun.id))
    client = TestClient(create_app())

    progress = client.get(f"/api/runs/{run_id}")
    missing = client.get("/api/runs/999999")

    assert progress.status_code == 200
    body = progress.json()
    assert (body["name"], body["status"], body["processed"]) == (weekly_report.name, "done", users)
    assert body["estimated_total"] == users
    assert body["percent"] == 100.0
    assert missing.status_code == 404
    assert missing.json()["detail"] == "run 999999 does not exist"


def test_the_cli_starts_lists_and_steers_runs(users, stub_broker, redis_env):
    # (Pausing, resuming and cancelling are control actions: audited, through Redis.)
    runner = CliRunner()

    started = runner.invoke(main, ["reports", "send", "--week", WEEK])
    paused = runner.invoke(main, ["runs", "pause", "1"])
    listed = runner.invoke(main, ["runs"])
    resumed = runner.invoke(main, ["runs", "resume", "1"])
    cancelled = runner.invoke(main, ["runs", "cancel", "1"])
    again = runner.invoke(main, ["runs", "cancel", "1"])

    assert started.output == f"run 1: weekly report for {WEEK}\n"
    assert paused.output == "run 1 paused\n"
    assert "weekly_report_chunk" in listed.output and "paused" in listed.output
    assert resumed.output == "run 1 resumed\n"
    assert cancelled.output == "run 1 cancelled\n"
    assert again.exit_code == 1
    assert "run 1 was not cancelled: it is cancelled" in again.output
    with new_session() as session:
        events, _ = audit.list_events(session, cursor=None)
    assert [(e.action, e.target) for e in reversed(events)] == [
        ("run.pause", "1"),
        ("run.resume", "1"),
        ("run.cancel", "1"),
        ("run.cancel", "1"),  # refused, and audited as not changed
    ]


def test_a_malformed_week_is_refused(database, stub_broker):
    result = CliRunner().invoke(main, ["reports", "send", "--week", "last week"])

    assert result.exit_code == 2
    assert "'last week' is not an ISO week such as 2026-W48" in result.output


def _run_start_only(broker) -> None:
    """Run only the start message, leaving the first chunk message queued."""
    queue = broker.queues["fanout"]
    message = dramatiq.Message.decode(queue.get_nowait())
    queue.task_done()
    assert queue.empty()
    start_weekly_report.fn(**message.kwargs)
