"""Fixtures shared by every test: real servers on free loopback ports, started and stopped here.

Unit tests run actors on Dramatiq's StubBroker: ``BROKER_URL=stub://`` is set before anything
imports the broker, and ``BLOB_KEYS`` to a key made for the session. Integration tests start
their own redis-server and PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ["BROKER_URL"] = "stub://"
os.environ.pop("REDIS_URL", None)
os.environ.pop("DATABASE_URL", None)
os.environ.pop("SENTRY_DSN", None)

import pytest
import redis

from app.blob_crypto import new_key_entry
from app.broker import setup_broker
from app.local.rabbitmq_server import RabbitmqServer
from app.local.redis_server import RedisServer
from app.redis_client import get_redis
from tests.support.postgres import PostgresServer

# The raw blobs' key of this session, for its flows and the processes its tests start.
os.environ["BLOB_KEYS"] = new_key_entry("test")

# The test process's entry point: its broker is built here, as every process's is.
setup_broker()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server this test session started on a free port (never someone else's)."""
    with RedisServer(data_dir=tmp_path_factory.mktemp("redis"), persistent=False) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of the session's own Redis, emptied after each test (it is ours to flush)."""
    yield redis_server.url
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()


@pytest.fixture
def redis_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``REDIS_URL`` at the test session's own Redis, for code that reads it from settings
    (``app.redis_client.get_redis``, whose cached client is dropped before and after)."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_redis.cache_clear()
    yield redis_url
    get_redis.cache_clear()


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test's own Redis."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitmqServer]:
    """A RabbitMQ node this test session started (it boots in seconds: one for the session)."""
    with RabbitmqServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind fintask supports: SQLite in a file and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fintask.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")
