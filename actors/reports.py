"""The weekly report fan-out: a chunked run over active users (see pipelines/reports.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.db.models import User
from app.db.session import new_session, transaction
from app.house_rules import fintask_actor
from app.outbox import outbox_sender
from app.queues import pending_messages
from chunking import Callback, ChunkedRun, FanIn, KeysetEnumerator, start_run
from pipelines import reports
from pipelines.batches import BATCHES

_users = KeysetEnumerator(column=User.id, where=reports.active_users)

weekly_report = ChunkedRun(
    name="weekly_report_chunk",
    queue_name="fanout",
    enumerate=_users,
    estimate=_users.estimate,
    process=reports.send_chunk,
    session_factory=new_session,
    declare=fintask_actor,
    send_after_commit=outbox_sender,
    fan_in=FanIn(BATCHES, on_complete=Callback("weekly_report_done", "fanout")),
    chunk_size=reports.CHUNK_SIZE,
    pause_ms=100,
    target_queue="emails",
    queue_depth=pending_messages,
    high_water=reports.EMAIL_HIGH_WATER,
    time_limit=120_000,
    actor_options={"soft_time_limit_ms": reports.CHUNK_SOFT_TIME_LIMIT_MS},
    max_age=3 * 86_400_000,
    max_retries=5,
    min_backoff=5_000,
    max_backoff=300_000,
)


@fintask_actor(
    queue_name="fanout",
    time_limit=30_000,
    max_age=6 * 3_600_000,
    max_retries=3,
    min_backoff=10_000,
    max_backoff=120_000,
)
def start_weekly_report(week: str | None = None, tick: str | None = None, **kwargs: Any) -> None:
    """Start the report run of ``week`` (the week before the scheduler's ``tick``), once."""
    week = week or reports.report_week(tick)
    with transaction() as session:
        start_report(session, week)


def start_report(session: Session, week: str) -> int:
    """Start the report run of ``week`` on commit, once per week; return its id."""
    return start_run(session, weekly_report, params={"week": week}, key=reports.run_key(week))


# One grouped count and one row update; a second delivery finds the tally kept and does nothing.
@fintask_actor(
    queue_name="fanout",
    time_limit=60_000,
    max_age=3 * 86_400_000,
    max_retries=5,
    min_backoff=5_000,
    max_backoff=300_000,
)
def weekly_report_done(run_id: int, **kwargs: Any) -> None:
    """The report's batch is complete: keep its tally on the run and post it, once."""
    reports.record_tally(run_id)


# One HTTP POST (10 s timeout), under its run's idempotency key.
@fintask_actor(
    queue_name="notifications",
    time_limit=30_000,
    max_age=86_400_000,
    max_retries=8,
    min_backoff=5_000,
    max_backoff=300_000,
)
def post_report_tally(run_id: int, **kwargs: Any) -> None:
    """POST a finished report's tally to the ops webhook."""
    reports.post_tally(run_id)
