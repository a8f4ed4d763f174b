"""End to end over real HTTP: the web process, a real dramatiq worker, Redis, the sandbox.

The sandbox runs as its own process with latency, random 5xx and a rate limit; refreshes
are started through the API and polled through it, as a client would
(``tests.support.refresh_stack``; the same flow on RabbitMQ is
``tests/reliability/test_rabbitmq_workloads.py``'s).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.processes import wait_until
from tests.support.refresh_stack import (
    FLAKY_PROVIDER,
    sandbox_transactions_by_account,
    start_refresh_stack,
    stored_transactions_by_account,
    wait_finished,
)

pytestmark = pytest.mark.e2e

ACCOUNTS = 14


@pytest.fixture
def start_stack(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    """Start the sandbox with ``faults`` and the web process; the test starts the worker."""
    with ExitStack() as processes:
        yield functools.partial(
            start_refresh_stack, processes, redis_url=redis_url, tmp_path=tmp_path
        )


def _pending_messages(redis_url: str) -> dict[str, int]:
    """Messages still held anywhere in Redis (ready, delayed, or fetched and not yet acked)."""
    client = redis.Redis.from_url(redis_url)
    try:
        held = {
            key.decode(): client.hlen(key)
            for key in client.scan_iter("dramatiq:*.msgs")
            if not key.endswith(b".XQ.msgs")  # dead letters are not pending
        }
        held |= {
            key.decode(): client.llen(key)
            for key in client.scan_iter("dramatiq:*")
            # wake-up tokens (``.wake``) are not messages: they only shorten a consumer's wait
            if client.type(key) == b"list" and not key.endswith(b".wake")
        }
    finally:
        client.close()
    return {key: count for key, count in held.items() if count}


def test_refreshes_finish_with_every_transaction_stored_once_despite_429s_and_5xx(
    start_stack, redis_url
):
    # Given a provider with latency, 5 % of 5xx, and six requests a second per client (below
    # the 10/s fintask allows itself, so some 429s must be met and honoured), and the
    # production refresh deadline,
    stack = start_stack(accounts=ACCOUNTS, faults=FLAKY_PROVIDER)

    # when 14 refreshes are requested (and one again) before a worker takes them,
    first = [stack.refresh(account_id) for account_id in stack.accounts]
    again = stack.refresh(stack.accounts[0])
    assert [r.status_code for r in first] == [202] * ACCOUNTS, stack.logs()
    assert (again.status_code, again.json()["id"]) == (200, first[0].json()["id"])
    # 14 polls at once (more than the provider's burst), from two worker processes,
    stack.start_worker(processes=2, threads=8)
    jobs = wait_finished(stack, [r.headers["Location"] for r in first], timeout_s=240)

    # then every job is done and every account holds exactly the sandbox's transactions,
    outcomes = [(job["status"], job["progress"], job["error"]) for job in jobs]
    assert outcomes == [("done", 100, None)] * ACCOUNTS
    assert stored_transactions_by_account(stack) == sandbox_transactions_by_account(stack)
    # though the provider refused some requests with 429 on the way,
    stats = stack.sandbox_stats()
    assert stats["by_status"].get("429", 0) > 0, stats
    # the global limits (5/s for polls, 5/s for downloads) held across both processes,
    busy = [second["second"] for second in stats["per_second"] if second["requests"]]
    mean_rate = stats["total_requests"] / (max(busy) - min(busy) + 1)
    assert mean_rate <= 2 * 5 * 1.2, stats["per_second"]
    # and nothing is left queued once the insights have run.
    wait_until(lambda: not _pending_messages(redis_url), timeout_s=60, what="empty queues")


def test_a_refresh_that_never_finishes_fails_at_its_deadline_and_stops_polling(
    start_stack, redis_url
):
    # Given a provider whose refreshes never finish, a 3 s deadline (the setting under test), and
    # a worker ready to take the refresh,
    stack = start_stack(accounts=1, faults={"SANDBOX_REFRESH_NEVER_FINISHES": "1"}, deadline_s="3")
    stack.start_worker()
    stack.wait_for_worker(redis_url)

    # when a refresh is requested,
    response = stack.refresh(stack.accounts[0])
    assert response.status_code == 202, stack.logs()
    (job,) = wait_finished(stack, [response.headers["Location"]], timeout_s=120)

    # then the job failed at its deadline, saying so,
    assert job["status"] == "failed"
    assert job["error"].startswith("deadline: the provider refresh ref-"), job
    created = dt.datetime.fromisoformat(job["created_at"])
    finished = dt.datetime.fromisoformat(job["finished_at"])
    # (found by the first poll due after it: polls are never scheduled past the deadline, so
    # only a machine slow to run that poll makes it late; a job whose deadline was not
    # enforced would have kept polling)
    assert dt.timedelta(seconds=3) <= finished - created < dt.timedelta(seconds=60)
    # and no poll is left anywhere: not ready, not delayed, not held by the worker.
    wait_until(lambda: not _pending_messages(redis_url), timeout_s=60, what="no pending poll")
    polls = stack.sandbox_stats()
    assert polls["endpoints"]["GET /refreshes/{refresh_id}"]["requests"] >= 1
