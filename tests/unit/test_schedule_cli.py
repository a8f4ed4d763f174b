"""`fintask schedule` shows every job with its spec, next run, last sent tick and pause."""

from __future__ import annotations

import json

from click.testing import CliRunner

from app.cli.main import main
from scheduler.schedule import SCHEDULE


def test_the_schedule_lists_every_job_as_json(redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    from app.redis_client import get_redis

    get_redis.cache_clear()
    try:
        result = CliRunner().invoke(main, ["schedule", "--json"])
    finally:
        get_redis.cache_clear()

    assert result.exit_code == 0, result.output
    listing = json.loads(result.output)
    assert listing["next_cursor"] is None
    rows = {row["name"]: row for row in listing["items"]}
    assert set(rows) == {job.name for job in SCHEDULE}
    assert rows["start_weekly_report"]["spec"] == "0 7 * * 1"
    assert rows["send_daily_digests"]["catch_up"] is True
    assert rows["send_daily_digests"]["paused"] is False


def test_the_schedule_still_shows_when_redis_is_down(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:9/0")
    from app.redis_client import get_redis

    get_redis.cache_clear()
    try:
        result = CliRunner().invoke(main, ["schedule"])
    finally:
        get_redis.cache_clear()

    assert result.exit_code == 0
    assert (
        "last sent ticks, pauses and run-now requests unknown: Redis did not answer"
        in result.stderr
    )
    assert "start_weekly_report" in result.stdout
