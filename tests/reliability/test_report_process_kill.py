"""The weekly report through real processes: a worker killed with SIGKILL in the middle of the
run is replaced, the run resumes from its last committed chunk, and every active user gets
one email; a repeat only where the README allows it (a send the relay accepted as the worker
died, sent again with the same Message-ID), at most one per thread of the killed worker."""

from __future__ import annotations

import collections
import os
import signal
import subprocess

import pytest
from sqlalchemy import create_engine, func, select

from app.db.migrate import upgrade
from app.db.models import User
from app.local.ports import free_port
from app.local.seed import seed
from app.local.sinks import SmtpSink, read_records
from chunking import ChunkRun
from tests.support.processes import (
    VENV_BIN,
    dramatiq_worker,
    fintask_env,
    running,
    wait_until,
)

#: The fault suite's (``make test-reliability``): two minutes of a 3,000-user run.
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(600)]

USERS = 3_000


def test_sigkill_mid_run_resumes_with_one_email_per_active_user(redis_url, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'fintask.db'}"
    upgrade(database_url)
    engine = create_engine(database_url)
    seed(engine, users=USERS)
    with engine.connect() as connection:
        active = set(connection.scalars(select(User.email).where(User.is_active.is_(True))))
    mailbox = tmp_path / "mail.jsonl"
    sink = SmtpSink(path=mailbox, port=free_port()).start()
    env = fintask_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        SMTP_URL=f"smtp://127.0.0.1:{sink.port}",
    )

    def run() -> tuple[str, int] | None:
        with engine.connect() as connection:
            row = connection.execute(select(ChunkRun.status, ChunkRun.processed)).first()
        return None if row is None else (row[0], row[1])

    def emails() -> list[str]:
        return [mail["to"][0] for mail in read_records(mailbox)]

    threads = 4
    worker = dramatiq_worker("fanout", "emails", "maintenance", processes=1, threads=threads)
    try:
        # A scheduler relays any outbox row a killed worker committed but did not send (only
        # the relay: the real schedule's daily jobs would mail these users too).
        relay_only = [str(VENV_BIN / "python"), "-m", "scheduler", "tests.support.relay_schedule"]
        with running(relay_only, env, tmp_path / "sched.log"):
            # Given a run in progress,
            with running(worker, env, tmp_path / "worker-a.log") as worker_a:
                subprocess.run(
                    [str(VENV_BIN / "fintask"), "reports", "send", "--week", "2026-W47"],
                    env=env,
                    check=True,
                    capture_output=True,
                )
                wait_until(lambda: (run() or ("", 0))[1] > 0, what="the first chunk to commit")
                # when its worker is killed outright,
                os.killpg(worker_a.pid, signal.SIGKILL)
                worker_a.wait()
            killed_at = run()
            # then a new worker finishes it,
            with running(worker, env, tmp_path / "worker-b.log"):
                wait_until(lambda: (run() or ("", 0))[0] == "done", timeout_s=400, what="done")
                wait_until(lambda: len(emails()) >= len(active), timeout_s=300, what="emails")
    finally:
        sink.stop()

    # and every active user got one email, and nobody else any; a user mailed twice was being
    # mailed as the worker died, and got the same Message-ID twice (a receiver drops it).
    assert killed_at is not None and killed_at[0] == "running", "the kill landed mid-run"
    received = collections.Counter(emails())
    assert set(received) == active
    repeated = {to for to, count in received.items() if count > 1}
    assert len(repeated) <= threads
    assert set(received.values()) <= {1, 2}
    for to in repeated:
        ids = {mail["message_id"] for mail in read_records(mailbox) if mail["to"][0] == to}
        assert len(ids) == 1, (to, ids)
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(ChunkRun)) == 1
    engine.dispose()
