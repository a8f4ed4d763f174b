"""A worker killed with SIGKILL in the middle of sending neither loses the email nor sends it
twice: the message comes back after the dead worker's heartbeat expires, and the claim it left
is taken over."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from sqlalchemy import create_engine, select, text

from app.db.migrate import upgrade
from app.db.models import Notification
from app.local.ports import free_port
from app.local.sinks import SmtpSink, read_records
from tests.support.processes import (
    VENV_BIN,
    dramatiq_worker,
    fintask_env,
    running,
    wait_until,
)

pytestmark = [pytest.mark.reliability, pytest.mark.quick]


def test_sigkill_mid_send_delivers_exactly_one_email(redis_url, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'fintask.db'}"
    upgrade(database_url)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (id, email, name, is_active, created_at) "
                "VALUES (1, 'ada@example.com', 'Ada', 1, '2026-01-01 00:00:00')"
            )
        )
    mailbox = tmp_path / "mail.jsonl"
    sink = SmtpSink(path=mailbox, port=free_port(), delay_s=3.0).start()
    env = fintask_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        SMTP_URL=f"smtp://127.0.0.1:{sink.port}",
    )

    def status() -> str | None:
        with engine.connect() as connection:
            return connection.execute(select(Notification.status)).scalar_one_or_none()

    try:
        # Given a worker in the middle of sending (the relay holds it before the mail is sent),
        with running(dramatiq_worker("emails"), env, tmp_path / "worker-a.log") as worker_a:
            subprocess.run(
                [str(VENV_BIN / "fintask"), "notify", "--user", "1", "--kind", "statement"],
                env=env,
                check=True,
                capture_output=True,
            )
            wait_until(lambda: status() == "sending", what="worker A to claim the notification")
            # when it is killed outright,
            os.killpg(worker_a.pid, signal.SIGKILL)
            worker_a.wait()
        assert read_records(mailbox) == []

        # then another worker sends the email, once: with the Procfile's settings the message
        # comes back once worker A's heartbeat is 60 s old, and A's claim is 45 s stale by then.
        with running(dramatiq_worker("emails"), env, tmp_path / "worker-b.log"):
            wait_until(lambda: status() == "sent", timeout_s=240, what="worker B to send it")
        mails = read_records(mailbox)
        assert [mail["to"] for mail in mails] == [["ada@example.com"]]
        with engine.connect() as connection:
            attempts = connection.execute(select(Notification.attempts)).scalar_one()
        assert attempts == 2, "worker B took over worker A's claim"
    finally:
        sink.stop()
        engine.dispose()
