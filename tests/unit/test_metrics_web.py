"""The web process's /metrics: broker-wide gauges read from Redis and the database."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.db.models import Job, OutboxMessage, ProviderAccount
from app.db.session import transaction
from app.local.ports import free_port
from app.middleware.metrics import CONSUMERS_KEY
from app.outbox import RELAY_GRACE, relay
from app.redis_client import get_redis
from app.web import create_app
from chunking.models import ChunkRun
from chunking.models import metadata as chunking_metadata

pytest_plugins = ["tests.support.inspection_fixtures"]


def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = TestClient(create_app()).get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, tuple(sorted(labels.items()))))


def test_queue_gauges_show_depth_dead_letters_and_the_oldest_message_age(
    dead_letters, database, redis_url
):
    dead_letters.make("maintenance")
    producer = RedisBroker(url=redis_url, middleware=[])
    producer.declare_queue("fraud")
    old = Message("fraud", "check_new_account", (), {"account_id": 1}, {})
    producer.enqueue(old.copy(message_timestamp=current_millis() - 300_000))

    samples = scrape()

    assert value(samples, "fintask_queue_messages", queue_name="maintenance", state="dead") == 1
    assert value(samples, "fintask_queue_messages", queue_name="fraud", state="ready") == 1
    assert value(samples, "fintask_queue_oldest_message_age_seconds", queue_name="fraud") >= 300
    assert value(samples, "fintask_queue_oldest_message_age_seconds", queue_name="emails") == 0
    assert value(samples, "fintask_metrics_source_up", source="broker") == 1
    producer.close()


def test_only_registered_consumers_with_a_fresh_heartbeat_are_alive(inspected_redis, database):
    now = current_millis()
    inspected_redis.zadd("dramatiq:__heartbeats__", {"worker-1": now, "web-1": now, "gone": 0})
    entry = json.dumps({"booted_at_ms": now})
    inspected_redis.hset(CONSUMERS_KEY, mapping={"worker-1": entry, "gone": entry})

    assert value(scrape(), "fintask_consumers_alive") == 1


def test_job_states_count_every_status(inspected_redis, user):
    with transaction() as session:
        account = ProviderAccount(user_id=user.id, provider="sandbox", external_id="acc-1")
        session.add(account)
        session.flush()
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
        for status in ("polling", "done", "done"):
            session.add(
                Job(
                    id=str(uuid.uuid4()),
                    kind="refresh",
                    account_id=account.id,
                    status=status,
                    deadline_at=deadline,
                )
            )

    samples = scrape()

    assert value(samples, "fintask_jobs", status="done") == 2
    assert value(samples, "fintask_jobs", status="polling") == 1
    assert value(samples, "fintask_jobs", status="failed") == 0
    assert value(samples, "fintask_metrics_source_up", source="database") == 1


def test_run_series_are_absent_until_the_runs_table_exists(inspected_redis, database):
    before = scrape()
    chunking_metadata.create_all(database)
    with transaction() as session:
        session.add_all(
            [
                ChunkRun(name="weekly_report", status="running", processed=40, estimated_total=100),
                ChunkRun(name="weekly_report", status="paused", processed=10, estimated_total=50),
                ChunkRun(name="weekly_report", status="done", processed=70, estimated_total=70),
            ]
        )

    after = scrape()

    assert not any(name.startswith("fintask_run") for name, _ in before)
    assert value(after, "fintask_runs", name="weekly_report", status="done") == 1
    assert value(after, "fintask_run_items_processed", name="weekly_report") == 50
    assert value(after, "fintask_run_items_estimated", name="weekly_report") == 150
    chunking_metadata.drop_all(database)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unreachable_redis_leaves_the_database_gauges_and_says_so(database, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_redis.cache_clear()

    samples = scrape()
    get_redis.cache_clear()

    assert value(samples, "fintask_metrics_source_up", source="broker") == 0
    assert value(samples, "fintask_metrics_source_up", source="database") == 1
    assert value(samples, "fintask_jobs", status="queued") == 0
    assert not any(name == "fintask_queue_messages" for name, _ in samples)


def test_outbox_gauges_count_waiting_and_failed_messages(inspected_redis, database, stub_broker):
    # Given a row committed a moment ago, one a dead process left, and one that cannot be sent
    long_ago = dt.datetime.now(dt.UTC) - RELAY_GRACE - dt.timedelta(seconds=1)
    rows = [
        ("check_new_account", "fraud", dt.datetime.now(dt.UTC)),
        ("check_new_account", "fraud", long_ago),
        ("retired_actor", None, long_ago),
    ]
    with transaction() as session:
        for actor_name, queue_name, created_at in rows:
            session.add(
                OutboxMessage(
                    message_id=str(uuid.uuid4()),
                    actor_name=actor_name,
                    queue_name=queue_name,
                    kwargs={"account_id": 1},
                    created_at=created_at,
                )
            )
    before = scrape()

    # When the relay has run
    relay(database)
    after = scrape()

    # Then the gauges show what waits and what failed
    assert value(before, "fintask_outbox_unsent_messages") == 3
    assert value(before, "fintask_outbox_failed_messages") == 0
    assert value(after, "fintask_outbox_unsent_messages") == 1
    assert value(after, "fintask_outbox_failed_messages") == 1
