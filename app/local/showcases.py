"""The demo's showcases: each drives one workload through the running processes and waits
for its effects, then adds what it saw to the summary. Run in order by ``fintask demo``."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import ColumnElement, func, select

from actors import maintenance as maintenance_actors
from actors import reports as report_actors
from app import health
from app.control import tokens
from app.db.models import (
    FraudCheck,
    FraudVerdict,
    Job,
    MonthlySpending,
    Notification,
    NotificationStatus,
    ProviderAccount,
    RawBlob,
    Transaction,
    User,
    utcnow,
)
from app.db.session import default_engine, transaction
from app.local.seed import seed as seed_database
from app.local.sinks import read_records
from app.local.stack import LocalStack
from app.queues import queue_depths
from app.redis_client import get_redis
from chunking import ChunkRun, run_progress
from pipelines.accounts import link_account
from pipelines.notifications import Channel, notify
from pipelines.reports import report_week
from scheduler.render import schedule_data

Log = Callable[[str], None]


@dataclass
class DemoSummary:
    """What each showcase did, section by section, for people (``render``) and machines."""

    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, section: str, **values: Any) -> None:
        self.sections.setdefault(section, {}).update(values)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return self.sections

    def render(self) -> str:
        lines = ["", "fintask demo summary", "===================="]
        for section, values in self.sections.items():
            lines.append(f"\n{section}")
            width = max(len(key) for key in values)
            lines += [f"  {key.ljust(width)}  {value}" for key, value in values.items()]
        return "\n".join(lines)


@dataclass
class DemoContext:
    """What a showcase step needs: the running stack and where the sinks write."""

    stack: LocalStack
    users: int
    log: Log
    summary: DemoSummary

    @property
    def sinks_dir(self) -> Path:
        return self.stack.var_dir / "sinks"


WAIT_S = 90.0
REFRESHED_ACCOUNTS = 12


def wait_for(condition: Callable[[], bool], *, what: str, timeout_s: float = WAIT_S) -> float:
    """Poll until ``condition`` holds; return the seconds it took, or raise naming ``what``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"the demo waited {timeout_s:.0f} s for {what}")
        time.sleep(0.1)
    return round(time.monotonic() - started, 2)


def _count(model: type, *where: ColumnElement[bool]) -> int:
    with transaction() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int(session.scalar(query) or 0)


def seed_users(context: DemoContext) -> None:
    """seed users and their linked accounts in bulk"""

    started = time.monotonic()
    result = seed_database(default_engine(), users=context.users)
    context.summary.add(
        "data",
        users=result.users_total,
        accounts=result.accounts_created,
        seeded_in_s=round(time.monotonic() - started, 2),
    )


def ping(context: DemoContext) -> None:
    """ping the workers through the queue"""

    token = health.new_ping_token()
    started = time.monotonic()
    maintenance_actors.ping.send(token)
    answered_by = health.wait_for_pong(get_redis(), token, timeout_s=WAIT_S)
    context.summary.add(
        "ping",
        answered_by=answered_by,
        round_trip_ms=round((time.monotonic() - started) * 1000, 1),
    )


def notifications(context: DemoContext) -> None:
    """notifications: email, push and urgent, each requested twice, each sent once"""

    today = dt.date.today().isoformat()
    with transaction() as session:
        users = session.scalars(
            select(User).where(User.is_active.is_(True)).order_by(User.id).limit(30)
        ).all()
    requests = [
        (user, Channel.PUSH if user.push_token and n % 2 else Channel.EMAIL, n < 3)
        for n, user in enumerate(users)
    ]
    for _ in range(2):  # the second round repeats every request: each must be sent once
        with transaction() as session:
            for user, channel, urgent in requests:
                notify(
                    session,
                    user_id=user.id,
                    kind="weekly_summary",
                    channel=channel,
                    dedup_key=f"weekly-summary:{today}:{user.id}:{channel.value}",
                    subject="Your week in money",
                    body=f"Hi {user.name}, here is your week.",
                    urgent=urgent,
                )
    emails = sum(1 for _, channel, _ in requests if channel is Channel.EMAIL)
    pushes = len(requests) - emails
    mail_path = context.sinks_dir / "mail.jsonl"
    http_path = context.sinks_dir / "http.jsonl"
    took = wait_for(
        lambda: (
            _count(
                Notification,
                Notification.kind == "weekly_summary",
                Notification.status == NotificationStatus.SENT,
            )
            == len(requests)
        ),
        what=f"{len(requests)} notifications to be sent",
    )
    context.summary.add(
        "notifications",
        requested=len(requests) * 2,
        created=_count(Notification, Notification.kind == "weekly_summary"),
        emails_received=len(read_records(mail_path)),
        pushes_received=len(read_records(http_path)),
        expected=f"{emails} emails, {pushes} pushes",
        all_sent_in_s=took,
    )


def fraud(context: DemoContext) -> None:
    """fraud check: one user links four accounts within minutes"""

    before = _count(FraudCheck)
    with transaction() as session:
        user_id = session.scalar(select(User.id).order_by(User.id.desc()).limit(1))
        assert user_id is not None
        for n in range(4):
            with session.begin_nested():
                link_account(
                    session,
                    user_id=user_id,
                    provider="sandbox",
                    external_id=f"stolen-{user_id}-{n}",
                )
    took = wait_for(lambda: _count(FraudCheck) == before + 4, what="four fraud checks")
    wait_for(
        lambda: (
            _count(Notification, Notification.kind == "fraud_alert", Notification.status == "sent")
            == 1
        ),
        what="the urgent fraud alert to be sent",
    )
    context.summary.add(
        "fraud",
        checks=_count(FraudCheck),
        suspicious=_count(FraudCheck, FraudCheck.verdict == FraudVerdict.SUSPICIOUS),
        accounts_blocked=_count(ProviderAccount, ProviderAccount.status == "blocked"),
        alerts_sent=1,
        checked_in_s=took,
    )


def refresh(context: DemoContext) -> None:
    """async API + ETL: refresh accounts over HTTP against a faulty sandbox provider"""

    with transaction() as session:
        account_ids = list(
            session.scalars(
                select(ProviderAccount.id)
                .where(
                    ProviderAccount.status == "active", ProviderAccount.external_id.like("acc-%-0")
                )
                .order_by(ProviderAccount.id)
                .limit(REFRESHED_ACCOUNTS)
            )
        )
    with httpx.Client(base_url=context.stack.web_url, timeout=10) as web:
        locations = [
            web.post(f"/api/accounts/{a}/refresh").headers["Location"] for a in account_ids
        ]
        repeated = web.post(f"/api/accounts/{account_ids[0]}/refresh")

        def statuses() -> list[str]:
            return [web.get(location).json()["status"] for location in locations]

        took = wait_for(
            lambda: all(status in ("done", "failed") for status in statuses()),
            what=f"{len(locations)} refresh jobs to finish",
        )
        final = statuses()
    same_job = repeated.headers["Location"] in locations
    sandbox = httpx.get(f"{context.stack.env['PROVIDER_URL']}/_sandbox/stats", timeout=10).json()
    context.summary.add(
        "refresh (async API + ETL)",
        jobs_done=final.count("done"),
        jobs_failed=final.count("failed"),
        repeated_post=f"{repeated.status_code}, same job: {same_job}",
        transactions_stored=_count(Transaction),
        insight_rows=_count(MonthlySpending),
        provider_requests=sandbox["total_requests"],
        provider_429s=sandbox["by_status"].get("429", 0),
        provider_5xx=sum(n for code, n in sandbox["by_status"].items() if code.startswith("5")),
        finished_in_s=took,
    )


def weekly_report(context: DemoContext) -> None:
    """weekly report: a chunked, paced run over every active user"""

    week = report_week(None)
    active = _count(User, User.is_active.is_(True))
    with transaction() as session:
        run_id = report_actors.start_report(session, week)
    peak_queue = 0

    def finished() -> bool:
        nonlocal peak_queue
        (emails,) = queue_depths(get_redis(), ["emails"])
        peak_queue = max(peak_queue, emails.ready + emails.delayed)
        with transaction() as session:
            status = session.scalar(select(ChunkRun.status).where(ChunkRun.id == run_id))
        return (
            status == "done"
            and _count(
                Notification, Notification.kind == "weekly_report", Notification.status == "sent"
            )
            == active
        )

    took = wait_for(finished, what=f"the weekly report to reach {active} users")
    with transaction() as session:
        progress = run_progress(session, run_id)
    assert progress is not None
    context.summary.add(
        "weekly report",
        run=run_id,
        week=week,
        status=progress.status,
        users_processed=progress.processed,
        emails_sent=_count(Notification, Notification.kind == "weekly_report"),
        peak_email_queue=peak_queue,
        finished_in_s=took,
    )


def maintenance(context: DemoContext) -> None:
    """maintenance: purge an expired raw blob, fail a stuck job, count dead letters"""

    blob_digest, job_id = uuid.uuid4().hex, str(uuid.uuid4())
    with transaction() as session:
        account_id = session.scalar(select(ProviderAccount.id).limit(1))
        assert account_id is not None
        session.add(
            RawBlob(
                account_id=account_id,
                kind="transactions",
                sha256=blob_digest,
                body=b"{}",
                fetched_at=utcnow() - dt.timedelta(days=45),
            )
        )
        session.add(
            Job(
                id=job_id,
                kind="refresh",
                account_id=account_id,
                status="polling",
                deadline_at=utcnow() - dt.timedelta(minutes=1),
            )
        )
    maintenance_actors.purge_raw_blobs.send()
    maintenance_actors.fail_stuck_jobs.send()
    maintenance_actors.report_dead_letters.send()
    wait_for(
        lambda: _count(RawBlob, RawBlob.sha256 == blob_digest) == 0,
        what="the expired raw blob to be purged",
    )
    wait_for(
        lambda: _count(Job, Job.id == job_id, Job.status == "failed") == 1,
        what="the stuck job to fail",
    )
    context.summary.add("maintenance", raw_blobs_purged=1, stuck_jobs_failed=1)


def metrics(context: DemoContext) -> None:
    """metrics: scrape the web process and a worker's Prometheus endpoint"""
    env = context.stack.env
    web = httpx.get(f"{context.stack.web_url}/metrics", timeout=10).text
    worker = httpx.get(f"http://127.0.0.1:{env['METRICS_PORT_WORKER']}/", timeout=10).text
    processed = sum(
        float(line.rsplit(" ", 1)[1])
        for line in worker.splitlines()
        if line.startswith("dramatiq_messages_total{")
    )
    context.summary.add(
        "metrics",
        queue_depth_series=sum(1 for line in web.splitlines() if line.startswith("fintask_queue")),
        worker_messages_processed=int(processed),
    )


def schedule(context: DemoContext) -> None:
    """the periodic schedule (what `fintask schedule` prints): spec and next run of each job"""

    for job in schedule_data(dt.datetime.now(dt.UTC)):
        next_run = job.next_run.strftime("%Y-%m-%d %H:%M") if job.next_run else "never"
        catch_up = ", catches up" if job.catch_up else ""
        context.summary.add(
            "schedule (UTC)", **{job.name: f"{job.spec:<12} next {next_run}{catch_up}"}
        )


#: The token the demo makes for the console (the demo's database is its own, made afresh).
CONSOLE_TOKEN_NAME = "demo-operator"


def console(context: DemoContext) -> None:
    """the console: where it answers, and an operator's token to sign in with"""

    with transaction() as session:
        token, _ = tokens.create_token(session, name=CONSOLE_TOKEN_NAME, role="operator")
    context.summary.add("console", url=f"{context.stack.web_url}/console", operator_token=token)


#: The workloads' showcases, in order (``app.local.demo`` runs them, then the migration from
#: Celery, then ``console``, whose URL and token end the summary).
WORKLOAD_STEPS: list[Callable[[DemoContext], None]] = [
    seed_users,
    ping,
    notifications,
    fraud,
    refresh,
    weekly_report,
    maintenance,
    schedule,
    metrics,
]
