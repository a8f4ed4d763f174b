"""Unit-test fixtures: Dramatiq's StubBroker, a worker on it, SQLite, and local sinks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from queue import Queue

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from sqlalchemy import Engine

import actors
from app.db.metadata import target_metadata
from app.db.models import User
from app.db.session import default_engine, reset_default_engine, transaction
from app.local.ports import free_port
from app.local.sinks import HttpSink, SmtpSink


@pytest.fixture
def database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    """A fresh database behind fintask's default engine, once on SQLite, once on PostgreSQL."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    reset_default_engine()
    for metadata in target_metadata:
        metadata.create_all(default_engine())
    yield default_engine()
    reset_default_engine()


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    """The process's StubBroker, emptied, and left without the test's workers afterwards.

    ``Worker.start`` adds a ``_WorkerMiddleware`` to the broker and ``stop`` never removes it:
    a queue declared by a later test would get consumers on stopped workers, which take its
    messages and never run them (``broker.join`` then hangs).
    """
    broker = dramatiq.get_broker()
    assert isinstance(broker, StubBroker)
    broker.flush_all()
    yield broker
    # A message a stopped worker still held (one a failed test never joined, or a delayed one
    # waiting for its eta) stays unfinished in its queue forever, and every later ``join`` on
    # that queue would hang: later tests get fresh queues instead.
    for queue_name in broker.queues:
        broker.queues[queue_name] = Queue()
    broker.middleware[:] = [
        middleware
        for middleware in broker.middleware
        if type(middleware).__name__ != "_WorkerMiddleware"
    ]


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[dramatiq.Worker]:
    worker = dramatiq.Worker(stub_broker, worker_timeout=50, worker_threads=2)
    worker.start()
    yield worker
    worker.stop()


class Sinks:
    """The SMTP and HTTP sinks a test's notifications go to."""

    def __init__(self, directory: Path) -> None:
        self.mail_path = directory / "mail.jsonl"
        self.http_path = directory / "http.jsonl"

    def mail(self) -> list[dict[str, object]]:
        from app.local.sinks import read_records

        return read_records(self.mail_path)

    def http(self) -> list[dict[str, object]]:
        from app.local.sinks import read_records

        return read_records(self.http_path)


@pytest.fixture
def sinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sinks]:
    """A real SMTP sink and HTTP sink on free ports, with SMTP_URL and PUSH_URL pointing at them."""
    result = Sinks(tmp_path)
    smtp = SmtpSink(path=result.mail_path, port=free_port()).start()
    http = HttpSink(path=result.http_path, port=free_port()).start()
    monkeypatch.setenv("SMTP_URL", f"smtp://127.0.0.1:{smtp.port}")
    monkeypatch.setenv("PUSH_URL", f"http://127.0.0.1:{http.port}/push")
    actors.notifications._senders.cache_clear()
    yield result
    actors.notifications._senders.cache_clear()
    http.stop()
    smtp.stop()


@pytest.fixture
def user(database: Engine) -> User:
    """One active user with an email address and a push token."""
    with transaction() as session:
        user = User(email="ada@example.com", name="Ada", push_token="push-ada")
        session.add(user)
    return user
