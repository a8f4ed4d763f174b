"""End to end over real HTTP: the web process, a real dramatiq worker, Redis, the sandbox.

The sandbox runs as its own process with latency, random 5xx and a rate limit; refreshes
are started through the API and polled through it, as a client would.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import select

from app.db.migrate import upgrade
from app.db.models import ProviderAccount, Transaction, User
from app.db.session import create_db_engine
from app.local.ports import free_port, wait_for_port
from app.local.supervisor import procfile_commands
from sandbox.data import expected_transactions
from tests.support.processes import dramatiq_worker, fintask_env, running, wait_until

pytestmark = pytest.mark.e2e

FINISHED = {"done", "failed"}
ACCOUNTS = 14
#: For each request and each wait: a loaded 2-core machine boots gunicorn's worker and two
#: dramatiq processes slowly, and shares its cores with them and the sandbox.
REQUEST_TIMEOUT_S = 30


@dataclass
class Stack:
    tmp_path: Path
    env: dict[str, str]
    sandbox_url: str
    web_url: str
    database_url: str
    accounts: list[int]
    processes: ExitStack

    def start_worker(self, *, processes: int = 1, threads: int = 8) -> None:
        command = dramatiq_worker(processes=processes, threads=threads)
        self.processes.enter_context(running(command, self.env, self.tmp_path / "worker.log"))

    def wait_for_worker(self, redis_url: str) -> None:
        """Wait until the worker's consumers fetch: idle, they sit in a blocking pop."""
        client = redis.Redis.from_url(redis_url)
        try:
            wait_until(
                lambda: int(client.info("clients")["blocked_clients"]) > 0,
                timeout_s=120,
                what="the worker's consumers to start",
            )
        finally:
            client.close()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
            for path in sorted(self.tmp_path.glob("*.log"))
        )


@pytest.fixture
def start_stack(redis_url: str, tmp_path: Path) -> Iterator[Any]:
    """Start the sandbox with ``faults`` and the web process; the test starts the worker."""
    with ExitStack() as processes:

        def start(*, accounts: int, faults: dict[str, str], deadline_s: str | None = None) -> Stack:
            database_url = f"sqlite:///{tmp_path / 'e2e.db'}"
            account_ids = _seed(database_url, accounts)
            sandbox_port, web_port = free_port(), free_port()
            sandbox_url = f"http://127.0.0.1:{sandbox_port}"
            deadline = {} if deadline_s is None else {"REFRESH_DEADLINE_S": deadline_s}
            env = fintask_env(
                REDIS_URL=redis_url,
                DATABASE_URL=database_url,
                PROVIDER_URL=sandbox_url,
                FINTASK_VAR_DIR=str(tmp_path / "var"),
                PORT=str(web_port),
                HOST="127.0.0.1",
                WEB_CONCURRENCY="1",
                **deadline,
                **faults,
            )
            sandbox = [sys.executable, "-m", "sandbox", "--port", str(sandbox_port)]
            sandbox += ["--log-level", "warning"]
            processes.enter_context(running(sandbox, env, tmp_path / "sandbox.log"))
            web = ["bash", "-c", procfile_commands()["web"]]
            processes.enter_context(running(web, env, tmp_path / "web.log"))
            # uvicorn binds the sandbox's port once its app is built; gunicorn binds first and
            # boots its worker after, so the web process is ready when /healthz says so.
            wait_for_port(sandbox_port, timeout_s=120)
            web_url = f"http://127.0.0.1:{web_port}"
            try:
                wait_until(
                    lambda: _healthy(f"{web_url}/healthz"),
                    timeout_s=120,
                    what="the web process to be healthy",
                )
            except AssertionError as error:
                raise AssertionError(f"{error}\n{(tmp_path / 'web.log').read_text()}") from None
            return Stack(
                tmp_path=tmp_path,
                env=env,
                sandbox_url=sandbox_url,
                web_url=web_url,
                database_url=database_url,
                accounts=account_ids,
                processes=processes,
            )

        yield start


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False  # not accepting yet, or too busy to answer in time: ask again


def _seed(database_url: str, accounts: int) -> list[int]:
    """Migrate, then users 1..N, each with their first sandbox account linked; their ids."""
    upgrade(database_url)
    engine = create_db_engine(database_url)
    ids = []
    with engine.begin() as connection:
        for n in range(1, accounts + 1):
            connection.execute(
                User.__table__.insert().values(id=n, email=f"u{n}@example.com", name=f"U{n}")
            )
            result = connection.execute(
                ProviderAccount.__table__.insert().values(
                    user_id=n,
                    provider="sandbox",
                    external_id=f"acc-{n}-0",
                    name="Checking",
                    currency="USD",
                    status="active",
                    linked_at=dt.datetime.now(dt.UTC),
                )
            )
            ids.append(int(result.inserted_primary_key[0]))
    engine.dispose()
    return ids


def _wait_finished(stack: Stack, locations: list[str], timeout_s: float) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []

    def all_finished() -> bool:
        jobs[:] = [
            httpx.get(stack.web_url + path, timeout=REQUEST_TIMEOUT_S).json() for path in locations
        ]
        return all(job["status"] in FINISHED for job in jobs)

    try:
        wait_until(all_finished, timeout_s=timeout_s, what="every job to finish")
    except AssertionError as error:
        raise AssertionError(f"{error}: {jobs}\n{stack.logs()}") from None
    return jobs


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
    stack = start_stack(
        accounts=ACCOUNTS,
        faults={
            "SANDBOX_LATENCY_MS": "20",
            "SANDBOX_FAIL_RATE": "0.05",
            "SANDBOX_RATE_LIMIT": "6",
            "SANDBOX_REFRESH_SECONDS": "0.5",
            "SANDBOX_SEED": "7",
        },
    )

    # when 14 refreshes are requested (and one again) before a worker takes them,
    refresh_url = f"{stack.web_url}/api/accounts/{{}}/refresh"
    first = [httpx.post(refresh_url.format(a), timeout=REQUEST_TIMEOUT_S) for a in stack.accounts]
    again = httpx.post(refresh_url.format(stack.accounts[0]), timeout=REQUEST_TIMEOUT_S)
    assert [r.status_code for r in first] == [202] * ACCOUNTS, stack.logs()
    assert (again.status_code, again.json()["id"]) == (200, first[0].json()["id"])
    # 14 polls at once (more than the provider's burst), from two worker processes,
    stack.start_worker(processes=2, threads=8)
    jobs = _wait_finished(stack, [r.headers["Location"] for r in first], timeout_s=240)

    # then every job is done and every account holds exactly the sandbox's transactions,
    outcomes = [(job["status"], job["progress"], job["error"]) for job in jobs]
    assert outcomes == [("done", 100, None)] * ACCOUNTS
    engine = create_db_engine(stack.database_url)
    with engine.connect() as connection:
        for account_id, n in zip(stack.accounts, range(1, ACCOUNTS + 1), strict=True):
            stored = connection.execute(
                select(Transaction.provider_transaction_id, Transaction.amount)
                .where(Transaction.account_id == account_id)
                .order_by(Transaction.provider_transaction_id)
            ).all()
            expected = [(t.id, Decimal(t.amount)) for t in expected_transactions(f"acc-{n}-0")]
            assert [tuple(row) for row in stored] == sorted(expected)
    engine.dispose()
    # though the provider refused some requests with 429 on the way,
    stats = httpx.get(f"{stack.sandbox_url}/_sandbox/stats", timeout=REQUEST_TIMEOUT_S).json()
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
    response = httpx.post(
        f"{stack.web_url}/api/accounts/{stack.accounts[0]}/refresh", timeout=REQUEST_TIMEOUT_S
    )
    assert response.status_code == 202, stack.logs()
    (job,) = _wait_finished(stack, [response.headers["Location"]], timeout_s=120)

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
    polls = httpx.get(f"{stack.sandbox_url}/_sandbox/stats", timeout=REQUEST_TIMEOUT_S).json()
    assert polls["endpoints"]["GET /refreshes/{refresh_id}"]["requests"] >= 1
