"""Redis stops under two running schedulers and comes back on the same port a while later: the
ticks due meanwhile go out when it answers, once each, and the schedulers reconnect by
themselves (no restart, no operator).

Each scheduler is ``python -m scheduler`` as the Procfile starts it; no worker runs, so every
message stays in Redis where the test counts it. Redis keeps its data in an append-only file,
so the ticks sent before the outage are still there after it. One minute boundary must fall in
the outage: the test takes 60 to 120 s.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.support.fixed_port_redis import FixedPortRedis
from tests.support.processes import VENV_BIN, fintask_env, running, wait_until
from tests.support.scheduler_actors import QUEUE, SCHEDULE

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(480)]

MODULE = "tests.support.scheduler_actors"
SCHEDULER = [str(VENV_BIN / "fintask"), "process", "scheduler", "--"]
SCHEDULER += [str(VENV_BIN / "python"), "-m", "scheduler", MODULE]
KEPT = re.compile(r"Tick (\S+) of (\w+) not sent yet")
SENT = re.compile(r"Tick (\S+) of (\w+): (sent as message|already sent by another)")


def kept(log: Path) -> set[tuple[str, str]]:
    """(tick, job) of each tick a scheduler's log says it kept through the outage."""
    return set(KEPT.findall(log.read_text()))


def dealt_with(log: Path) -> set[tuple[str, str]]:
    """(tick, job) of each tick a scheduler's log says it sent or found sent."""
    return {(tick, job) for tick, job, _ in SENT.findall(log.read_text())}


def queued_ticks(url: str) -> Counter[tuple[str, str]]:
    """(tick, job) of every message waiting in the test queue."""
    client = redis.Redis.from_url(url)
    try:
        messages = [json.loads(data) for data in client.hvals(f"dramatiq:{QUEUE}.msgs")]
    finally:
        client.close()
    return Counter((m["kwargs"]["tick"], m["actor_name"]) for m in messages)


def test_ticks_due_while_redis_was_down_are_sent_once_when_it_is_back(tmp_path, record_property):
    # Given a Redis on a port it keeps across restarts, and two schedulers running on it
    server = FixedPortRedis(data_dir=tmp_path / "redis").start()
    env = fintask_env(REDIS_URL=server.fixed_url, FINTASK_VAR_DIR=str(tmp_path / "var"))
    logs = [tmp_path / "scheduler-1.log", tmp_path / "scheduler-2.log"]
    try:
        with running(SCHEDULER, env, logs[0]), running(SCHEDULER, env, logs[1]):
            wait_until(
                lambda: all(dealt_with(log) for log in logs),
                timeout_s=90,
                what="both schedulers to deal with their first tick",
            )
            before = queued_ticks(server.fixed_url)

            # When Redis stops, and stays down until both schedulers have kept the ticks of
            # the next minute boundary
            server.stop()
            stopped_at = time.monotonic()
            wait_until(
                lambda: all(len(kept(log)) >= len(SCHEDULE) for log in logs),
                timeout_s=150,
                what="a minute boundary during the outage",
            )
            due_in_outage = kept(logs[0]) | kept(logs[1])

            # And Redis comes back on the same port with its data
            server.start()
            outage_s = time.monotonic() - stopped_at
            back_at = time.monotonic()
            wait_until(
                lambda: all(due_in_outage <= dealt_with(log) for log in logs),
                timeout_s=60,
                what="both schedulers to deal with the ticks kept",
            )
            recovered_s = time.monotonic() - back_at
        after = queued_ticks(server.fixed_url)
    finally:
        server.stop()

    # Then each tick due during the outage is queued exactly once, as is every other tick
    doubled = {key: n for key, n in after.items() if n != 1}
    late = {key: after[key] for key in due_in_outage}
    record_property("outage_s", round(outage_s, 1))
    record_property("time_to_send_after_restart_s", round(recovered_s, 1))
    print(
        f"\nRedis down {outage_s:.0f} s; ticks due meanwhile: {sorted(due_in_outage)}; "
        f"sent {recovered_s:.1f} s after it was back; queued per tick: {sorted(after.items())}"
    )
    assert late == dict.fromkeys(due_in_outage, 1)
    assert doubled == {}
    # and the ticks sent before the outage survived it (append-only file), none lost
    assert set(before) <= set(after)
    # and each scheduler reconnected by itself: both still log ticks, no traceback
    for log in logs:
        text = log.read_text()
        assert "Traceback" not in text, text
        assert "Stopped" in text
