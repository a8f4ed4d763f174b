"""A retry whose enqueue fails on a real Redis: the message waits in the dead letters, says why,
and runs once requeued."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
import redis
from click.testing import CliRunner

from app.cli.main import main
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import wait_until
from tests.support.workers import fintask_broker, worker_on

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.support.inspection_fixtures"]

QUEUE = "maintenance"


class RetryEnqueueFailsOnce(WakeupRedisBroker):
    """The first delayed enqueue (a retry's) fails as if the connection had dropped."""

    failed = False

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        if queue_name.endswith(".DQ") and not self.failed:
            self.failed = True
            raise redis.ConnectionError("Connection reset by peer")
        super().do_enqueue(queue_name, message_id, data)


def test_a_message_whose_retry_cannot_be_enqueued_is_kept_and_runs_when_requeued(
    inspected_redis, redis_url
):
    client = inspected_redis
    broker = fintask_broker(redis_url, RetryEnqueueFailsOnce)
    runs: list[int] = []

    def settle(account_id: int, **kwargs: Any) -> None:
        runs.append(account_id)
        if len(runs) == 1:
            raise RuntimeError("provider timed out")

    actor = dramatiq.actor(
        settle, broker=broker, queue_name=QUEUE, max_retries=5, min_backoff=100, max_backoff=100
    )
    runner = CliRunner()

    with worker_on(broker, threads=1):
        # When a message fails and its retry cannot be enqueued
        message = actor.send(42)
        wait_until(lambda: client.zcard(f"dramatiq:{QUEUE}.XQ") == 1, what="the dead letter")

        # Then it is a dead letter whose reason says so
        shown = runner.invoke(main, ["dlq", "show", message.message_id])
        assert shown.exit_code == 0, shown.output
        assert (
            "reason: RetryNotEnqueued: it failed (RuntimeError: provider timed out) and its "
            "retry could not be enqueued (ConnectionError: Connection reset by peer)"
        ) in shown.output

        # And requeued, it runs to the end
        requeued = runner.invoke(main, ["dlq", "requeue", message.message_id])
        assert requeued.exit_code == 0, requeued.output
        wait_until(lambda: len(runs) == 2, what="the requeued message to run")
        broker.join(QUEUE, timeout=30_000)

    assert runs == [42, 42]
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
    assert not list(client.scan_iter(f"dramatiq:{QUEUE}.XQ.reason.*"))
