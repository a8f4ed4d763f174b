"""fintask's workloads on RabbitMQ (``BROKER_URL=amqp://...``), with Redis for the rest.

- **The weekly report**, through the Procfile's workers: the chunked fan-out holds back while
  the e-mail queue is full (its depth read from RabbitMQ by ``app.queues.pending_messages``),
  then every active user gets one e-mail, and the report's batch records the tally and posts it
  to the ops webhook once.
- **The refresh flow** over real HTTP (``tests.support.refresh_stack``): the API starts
  refreshes, the worker polls a flaky provider through RabbitMQ's delayed messages, and every
  transaction is stored once.

The report is a run of 6,600 users (5,940 active, 12 chunks of 500) against the report's production
high-water mark of 5,000 e-mails: with no worker on ``emails`` yet, the eleventh chunk still
fits under the mark and the twelfth must wait. PostgreSQL holds the data (two worker stacks of
two processes each write at once); Redis keeps the batch, the rate limits and the control plane.
"""

from __future__ import annotations

import collections
import json
import subprocess
import uuid
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from app.db.migrate import upgrade
from app.db.models import User
from app.local.ports import free_port
from app.local.rabbitmq_server import RabbitmqServer
from app.local.seed import seed
from app.local.sinks import HttpSink, SmtpSink, read_records
from app.rabbitmq import FintaskRabbitmqBroker
from app.senders import idempotency_key
from chunking import ChunkRun
from pipelines import reports
from tests.support.postgres import PostgresServer
from tests.support.processes import VENV_BIN, dramatiq_worker, running, wait_until
from tests.support.procfile import procfile_env, procfile_worker
from tests.support.rabbitmq_workers import fintask_json
from tests.support.refresh_stack import (
    FLAKY_PROVIDER,
    accounts_with_insights,
    sandbox_transactions_by_account,
    start_refresh_stack,
    stored_transactions_by_account,
    wait_finished,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

USERS = 6_600
WEEK = "2026-W47"
#: Every queue the Procfile's ``worker`` serves but the e-mails: the run, its callback and the
#: webhook post go on; the e-mails wait in RabbitMQ.
NOT_EMAILS = ("fanout", "notifications", "maintenance")
ACCOUNTS = 8


def test_the_weekly_report_on_rabbitmq_holds_at_the_high_water_mark_then_mails_everyone_once(
    rabbitmq_server: RabbitmqServer,
    postgres_server: PostgresServer,
    redis_url: str,
    tmp_path: Path,
) -> None:
    database_url = postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    upgrade(database_url)
    engine = create_engine(database_url)
    seed(engine, users=USERS)
    with engine.connect() as connection:
        active = set(connection.scalars(select(User.email).where(User.is_active.is_(True))))
    mailbox, posts = tmp_path / "mail.jsonl", tmp_path / "webhook.jsonl"
    smtp = SmtpSink(path=mailbox, port=free_port()).start()
    webhook = HttpSink(path=posts, port=free_port()).start()
    urls = {
        "REDIS_URL": redis_url,
        "BROKER_URL": rabbitmq_server.url(),
        "DATABASE_URL": database_url,
        "SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
        "OPS_WEBHOOK_URL": f"http://127.0.0.1:{webhook.port}/ops",
    }
    broker = FintaskRabbitmqBroker(url=rabbitmq_server.url(), middleware=[])
    chunk, high_water = reports.CHUNK_SIZE, reports.EMAIL_HIGH_WATER
    assert len(active) > high_water + chunk, "the run must outgrow the mark by a chunk"

    def run() -> ChunkRun:
        with Session(engine) as session:
            found = session.scalars(select(ChunkRun)).first()
        assert found is not None, "the run was started"
        return found

    def queued_emails() -> int:
        ready, _, _ = broker.message_counts("emails")
        return ready

    try:
        # Given the Procfile's worker on every queue but the e-mails, on RabbitMQ,
        log_a = tmp_path / "worker-a.log"
        worker_a = [*procfile_worker(), "--queues", *NOT_EMAILS]
        with running(worker_a, procfile_env(var_dir=tmp_path / "a", **urls), log_a):
            # when the week's report is sent,
            subprocess.run(
                [str(VENV_BIN / "fintask"), "reports", "send", "--week", WEEK],
                env=procfile_env(var_dir=tmp_path / "cli", **urls),
                check=True,
                capture_output=True,
            )
            # then the run enqueues chunks while the e-mails fit under the mark, and holds the
            # next chunk back, saying so, once they do not;
            wait_until(
                lambda: "target queue full" in log_a.read_text(errors="replace"),
                timeout_s=400,
                what="the run to hold a chunk back",
            )
            held = run()
            depth = queued_emails()
            # and the run holds: it is still there, at the same count, when its worker stops.
        assert held.status == "running"
        assert held.processed == depth == high_water + chunk, (held.processed, depth)
        assert run().processed == held.processed

        # When the Procfile's worker, on every queue, takes over,
        worker_b = procfile_worker()
        env_b = procfile_env(var_dir=tmp_path / "b", **urls)
        with running(worker_b, env_b, tmp_path / "worker-b.log"):
            # the run finishes, every active user gets an e-mail, and the tally is posted.
            wait_until(lambda: run().status == "done", timeout_s=600, what="the run to finish")
            wait_until(lambda: read_records(posts), timeout_s=600, what="the tally's post")
            received = collections.Counter(mail["to"][0] for mail in read_records(mailbox))
    finally:
        smtp.stop()
        webhook.stop()
        broker.close()

    # Then every active user got one e-mail and nobody else any,
    assert set(received) == active
    assert set(received.values()) == {1}
    # the run and its batch counted them all, and the tally reached the ops webhook once.
    finished = run()
    assert finished.processed == finished.members == len(active)
    expected = {"week": WEEK, "sent": len(active), "expired": 0, "failed": 0}
    assert finished.summary == expected
    (post,) = read_records(posts)
    assert json.loads(post["json"]["body"]) == expected
    assert post["json"]["subject"] == f"Weekly report {WEEK}: final tally"
    assert post["idempotency_key"] == idempotency_key(f"weekly-report-tally:{finished.id}")
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(ChunkRun)) == 1
    engine.dispose()


def test_refreshes_on_rabbitmq_finish_with_every_transaction_stored_once(
    rabbitmq_server: RabbitmqServer, redis_url: str, tmp_path: Path
) -> None:
    with ExitStack() as processes:
        # Given the web process and a flaky provider, the messages on RabbitMQ,
        stack = start_refresh_stack(
            processes,
            redis_url=redis_url,
            tmp_path=tmp_path,
            accounts=ACCOUNTS,
            faults=FLAKY_PROVIDER,
            broker_url=rabbitmq_server.url(),
        )
        names = [q["queue_name"] for q in fintask_json("queues", **stack.env)["items"]]
        broker = FintaskRabbitmqBroker(url=rabbitmq_server.url(), middleware=[])
        dead_before = dead(counts(broker, names))  # the session's node: others' dead letters
        # when refreshes are requested before a worker takes them,
        first = [stack.refresh(account_id) for account_id in stack.accounts]
        assert [r.status_code for r in first] == [202] * ACCOUNTS, stack.logs()
        # and two worker processes poll them (each poll a delayed message),
        worker = dramatiq_worker(processes=2, threads=8)
        with running(worker, stack.env, tmp_path / "worker.log"):
            jobs = wait_finished(stack, [r.headers["Location"] for r in first], timeout_s=240)
            wait_until(
                lambda: accounts_with_insights(stack) == ACCOUNTS,
                timeout_s=120,
                what="every account's insights",
            )
            wait_until(
                lambda: not pending(counts(broker, names)), timeout_s=120, what="empty queues"
            )
        # (once the worker is gone, RabbitMQ would hold again whatever it had still fetched)
        after = counts(broker, names)
        broker.close()
        stats = stack.sandbox_stats()

    # then every job is done, every account holds exactly the provider's transactions,
    outcomes = [(job["status"], job["progress"], job["error"]) for job in jobs]
    assert outcomes == [("done", 100, None)] * ACCOUNTS
    assert stored_transactions_by_account(stack) == sandbox_transactions_by_account(stack)
    # though the provider refused some requests with 429 on the way,
    assert stats["by_status"].get("429", 0) > 0, stats
    # and no poll, no download and no insight is left in RabbitMQ, nor a new dead letter.
    assert pending(after) == {}
    assert dead(after) == dead_before


Counts = dict[str, tuple[int, int, int]]


def counts(broker: FintaskRabbitmqBroker, queue_names: list[str]) -> Counts:
    """Each queue's messages that no consumer holds: ready, delayed, dead."""
    return {name: broker.message_counts(name) for name in queue_names}


def pending(counts: Counts) -> dict[str, tuple[int, int]]:
    """The queues with messages ready or delayed, and how many."""
    return {name: (r, d) for name, (r, d, _) in counts.items() if r or d}


def dead(counts: Counts) -> dict[str, int]:
    """Each queue's dead letters."""
    return {name: held[2] for name, held in counts.items()}
