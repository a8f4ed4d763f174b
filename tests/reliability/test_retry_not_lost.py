"""A retry whose enqueue fails on a real Redis: tried again, it goes once Redis answers; refused
past the patience, the message waits in the dead letters, says why, and runs once requeued."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
import redis
from click.testing import CliRunner

from app.cli.main import main
from app.middleware.retries import DurableRetries
from app.wakeup_broker import WakeupRedisBroker
from tests.support.processes import wait_until
from tests.support.workers import fintask_broker, worker_on

pytestmark = [pytest.mark.reliability, pytest.mark.quick]
pytest_plugins = ["tests.support.inspection_fixtures"]

QUEUE = "maintenance"


class RetryEnqueueFails(WakeupRedisBroker):
    """The next ``failures_left`` delayed enqueues (a retry's) fail as if the connection had
    dropped."""

    failures_left = 0

    def do_enqueue(self, queue_name: str, message_id: str, data: bytes) -> None:
        if queue_name.endswith(".DQ") and self.failures_left:
            self.failures_left -= 1
            raise redis.ConnectionError("Connection reset by peer")
        super().do_enqueue(queue_name, message_id, data)


def declare_settle(broker: RetryEnqueueFails, runs: list[int]) -> Any:
    """An actor on ``broker`` whose first run fails, recording each run in ``runs``."""

    def settle(account_id: int, **kwargs: Any) -> None:
        runs.append(account_id)
        if len(runs) == 1:
            raise RuntimeError("provider timed out")

    return dramatiq.actor(
        settle, broker=broker, queue_name=QUEUE, max_retries=5, min_backoff=100, max_backoff=100
    )


def test_a_retry_that_cannot_be_enqueued_for_a_moment_goes_when_redis_answers(
    inspected_redis, redis_url
):
    client = inspected_redis
    broker = fintask_broker(redis_url, RetryEnqueueFails)
    runs: list[int] = []
    actor = declare_settle(broker, runs)

    with worker_on(broker, threads=1):
        # When a message fails and its retry's first three enqueues fail (the production
        # stack's DurableRetries, trying again every second)
        broker.failures_left = 3
        actor.send(42)

        # Then the retry goes on the fourth and the message runs to the end, no dead letter
        wait_until(lambda: len(runs) == 2, what="the retry to run")
        broker.join(QUEUE, timeout=30_000)

    assert runs == [42, 42]
    assert broker.failures_left == 0
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
    print("\nretry enqueue failing 3 times: tried again, sent on the 4th, ran; lost 0")


def test_a_message_whose_retry_is_never_enqueued_is_kept_and_runs_when_requeued(
    inspected_redis, redis_url
):
    client = inspected_redis
    broker = fintask_broker(redis_url, RetryEnqueueFails)
    (retries,) = [m for m in broker.middleware if isinstance(m, DurableRetries)]
    retries.patience_ms = 0  # the subject: a Redis gone for longer than the patience
    runs: list[int] = []
    actor = declare_settle(broker, runs)
    runner = CliRunner()

    with worker_on(broker, threads=1):
        # When a message fails and its retry cannot be enqueued
        broker.failures_left = 1
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
    print("\nretry never enqueued: kept as a dead letter with its reason, requeued, ran; lost 0")
