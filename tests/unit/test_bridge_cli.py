"""``fintask bridge celery`` stops at start in one line on a bad option or an unreachable broker."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from app.cli.main import main
from app.redis_client import get_redis


@pytest.fixture
def redis_url_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """A REDIS_URL the bridge never reaches: each case stops before it connects to fintask's."""
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--broker-url", "amqp://guest:secret@mq//"], "amqp://***@mq// is not a Redis URL"),
        (["--tasks", "actors.nowhere:TASKS"], "cannot load 'actors.nowhere:TASKS'"),
        (["--tasks", "actors.from_celery:BRIDGE_QUEUE"], "is not a mapping of Celery task names"),
        (["--queue", "two words"], "'two words' is not a queue name"),
        (["--visibility-timeout-ms", "10"], "10 is not in the range x>=1000"),
        (
            ["--broker-url", "redis://:secret@127.0.0.1:1/0"],
            "the Celery broker at redis://***@127.0.0.1:1/0 did not answer",
        ),
    ],
)
def test_a_bad_option_or_an_unreachable_broker_is_one_line_naming_it(
    arguments: list[str], expected: str, redis_url_set: None
):
    result = CliRunner().invoke(main, ["bridge", "celery", "--queue", "celery", *arguments])

    assert result.exit_code != 0
    assert expected in result.output
    assert "secret" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
