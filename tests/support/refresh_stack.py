"""The refresh flow's real processes for end-to-end tests (no tests of its own): the sandbox
provider with its faults, the web process as the Procfile's ``web`` line starts it, and the
dramatiq worker a test starts when it wants, on Redis or, given ``broker_url``, on RabbitMQ.

Refreshes are started through the API and polled through it, as a client would.
"""

from __future__ import annotations

import datetime as dt
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import distinct, func, select

from app.db.migrate import upgrade
from app.db.models import MonthlyBalance, ProviderAccount, Transaction, User
from app.db.session import create_db_engine
from app.local.ports import free_port, wait_for_port
from app.local.supervisor import procfile_commands
from sandbox.data import expected_transactions
from tests.support.processes import dramatiq_worker, fintask_env, running, wait_until

FINISHED = {"done", "failed"}
#: For each request and each wait: a loaded 2-core machine boots gunicorn's worker and two
#: dramatiq processes slowly, and shares its cores with them and the sandbox.
REQUEST_TIMEOUT_S = 30
#: A provider with latency, 5 % of 5xx, and six requests a second per client (below the 10/s
#: fintask allows itself, so some 429s must be met and honoured).
FLAKY_PROVIDER = {
    "SANDBOX_LATENCY_MS": "20",
    "SANDBOX_FAIL_RATE": "0.05",
    "SANDBOX_RATE_LIMIT": "6",
    "SANDBOX_REFRESH_SECONDS": "0.5",
    "SANDBOX_SEED": "7",
}


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

    def refresh(self, account_id: int) -> httpx.Response:
        """``POST /api/accounts/{id}/refresh``, as a client would."""
        url = f"{self.web_url}/api/accounts/{account_id}/refresh"
        return httpx.post(url, timeout=REQUEST_TIMEOUT_S)

    def sandbox_stats(self) -> dict[str, Any]:
        """What the sandbox provider served: requests by status, endpoint and second."""
        url = f"{self.sandbox_url}/_sandbox/stats"
        stats: dict[str, Any] = httpx.get(url, timeout=REQUEST_TIMEOUT_S).json()
        return stats


def start_refresh_stack(
    processes: ExitStack,
    *,
    redis_url: str,
    tmp_path: Path,
    accounts: int,
    faults: dict[str, str],
    deadline_s: str | None = None,
    broker_url: str | None = None,
) -> Stack:
    """Start the sandbox with ``faults`` and the web process, in ``processes``; the test
    starts the worker. Messages go to ``broker_url`` (RabbitMQ) when given, else to Redis."""
    database_url = f"sqlite:///{tmp_path / 'e2e.db'}"
    account_ids = seed_accounts(database_url, accounts)
    sandbox_port, web_port = free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    optional = {"REFRESH_DEADLINE_S": deadline_s, "BROKER_URL": broker_url}
    env = fintask_env(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        PROVIDER_URL=sandbox_url,
        FINTASK_VAR_DIR=str(tmp_path / "var"),
        PORT=str(web_port),
        HOST="127.0.0.1",
        WEB_CONCURRENCY="1",
        **{name: value for name, value in optional.items() if value is not None},
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


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False  # not accepting yet, or too busy to answer in time: ask again


def seed_accounts(database_url: str, accounts: int) -> list[int]:
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


def wait_finished(stack: Stack, locations: list[str], timeout_s: float) -> list[dict[str, Any]]:
    """Poll each job's ``Location`` until every one is done or failed; the jobs."""
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


def stored_transactions_by_account(stack: Stack) -> list[list[tuple[str, Decimal]]]:
    """Each account's stored transactions (provider id, amount), in provider-id order."""
    engine = create_db_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            return [
                [
                    (row.provider_transaction_id, row.amount)
                    for row in connection.execute(
                        select(Transaction.provider_transaction_id, Transaction.amount)
                        .where(Transaction.account_id == account_id)
                        .order_by(Transaction.provider_transaction_id)
                    )
                ]
                for account_id in stack.accounts
            ]
    finally:
        engine.dispose()


def sandbox_transactions_by_account(stack: Stack) -> list[list[tuple[str, Decimal]]]:
    """What the sandbox holds for each of the stack's accounts, as stored rows would read."""
    return [
        sorted((t.id, Decimal(t.amount)) for t in expected_transactions(f"acc-{n}-0"))
        for n in range(1, len(stack.accounts) + 1)
    ]


def accounts_with_insights(stack: Stack) -> int:
    """How many of the stack's accounts have their insights computed (monthly balances)."""
    engine = create_db_engine(stack.database_url)
    try:
        with engine.connect() as connection:
            count = select(func.count(distinct(MonthlyBalance.account_id)))
            return int(connection.scalar(count) or 0)
    finally:
        engine.dispose()
