"""The fault suite: real redis-server, PostgreSQL and worker processes, under the Procfile's
settings (no test here tunes a heartbeat, a maintenance chance or a claim timeout).

Every test here carries the ``reliability`` mark; those that take a minute or two also carry
``quick`` and run in ``make test`` as well. The others (kills during thousands of messages,
Redis restarts, a chunked run killed twice) take minutes each and run in
``make test-reliability``, which runs the whole directory. ``docs/reliability.md`` has the
figures each prints and the command that reproduces them. The fixtures (``redis_server``,
``redis_url``, ``client``, ``database_url``) are the shared ones of ``tests/conftest.py``;
``smtp_sink`` is this directory's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.local.ports import free_port
from app.local.sinks import SmtpSink


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a test of this directory without the ``reliability`` mark: ``make test`` would
    run it whatever its length, and ``make test-reliability`` could not select it."""
    for item in items:
        if (
            item.path.parent.name == "reliability"
            and item.get_closest_marker("reliability") is None
        ):
            raise pytest.UsageError(f"{item.nodeid} lacks pytest.mark.reliability")


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[SmtpSink]:
    """The SMTP sink on a free port, writing every mail it accepts to ``mail.jsonl``."""
    sink = SmtpSink(path=tmp_path / "mail.jsonl", port=free_port()).start()
    try:
        yield sink
    finally:
        sink.stop()
