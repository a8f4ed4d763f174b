"""Two real ``periodiq`` processes (periodiq's own scheduler, which claims nothing) send each tick
twice; a real worker runs it once: ``TickGuard`` keys periodiq's ``scheduled_at`` on its minute.

The test spans two minute boundaries after both schedulers start (60 to 120 s of wall time:
periodiq's cron has no seconds), on the test's own Redis.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import redis

from app.local.ports import free_port
from app.middleware.ticks import tick_id
from tests.support.periodiq_actors import QUEUE, RUNS_KEY, SCHEDULE
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(480)]

MODULE = "tests.support.periodiq_actors"
PERIODIQ = [str(VENV_BIN / "periodiq"), "app.broker:setup_broker", MODULE]
WORKER = [
    *(str(VENV_BIN / "fintask"), "process", "worker", "--"),
    *(str(VENV_BIN / "dramatiq"), "app.broker:setup_broker", MODULE),
    *("--processes", "1", "--threads", "2", "--queues", QUEUE),
    *("--worker-shutdown-timeout", "5000"),
]
# periodiq logs each send: "Scheduling Actor(periodiq_first) at 2024-06-03 15:15:00+05:45."
SEND_LINE = re.compile(r"Scheduling Actor\((\w+)\) at (\S+ \S+)\.$", re.MULTILINE)


def sends(log: Path) -> Counter[tuple[str, str]]:
    """(job, tick) of each message a periodiq process's log says it sent."""
    return Counter(
        (job, tick_id(dt.datetime.fromisoformat(moment)))
        for job, moment in SEND_LINE.findall(log.read_text())
    )


def runs(client: redis.Redis) -> Counter[tuple[str, str]]:
    """(job, tick) of each run the worker recorded."""
    recorded = [json.loads(run) for run in client.lrange(RUNS_KEY, 0, -1)]
    return Counter((run["actor"], run["tick"]) for run in recorded)


def test_two_periodiq_processes_get_one_run_per_tick_per_job(redis_url, client, tmp_path):
    # Given a worker of the `worker` process type (TickGuard in its stack) on the jobs' queue
    env = fintask_env(REDIS_URL=redis_url, FINTASK_VAR_DIR=str(tmp_path))
    worker_env = {**env, "METRICS_PORT_WORKER": str(free_port()), "METRICS_HOST": "127.0.0.1"}
    logs = [tmp_path / "periodiq-1.log", tmp_path / "periodiq-2.log"]
    with running(WORKER, worker_env, tmp_path / "worker.log"):
        wait_until(lambda: client.hlen("fintask:consumers") == 1, timeout_s=90, what="the worker")

        # And two periodiq processes on one Redis: one started as the Procfile starts a
        # scheduler (TZ=UTC), the other directly, in a time zone that is not UTC
        with (
            running(
                [str(VENV_BIN / "fintask"), "process", "scheduler", "--", *PERIODIQ], env, logs[0]
            ),
            running(PERIODIQ, {**env, "TZ": "Asia/Kathmandu"}, logs[1]),
        ):
            wait_until(
                lambda: all("Registered periodic actors" in log.read_text() for log in logs),
                timeout_s=90,
                what="both periodiq processes to start",
            )
            started = dt.datetime.now(dt.UTC)
            boundaries = [tick_id(started + dt.timedelta(minutes=n)) for n in (1, 2)]
            expected = {(job.name, tick) for tick in boundaries for job in SCHEDULE}

            # When both have sent the ticks of the next two minute boundaries, and the worker
            # has dealt with every message
            def boundaries_sent_and_done() -> bool:
                sent_by_both = all(expected <= set(sends(log)) for log in logs)
                return sent_by_both and expected <= set(runs(client)) and drained(client)

            wait_until(boundaries_sent_and_done, timeout_s=240, what="two minute boundaries")

    # Then each boundary tick was sent twice, once by each periodiq, and ran once per job
    sent = sends(logs[0]) + sends(logs[1])
    ran = runs(client)
    assert {key: sent[key] for key in expected} == dict.fromkeys(expected, 2)
    assert {key: ran[key] for key in expected} == dict.fromkeys(expected, 1)
    # and no tick of any job ran twice, those of the start-up included
    assert {key: n for key, n in ran.items() if n != 1} == {}
    skipped = (tmp_path / "worker.log").read_text().count("was already sent as another message")
    print(f"\nsent per tick: {dict(sent)}\nran per tick: {dict(ran)}\nskipped: {skipped}")


def drained(client: redis.Redis) -> bool:
    """Whether every message sent to the queue has been processed (run or skipped) and acked."""
    return client.hlen(f"dramatiq:{QUEUE}.msgs") == 0
