"""Real scheduler processes: two on one Redis send one message per tick per job, and one started
while Redis is down waits for it instead of failing.

No worker runs: the messages stay in Redis, where the tests count them. The first test spans two
minute boundaries after the schedulers start (60 to 120 s of wall time: cron has no seconds).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import redis

from app.middleware.ticks import tick_id
from tests.support.fixed_port_redis import FixedPortRedis
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until
from tests.support.scheduler_actors import QUEUE, SCHEDULE

#: The pair spans two minute boundaries (about two minutes): `make test-reliability` only; the
#: start while Redis is down is quick.
pytestmark = [pytest.mark.reliability]

MODULE = "tests.support.scheduler_actors"
TICK_LINE = re.compile(r"Tick (\S+) of (\w+): (sent as message|already sent by another)")


def queued_ticks(client: redis.Redis) -> Counter[tuple[str, str]]:
    """(actor, tick) of every message waiting in the test queue."""
    encoded = client.hvals(f"dramatiq:{QUEUE}.msgs")
    messages = [json.loads(data) for data in encoded]
    return Counter((m["actor_name"], m["kwargs"]["tick"]) for m in messages)


def tick_lines(log: Path) -> set[tuple[str, str, str]]:
    """(tick, job, sent|taken) for each tick a scheduler's log says it dealt with."""
    return {
        (tick, job, "sent" if outcome.startswith("sent") else "taken")
        for tick, job, outcome in TICK_LINE.findall(log.read_text())
    }


def test_two_scheduler_processes_send_one_message_per_tick_per_job(redis_url, tmp_path):
    # Given two schedulers on one Redis: one started as the Procfile starts it, the other
    # directly, in a time zone that is not UTC (the scheduler must not care)
    env = fintask_env(REDIS_URL=redis_url, FINTASK_VAR_DIR=str(tmp_path))
    command = ["python", "-m", "scheduler", MODULE]
    procfile_like = [str(VENV_BIN / "fintask"), "process", "scheduler", "--", *command]
    logs = [tmp_path / "scheduler-1.log", tmp_path / "scheduler-2.log"]
    client = redis.Redis.from_url(redis_url)

    # When they run until both have dealt with the ticks of the next two minute boundaries
    with (
        running(procfile_like, env, logs[0]),
        running(
            [str(VENV_BIN / command[0]), *command[1:]], {**env, "TZ": "Asia/Kathmandu"}, logs[1]
        ),
    ):
        wait_until(
            lambda: all("waking at each minute" in log.read_text() for log in logs),
            timeout_s=60,
            what="both schedulers to start",
        )
        started = dt.datetime.now(dt.UTC)
        boundaries = [tick_id(started + dt.timedelta(minutes=n)) for n in (1, 2)]
        expected = {(tick, job.name) for tick in boundaries for job in SCHEDULE}

        def both_dealt_with_the_boundaries() -> bool:
            return all(expected <= {(t, j) for t, j, _ in tick_lines(log)} for log in logs)

        wait_until(both_dealt_with_the_boundaries, timeout_s=200, what="two minute boundaries")

    # Then each job has exactly one message per tick, and the boundary ticks are among them
    counts = queued_ticks(client)
    client.close()
    assert counts, "no message was queued"
    assert {key: n for key, n in counts.items() if n != 1} == {}
    assert {(job, tick) for tick, job in expected} <= set(counts)
    # and at each boundary both schedulers tried: one sent, the other found the tick taken
    for tick, job in expected:
        outcomes = sorted(
            outcome for log in logs for t, j, outcome in tick_lines(log) if (t, j) == (tick, job)
        )
        assert outcomes == ["sent", "taken"], (tick, job)
    print(f"ticks per job: {sorted(counts.items())}")  # the measurement, with pytest -s


@pytest.mark.quick
def test_a_scheduler_started_while_redis_is_down_waits_for_it_then_runs(tmp_path):
    # Given a Redis address where nothing answers yet
    server = FixedPortRedis(data_dir=tmp_path / "redis")
    env = fintask_env(REDIS_URL=server.fixed_url, FINTASK_VAR_DIR=str(tmp_path / "var"))
    log = tmp_path / "scheduler.log"
    command = [str(VENV_BIN / "python"), "-m", "scheduler", MODULE]

    # When a scheduler starts there, and Redis comes up a while later
    try:
        with running(command, env, log) as scheduler:
            wait_until(
                lambda: "does not answer" in log.read_text(),
                timeout_s=60,
                what="the scheduler to say it waits for Redis",
            )
            assert scheduler.poll() is None, log.read_text()
            server.start()

            # Then it starts by itself, and sends the current minute's ticks
            wait_until(
                lambda: len(tick_lines(log)) >= len(SCHEDULE),
                timeout_s=60,
                what="the scheduler to send its first ticks",
            )
        client = redis.Redis.from_url(server.fixed_url)
        counts = queued_ticks(client)
        client.close()
    finally:
        server.stop()
    text = log.read_text()
    assert "Traceback" not in text, text
    waiting = [line for line in text.splitlines() if "does not answer" in line]
    assert len(waiting) == 1, waiting  # one line, not one per try
    assert "Redis answers after" in text
    assert sorted(job for job, _ in counts) == sorted(job.name for job in SCHEDULE)
