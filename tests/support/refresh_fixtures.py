"""What the refresh, ETL and API tests share (no tests of its own).

The sandbox provider runs in process, served by a real uvicorn server on a free port in a
thread, so fintask's flows reach it through ``PROVIDER_URL`` and real HTTP as in production;
its clock is the test's, so refreshes finish and rate limits refill when the test says.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from dramatiq.middleware import MiddlewareError

from app.db.models import Job, JobStatus, ProviderAccount, utcnow
from app.db.session import transaction
from app.local.ports import free_port
from sandbox.app import create_app
from sandbox.config import SandboxConfig


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Sandbox:
    url: str
    clock: FakeClock
    _client: httpx.Client = field(default_factory=httpx.Client)

    def stats(self) -> dict[str, Any]:
        """What the sandbox served, by status: ``{"200": 3, "429": 1}``."""
        return dict(self._client.get(f"{self.url}/_sandbox/stats").json()["by_status"])


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Sandbox]]:
    """Start a sandbox with ``SandboxConfig(**faults)`` and point ``PROVIDER_URL`` at it."""
    servers: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**faults: Any) -> Sandbox:
        clock = FakeClock()
        port = free_port()
        config = uvicorn.Config(
            create_app(SandboxConfig(clock=clock, **faults)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="sandbox", daemon=True)
        thread.start()
        servers.append((server, thread))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "the sandbox did not start"
            time.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("PROVIDER_URL", url)
        return Sandbox(url=url, clock=clock)

    yield start
    for server, thread in servers:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def sent(stub_broker: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, int | None]]:
    """Every (message, delay) enqueued on the stub broker during the test, in order; a send
    that a middleware refused (``AlreadyPending``, ``MessageRejected``) enqueued nothing."""
    records: list[tuple[Any, int | None]] = []
    enqueue = stub_broker.enqueue

    def recording_enqueue(message: Any, *, delay: int | None = None) -> Any:
        record = (message, delay)
        records.append(record)
        try:
            return enqueue(message, delay=delay)
        except MiddlewareError:
            records[:] = [other for other in records if other is not record]
            raise

    monkeypatch.setattr(stub_broker, "enqueue", recording_enqueue)
    return records


def sent_to(records: list[tuple[Any, int | None]], actor_name: str) -> list[tuple[Any, int | None]]:
    return [(message, delay) for message, delay in records if message.actor_name == actor_name]


@pytest.fixture
def account(user: Any) -> ProviderAccount:
    """The user's first sandbox account, linked (no fraud check queued)."""
    with transaction() as session:
        linked = ProviderAccount(
            user_id=user.id, provider="sandbox", external_id=f"acc-{user.id}-0", name="Checking"
        )
        session.add(linked)
    return linked


def make_job(account_id: int, *, status: JobStatus = JobStatus.RUNNING, deadline_s: float = 60):
    """A refresh job written straight to the database (no message sent)."""
    with transaction() as session:
        job = Job(
            id=str(uuid.uuid4()),
            kind="refresh",
            account_id=account_id,
            status=status.value,
            details={"poll": 0},
            deadline_at=utcnow() + dt.timedelta(seconds=deadline_s),
        )
        session.add(job)
    return job


def load_job(job_id: str) -> Job:
    with transaction() as session:
        return session.get_one(Job, job_id)


def wait_until(condition: Callable[[], object], *, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
