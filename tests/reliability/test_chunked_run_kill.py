"""The weekly report (``actors.reports.weekly_report``, a ``chunking.ChunkedRun``) through the
real processes, on PostgreSQL, with a worker SIGKILLed in the middle of a chunk twice in the
same run.

Two workers run, each the Procfile's ``worker`` line word for word (2 processes x 8 threads,
prefetch 16, every queue), beside a scheduler relaying the outbox. A chunk is in progress from
its claim (``UPDATE chunking_runs``, whose lock PostgreSQL holds until the chunk commits) to its
commit: the test finds the worker whose connection holds that lock (each worker's
``DATABASE_URL`` names it as ``application_name``) and kills its process group. A fresh worker
takes its place at once, as a platform restarts a dyno. The killed chunk's message waits in the
dead worker's ack set until a live worker's ``DeadWorkerRecovery`` (every 5 s) returns it, once
the dead heartbeat is 60 s old (the production ``HEARTBEAT_TIMEOUT_MS``): "recovered" is the
time from the kill until the chunk starts again; it is then redone from the last committed
cursor. The test takes about 5 minutes.

One effect per item: one ``weekly_report`` notification per active user (its dedup key is
unique) and one email per user, counted by the ``Message-ID`` the receiver sees. A worker killed
after the mail relay took an email and before it marked the notification sent makes that email
go again with the same ``Message-ID`` (README, "What can still repeat"): such repeats are
reported, bounded by the threads killed, and not counted as a second effect.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, select, text

from app.db.migrate import upgrade
from app.db.models import Notification, NotificationStatus, User
from app.local.seed import seed
from app.local.sinks import SmtpSink, read_records
from app.senders import email_message_id
from app.settings import load_settings
from chunking import ChunkRun, RunStatus
from tests.support.postgres import PostgresServer
from tests.support.processes import VENV_BIN, running, wait_until
from tests.support.procfile import (
    booted_processes,
    procfile_command,
    procfile_env,
    worker_threads,
)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1_500)]

#: 4,500 active users: nine chunks of 500, enough for two kills and a miss or two.
USERS = 5_000
WEEK = "2026-W47"
KILLS = 2
#: Kills that land just after a chunk committed (the lock seen, the commit faster than the
#: signal) are not counted; a loaded machine may need a few.
MAX_ATTEMPTS = 6
HEARTBEAT_TIMEOUT_S = 60
#: Generous room for recovery's clock (5 s), worker starts and a loaded 2-core machine.
MARGIN_S = 240

#: The connection holding the run row's claim: a chunk between its claim and its commit.
CHUNK_IN_PROGRESS = text(
    """
    SELECT a.application_name
    FROM pg_locks l
    JOIN pg_class c ON c.oid = l.relation
    JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE c.relname = 'chunking_runs' AND l.mode = 'RowExclusiveLock' AND l.granted
      AND l.pid <> pg_backend_pid()
    """
)
CONNECTED = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")


class Fleet:
    """The test's workers, by the ``application_name`` their connections carry."""

    def __init__(self, stack: ExitStack, tmp_path: Path, client: redis.Redis, **urls: str) -> None:
        self.stack = stack
        self.tmp_path = tmp_path
        self.client = client
        self.urls = urls
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> str:
        """Start one more worker, the Procfile's way; return its name once it has booted."""
        name = f"worker-{len(self.workers) + 1}"
        urls = {**self.urls, "DATABASE_URL": f"{self.urls['DATABASE_URL']}?application_name={name}"}
        env = procfile_env(var_dir=self.tmp_path / name, **urls)
        log = self.tmp_path / f"{name}.log"
        worker = self.stack.enter_context(running(procfile_command("worker"), env, log))
        self.workers[name] = worker
        wait_until(
            lambda: booted_processes(self.client, worker) == 2 or worker.poll() is not None,
            timeout_s=180,
            what=f"both processes of {name} to boot",
        )
        assert worker.poll() is None, log.read_text()[-3000:]
        return name


def run_row(engine: Engine) -> tuple[int, str, int]:
    """The run's seq, status and processed count, as committed."""
    with engine.connect() as connection:
        seq, status, processed = connection.execute(
            select(ChunkRun.seq, ChunkRun.status, ChunkRun.processed)
        ).one()
    return int(seq), str(status), int(processed)


def chunk_in_progress(engine: Engine) -> tuple[str, int] | None:
    """The worker whose chunk is between its claim and its commit, and that chunk's seq."""
    with engine.connect() as connection:
        holders = list(connection.scalars(CHUNK_IN_PROGRESS))
        seq = connection.scalar(select(ChunkRun.seq))
    if len(holders) != 1 or seq is None:
        return None
    return holders[0], int(seq)


def next_chunk_in_progress(engine: Engine, *, first_seq: int) -> tuple[str, int]:
    """Wait for a chunk of seq ``first_seq`` or later to be in progress; who runs it, and its
    seq."""
    found: list[tuple[str, int]] = []

    def in_progress() -> bool:
        current = chunk_in_progress(engine)
        if current is not None and current[1] >= first_seq:
            found.append(current)
            return True
        return run_row(engine)[1] != RunStatus.RUNNING

    wait_until(in_progress, timeout_s=600, what=f"chunk {first_seq} or a later one to start")
    assert found, f"the run ended before chunk {first_seq} was caught: {run_row(engine)}"
    return found[-1]


def committed(engine: Engine, seq: int) -> bool:
    """Whether chunk ``seq`` of the run has committed."""
    return run_row(engine)[0] > seq


def restarted(engine: Engine, seq: int) -> bool:
    """Whether chunk ``seq`` is in progress again, or committed."""
    current = chunk_in_progress(engine)
    return (current is not None and current[1] == seq) or committed(engine, seq)


def disconnected(engine: Engine, application_name: str) -> bool:
    """Whether PostgreSQL has let go of every connection of ``application_name``."""
    with engine.connect() as connection:
        return connection.scalar(CONNECTED, {"name": application_name}) == 0


def test_a_chunked_run_killed_twice_mid_chunk_finishes_with_one_effect_per_item(
    redis_url: str,
    client: redis.Redis,
    postgres_server: PostgresServer,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    # The Procfile's settings, not a test's: the timeout is the production default.
    assert load_settings().heartbeat_timeout_ms == HEARTBEAT_TIMEOUT_S * 1000

    # Given 5,000 users on PostgreSQL, 4,500 of them active, and a mail relay
    database_url = postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")
    upgrade(database_url)
    engine = create_engine(database_url)
    seed(engine, users=USERS)
    with engine.connect() as connection:
        users = dict(connection.execute(select(User.email, User.id).where(User.is_active)).all())
    active = set(users.values())
    mailbox = smtp_sink.path
    urls = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": database_url,
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_sink.port}",
    }

    kills: list[tuple[int, float, float]] = []
    missed: list[int] = []
    with ExitStack() as stack:
        # And the outbox relay of a scheduler (only the relay: the real schedule's daily
        # jobs would mail these users too), and two workers
        relay = procfile_command("scheduler", "tests.support.relay_schedule")
        env = procfile_env(var_dir=tmp_path / "scheduler", **urls)
        stack.enter_context(running(relay, env, tmp_path / "scheduler.log"))
        fleet = Fleet(stack, tmp_path, client, **urls)
        fleet.start()
        fleet.start()
        # And the week's report run started, as an operator starts it
        subprocess.run(
            [str(VENV_BIN / "fintask"), "reports", "send", "--week", WEEK],
            env=procfile_env(var_dir=tmp_path / "cli", **urls),
            check=True,
            capture_output=True,
            timeout=120,
        )
        # When the worker running a chunk (the second or a later one) is SIGKILLed in the
        # middle of it, and again in a later chunk once the run has recovered
        first_seq = 1
        while len(kills) < KILLS:
            assert len(kills) + len(missed) < MAX_ATTEMPTS, f"kills missed: {missed}"
            holder, seq = next_chunk_in_progress(engine, first_seq=first_seq)
            victim = fleet.workers[holder]
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            killed_at = time.monotonic()
            # (PostgreSQL rolls the chunk back when it sees the connection closed)
            wait_until(
                functools.partial(disconnected, engine, holder),
                timeout_s=60,
                what=f"{holder}'s connections to close",
            )
            # And a fresh worker takes its place
            fleet.start()
            if run_row(engine)[0] != seq:
                missed.append(seq)  # the chunk committed before the signal landed
                first_seq = run_row(engine)[0]
                continue
            # Then a live worker gets the interrupted chunk back and starts it again
            wait_until(
                functools.partial(restarted, engine, seq),
                timeout_s=HEARTBEAT_TIMEOUT_S + MARGIN_S,
                what=f"chunk {seq} to start again",
            )
            back_after_s = time.monotonic() - killed_at
            # and commits it, from the last committed cursor
            wait_until(
                functools.partial(committed, engine, seq),
                timeout_s=MARGIN_S,
                what=f"chunk {seq} to be redone",
            )
            kills.append((seq, back_after_s, time.monotonic() - killed_at))
            first_seq = seq + 1
        # And the run finishes, and every notification it made is sent
        wait_until(
            lambda: run_row(engine)[1] == RunStatus.DONE, timeout_s=600, what="the run's end"
        )

        def statuses() -> Counter[str]:
            with engine.connect() as connection:
                return Counter(
                    connection.scalars(
                        select(Notification.status).where(Notification.kind == "weekly_report")
                    )
                )

        wait_until(
            lambda: statuses() == {NotificationStatus.SENT: len(active)},
            timeout_s=HEARTBEAT_TIMEOUT_S + MARGIN_S,
            what="every email to be sent",
        )

    # Then each active user has one notification and one email (by the Message-ID a receiver
    # sees), and no one else any
    with engine.connect() as connection:
        notified = Counter(
            connection.scalars(
                select(Notification.user_id).where(Notification.kind == "weekly_report")
            )
        )
        runs = [
            tuple(row) for row in connection.execute(select(ChunkRun.status, ChunkRun.processed))
        ]
    engine.dispose()
    mails = read_records(mailbox)
    message_ids: dict[int, set[str]] = {}
    for mail in mails:
        (address,) = mail["to"]
        message_ids.setdefault(users.get(address, -1), set()).add(mail["message_id"])
    lost = len(active - set(notified)) + len(active - set(message_ids))
    doubled = sum(n - 1 for n in notified.values()) + sum(len(m) - 1 for m in message_ids.values())
    repeats = len(mails) - sum(len(m) for m in message_ids.values())
    restarted_s = [round(restarted, 1) for _, restarted, _ in kills]
    redone_s = [round(redone, 1) for _, _, redone in kills]
    killed_chunks = [seq for seq, _, _ in kills]

    record_property("time_to_recover_s", restarted_s)
    record_property("time_to_redo_the_chunk_s", redone_s)
    record_property("killed_chunks", killed_chunks)
    record_property("kills_landed_after_a_commit", len(missed))
    record_property("lost", lost)
    record_property("doubled", doubled)
    record_property("emails_repeated_with_the_same_message_id", repeats)
    print(
        f"\nchunked run, worker SIGKILL x2: lost {lost}, doubled {doubled}, "
        f"recovered in {restarted_s[0]} s and {restarted_s[1]} s"
    )
    print(
        f"  (killed chunks {killed_chunks} started again {restarted_s} s and committed "
        f"{redone_s} s after their kill; kills that landed just after a commit: {len(missed)}; "
        f"emails sent again with the same Message-ID: {repeats})"
    )

    assert lost == doubled == 0
    assert set(notified) == set(message_ids) == active
    for user_id, ids in message_ids.items():
        assert ids == {email_message_id(f"weekly-report:{WEEK}:{user_id}")}
    assert runs == [(RunStatus.DONE, len(active))]
    # and an email went twice only if it was in flight in a worker killed (one per thread)
    assert repeats <= (len(kills) + len(missed)) * worker_threads(procfile_command("worker"))
