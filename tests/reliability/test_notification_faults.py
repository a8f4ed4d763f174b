"""Faults under thousands of notifications in flight, through the real processes: a worker killed
with SIGKILL, and Redis restarted (SIGTERM or SIGKILL) on the same port while workers run.

The notifications are the weekly report (``fintask reports send``): one email per user, created
by a chunked fan-out and delivered by two workers started as the Procfile starts its ``worker``
type (``tests.support.notification_faults``), into an SMTP sink that writes down every mail.
Nothing may be lost. A mail may repeat only where the README allows it: a worker that dies after
the relay accepted a mail and before it is marked sent leaves it to be sent again, with the same
Message-ID; at most one per thread of the dead worker (each has one send open at a time).

A Redis restart meets a fan-out chunk as often as not: the chunk fails reading Redis, and its
retry, which cannot be enqueued while Redis is away, is tried again until Redis answers
(``DurableRetries``); a dead letter here (``DeadLettered``) would be a run stalled until an
operator's ``fintask dlq requeue``, and fails the test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine

from app.db.migrate import upgrade
from app.local.sinks import SmtpSink
from app.settings import load_settings
from tests.support.fixed_port_redis import FixedPortRedis
from tests.support.notification_faults import (
    RELAY_SCHEDULER,
    Deliveries,
    ack_sets,
    all_sent,
    answering,
    assert_no_dead_letters,
    at_least,
    broker_ids_of,
    consumer_pids,
    create_users,
    dead_letters,
    deliveries,
    every_user_mailed,
    heartbeats_since,
    held_by,
    held_notifications,
    procfile_option,
    procfile_worker,
    send_weekly_report,
    sent_count,
    settled,
    status_counts,
    threads_per_worker,
    users_of,
    worker_env,
)
from tests.support.postgres import PostgresServer
from tests.support.processes import fintask_env, running, wait_until

pytestmark = pytest.mark.reliability

#: Processes per worker in the Procfile: two workers register twice as many consumers.
PROCESSES = procfile_option("--processes")


@pytest.fixture
def database(postgres_server: PostgresServer) -> Iterator[tuple[str, Engine]]:
    """A migrated PostgreSQL database of the test's own, on the session's cluster.

    PostgreSQL, as in production: on SQLite, 32 worker threads and the fan-out's chunks queue
    for its one write lock, and under load a delivery can wait out its 30 s time limit
    between the relay's accept and the commit that marks it sent (a repeat no crash caused).
    """
    url = postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    upgrade(url)
    engine = create_engine(url)
    yield url, engine
    engine.dispose()


def start_fleet(
    stack: ExitStack, *, redis_url: str, database_url: str, sink: SmtpSink, tmp_path: Path
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """The relay scheduler and two workers; the workers' processes and logs."""
    scheduler_env = fintask_env(
        REDIS_URL=redis_url, DATABASE_URL=database_url, FINTASK_VAR_DIR=str(tmp_path / "sched")
    )
    stack.enter_context(running(RELAY_SCHEDULER, scheduler_env, tmp_path / "scheduler.log"))
    workers = []
    for name in ("worker-1", "worker-2"):
        env = worker_env(
            redis_url=redis_url,
            database_url=database_url,
            smtp_port=sink.port,
            var_dir=tmp_path / name,
        )
        log = tmp_path / f"{name}.log"
        workers.append((stack.enter_context(running(procfile_worker(), env, log)), log))
    return workers


RecordProperty = Callable[[str, object], None]


def report(
    figure: str,
    outcome: Deliveries,
    recovered_s: float,
    record_property: RecordProperty,
    *,
    dead: list[str] | None = None,
) -> None:
    """Print the test's figure in one line and record it; with dead letters, say it stalled."""
    record_property("lost", len(outcome.lost))
    record_property("doubled", outcome.doubled)
    record_property("time_to_recover_s", round(recovered_s, 1))
    ending = f"recovered in {recovered_s:.1f} s"
    if dead:
        ending = f"stalled on {len(dead)} dead letter(s) {recovered_s:.1f} s after"
    print(f"\n{figure}: lost {len(outcome.lost)}, doubled {outcome.doubled}, {ending}")


def assert_delivered_once_within_bound(outcome: Deliveries, engine: Engine, users: int) -> None:
    """Every user mailed; repeats within the bound and with the first send's Message-ID."""
    assert outcome.lost == []
    assert outcome.strangers == []
    assert outcome.doubled <= threads_per_worker(), outcome.repeated
    assert outcome.repeats_with_another_key() == {}
    assert status_counts(engine) == {"sent": users}


USERS_KILL = 10_000
#: The kill lands once this many are sent, while the worker to be killed holds messages.
KILL_AFTER = 2_500


@pytest.mark.timeout(1800)
def test_worker_sigkill_during_10000_notifications(
    redis_url: str,
    client: redis.Redis,
    database: tuple[str, Engine],
    smtp_sink: SmtpSink,
    tmp_path: Path,
    record_property: RecordProperty,
) -> None:
    started = time.monotonic()
    # The Procfile's recovery settings, not a test's.
    assert load_settings().heartbeat_timeout_ms == 60_000
    database_url, engine = database
    create_users(engine, USERS_KILL)
    cli_env = fintask_env(REDIS_URL=redis_url, DATABASE_URL=database_url)

    with ExitStack() as stack:
        # Given two workers and the relay
        (doomed, _), (healthy, healthy_log) = start_fleet(
            stack,
            redis_url=redis_url,
            database_url=database_url,
            sink=smtp_sink,
            tmp_path=tmp_path,
        )
        wait_until(
            lambda: len(consumer_pids(client)) == 2 * PROCESSES, timeout_s=180, what="workers"
        )
        doomed_ids = broker_ids_of(client, doomed.pid)
        assert len(doomed_ids) == PROCESSES

        # When the weekly report goes to 10,000 users, and one worker is killed with SIGKILL
        # part-way through, while it holds messages
        send_weekly_report(cli_env)
        sending_at = time.monotonic()
        wait_until(
            at_least(lambda: sent_count(engine), KILL_AFTER),
            timeout_s=900,
            what=f"{KILL_AFTER} notifications sent",
        )
        # (several, so that some are still unacked the instant the signal lands)
        wait_until(
            lambda: len(held_notifications(client, doomed_ids)) >= 4,
            timeout_s=300,
            what="notifications in flight on the worker to be killed",
        )
        os.killpg(doomed.pid, signal.SIGKILL)
        doomed.wait()
        killed_at = time.monotonic()
        sent_at_kill = sent_count(engine)
        rate = sent_at_kill / (killed_at - sending_at)
        # (what it had fetched stays in its ack sets until recovery, a minute later)
        held = held_by(client, doomed_ids)
        in_flight = held_notifications(client, doomed_ids)

        # Then the healthy worker sends the killed one's notifications,
        wait_until(
            lambda: all_sent(engine, in_flight),
            timeout_s=600,
            what="the killed worker's notifications to be sent",
        )
        recovered_s = time.monotonic() - killed_at
        # and every user gets the report
        wait_until(
            every_user_mailed(smtp_sink.path, USERS_KILL),
            timeout_s=1200,
            what="every user's mail",
        )
        all_mailed_s = time.monotonic() - killed_at
        wait_until(at_least(lambda: sent_count(engine), USERS_KILL), timeout_s=120, what="all sent")
        # and nothing stays fetched and unacked
        wait_until(lambda: not ack_sets(client), timeout_s=600, what="empty ack sets")
        assert healthy.poll() is None
    recovery_log = healthy_log.read_text()

    outcome = deliveries(smtp_sink.path, USERS_KILL)
    report(
        f"worker SIGKILL during {USERS_KILL:,} notifications", outcome, recovered_s, record_property
    )
    record_property("all_mailed_after_kill_s", round(all_mailed_s, 1))
    print(
        f"killed holding {held} messages ({len(in_flight)} notifications) with {sent_at_kill} "
        f"sent ({rate:.0f}/s); all mailed {all_mailed_s:.1f} s after the kill; "
        f"total {time.monotonic() - started:.0f} s"
    )
    assert sent_at_kill < USERS_KILL, "the kill landed part-way through"
    assert in_flight, "the killed worker held notifications"
    assert "unacked messages of dead workers" in recovery_log
    # Only notifications the killed worker was sending were sent twice
    assert outcome.repeated_users <= users_of(engine, in_flight)
    assert client.llen("dramatiq:emails") == 0
    assert_no_dead_letters(dead_letters(client))
    assert_delivered_once_within_bound(outcome, engine, USERS_KILL)


USERS_RESTART = 5_000
#: Redis stops once this many are sent, with messages fetched and not acked.
RESTART_AFTER = 1_000
CONNECTION_ERROR = "connection error"
#: Redis stays down at least this long, so that workers meet refused reconnects too.
MIN_OUTAGE_S = 5.0


def stop_redis(server: FixedPortRedis, signum: signal.Signals) -> None:
    """Stop our redis-server with ``signum`` (SIGTERM: it writes its append-only file first)."""
    process = server.process
    assert process is not None
    process.send_signal(signum)
    process.wait(timeout=60)
    server.process = server.port = None


@pytest.mark.timeout(1500)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_redis_restart_during_5000_notifications(
    signum: signal.Signals,
    database: tuple[str, Engine],
    smtp_sink: SmtpSink,
    tmp_path: Path,
    record_property: RecordProperty,
) -> None:
    started = time.monotonic()
    database_url, engine = database
    create_users(engine, USERS_RESTART)
    server = FixedPortRedis(data_dir=tmp_path / "redis").start()
    client = redis.Redis.from_url(server.fixed_url)
    cli_env = fintask_env(REDIS_URL=server.fixed_url, DATABASE_URL=database_url)
    try:
        with ExitStack() as stack:
            # Given two workers and the relay on a Redis that keeps an append-only file
            workers = start_fleet(
                stack,
                redis_url=server.fixed_url,
                database_url=database_url,
                sink=smtp_sink,
                tmp_path=tmp_path,
            )
            wait_until(
                lambda: len(consumer_pids(client)) == 2 * PROCESSES, timeout_s=180, what="workers"
            )

            # When the weekly report goes to 5,000 users and Redis stops part-way through,
            send_weekly_report(cli_env)
            wait_until(
                at_least(lambda: sent_count(engine), RESTART_AFTER),
                timeout_s=900,
                what=f"{RESTART_AFTER} notifications sent",
            )
            wait_until(lambda: ack_sets(client), timeout_s=300, what="messages in flight")
            live = set(consumer_pids(client))
            stop_redis(server, signum)
            stopped_at = time.monotonic()
            sent_at_stop = sent_count(engine)
            # until each worker has seen it gone,
            wait_until(
                lambda: all(CONNECTION_ERROR in log.read_text() for _, log in workers),
                timeout_s=120,
                what="both workers to lose their connection",
            )

            time.sleep(max(0.0, stopped_at + MIN_OUTAGE_S - time.monotonic()))

            # and comes back on the same port with its data
            server.start()
            back_at, back_at_ms = time.monotonic(), int(time.time() * 1000)
            outage_s = back_at - stopped_at

            # Then each worker process calls Redis again by itself,
            wait_until(
                answering(lambda: heartbeats_since(client, live, back_at_ms)),
                timeout_s=300,
                what="every worker process to fetch again",
            )
            reconnected_s = time.monotonic() - back_at

            # and every user gets the report (or the workload goes quiet with a dead letter:
            # then it waits for an operator, and the test says so below)
            wait_until(
                answering(
                    settled(
                        every_user_mailed(smtp_sink.path, USERS_RESTART),
                        client=client,
                        engine=engine,
                    )
                ),
                timeout_s=900,
                what="every user's mail",
            )
            recovered_s = time.monotonic() - back_at
            # and no message stays in a live worker's ack set
            wait_until(
                answering(lambda: not ack_sets(client)), timeout_s=600, what="empty ack sets"
            )
            assert all(process.poll() is None for process, _ in workers)
            queued = client.llen("dramatiq:emails")
            dead = dead_letters(client)
    finally:
        client.close()
        server.stop()

    outcome = deliveries(smtp_sink.path, USERS_RESTART)
    report(
        f"Redis {signum.name} + restart during {USERS_RESTART:,} notifications",
        outcome,
        recovered_s,
        record_property,
        dead=dead,
    )
    record_property("reconnected_s", round(reconnected_s, 1))
    print(
        f"Redis down {outage_s:.1f} s with {sent_at_stop} sent; every worker process fetched "
        f"again {reconnected_s:.1f} s after it was back; total {time.monotonic() - started:.0f} s"
    )
    assert sent_at_stop < USERS_RESTART, "Redis stopped part-way through"
    assert queued == 0
    assert_no_dead_letters(dead)
    assert_delivered_once_within_bound(outcome, engine, USERS_RESTART)
