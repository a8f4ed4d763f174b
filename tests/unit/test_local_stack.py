"""A local stack (``fintask demo``, ``fintask run``'s tests) that fails to start stops what it
had started: no redis-server is left running behind the error."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from app.local.stack import LocalStack
from app.settings import SettingsError


def redis_servers_of_this_process() -> set[int]:
    return {
        child.pid
        for child in psutil.Process().children(recursive=True)
        if child.name().startswith("redis-server")
    }


def test_a_stack_refused_after_its_redis_started_stops_that_redis(tmp_path: Path) -> None:
    # Given a stack with a bad setting, which is read once its private Redis runs
    before = redis_servers_of_this_process()
    stack = LocalStack(
        var_dir=tmp_path,
        process_types=["web"],
        extra_env={"DATABASE_URL": f"sqlite:///{tmp_path / 'f.db'}", "METRICS_PORT_WORKER": "x"},
    )

    # When it starts, the setting is refused
    with pytest.raises(SettingsError, match="METRICS_PORT_WORKER='x'"):
        stack.start()

    # and the Redis it started is stopped
    assert redis_servers_of_this_process() == before
