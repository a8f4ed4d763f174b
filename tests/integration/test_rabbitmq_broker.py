"""fintask on RabbitMQ (``BROKER_URL=amqp://...``): a real worker process with the production
stack runs fintask's actors over Debian's rabbitmq-server, with Redis for the rest.

One RabbitMQ node and one worker for the module (the node boots in about 10 s). The kills, the
pause and two hosts on RabbitMQ are ``tests/reliability/test_rabbitmq_faults.py``'s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dramatiq import Message
from fastapi.testclient import TestClient

from app.db.migrate import upgrade
from app.local.ports import free_port
from app.local.rabbitmq_server import RabbitmqServer
from app.local.redis_server import RedisServer
from app.rabbitmq import FintaskRabbitmqBroker, check_connection
from app.redis_client import get_redis
from app.settings import CONFIGURATION_ERROR_EXIT, SettingsError
from app.web import create_app
from tests.support.processes import running, wait_until
from tests.support.rabbitmq_actors import QUEUE, RETRIES
from tests.support.rabbitmq_workers import (
    alive_workers,
    ended_at,
    fintask,
    fintask_json,
    rabbitmq_worker,
    rabbitmq_worker_env,
    runs,
    send,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def worker(
    rabbitmq_server: RabbitmqServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """A booted worker on the session's RabbitMQ and Redis; the servers' URLs."""
    redis_url = redis_server.url
    var_dir = tmp_path_factory.mktemp("rabbitmq-worker")
    env = rabbitmq_worker_env(redis_url, rabbitmq_server.url(), var_dir)
    client = redis.Redis.from_url(redis_url)
    with running(rabbitmq_worker(), env, Path(var_dir) / "worker.log") as process:
        wait_until(
            lambda: alive_workers(client, process.pid), timeout_s=120, what="the worker to boot"
        )
        yield {"REDIS_URL": redis_url, "BROKER_URL": rabbitmq_server.url()}
    client.close()


@pytest.fixture
def producer(rabbitmq_server: RabbitmqServer) -> Iterator[FintaskRabbitmqBroker]:
    broker = FintaskRabbitmqBroker(url=rabbitmq_server.url(), middleware=[])
    yield broker
    broker.close()


@pytest.fixture
def redis_of(worker: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(worker["REDIS_URL"])
    yield client
    client.close()


def test_a_message_runs_once_and_a_delayed_one_not_before_its_eta(worker, producer, redis_of):
    # Given a worker on RabbitMQ
    # When a message is sent, and another with a delay of two seconds
    plain = send(producer, "stamp")
    sent_at = time.time()
    delayed = send(producer, "stamp", delay_ms=2_000)

    # Then each runs once, the delayed one no sooner than its eta
    wait_until(lambda: ended_at(redis_of, delayed) is not None, timeout_s=60, what="both")
    wait_until(lambda: ended_at(redis_of, plain) is not None, timeout_s=60, what="the first")
    assert (runs(redis_of)[plain], runs(redis_of)[delayed]) == (1, 1)
    delayed_end = ended_at(redis_of, delayed)
    assert delayed_end is not None and delayed_end >= sent_at + 2


def test_a_failing_message_retries_then_is_a_dead_letter_that_fintask_queues_counts(
    worker, producer, redis_of
):
    # Given RabbitMQ's dead-letter queue of maintenance, maintenance.XQ
    dead_before = producer.message_counts(QUEUE)[2]

    # When a message fails on every run
    failing = send(producer, "always_fails")

    # Then it runs once and once more per retry, and is then a dead letter in maintenance.XQ,
    # which `fintask queues` counts
    wait_until(lambda: runs(redis_of).get(failing) == 1 + RETRIES, timeout_s=60, what="retries")
    wait_until(
        lambda: producer.message_counts(QUEUE)[2] == dead_before + 1,
        timeout_s=60,
        what="the dead letter",
    )
    assert runs(redis_of)[failing] == 1 + RETRIES
    listed = fintask_json("queues", **worker)["items"]
    assert next(q["dead"] for q in listed if q["queue_name"] == QUEUE) == dead_before + 1


def test_a_wrong_rabbitmq_password_stops_a_command_at_start_in_one_line(
    rabbitmq_server, redis_server
):
    wrong = rabbitmq_server.url(password="not-the-password")

    status, output = fintask("queues", REDIS_URL=redis_server.url, BROKER_URL=wrong)

    assert status == CONFIGURATION_ERROR_EXIT
    assert "not-the-password" not in output and rabbitmq_server.password not in output
    assert output.splitlines() == [
        f"configuration error: BROKER_URL='amqp://***@127.0.0.1:{rabbitmq_server.port}/%2F': "
        "RabbitMQ refused the user or password (amqp://USER:PASSWORD@HOST:PORT/VHOST)"
    ]


def test_an_unknown_virtual_host_is_named(rabbitmq_server):
    with pytest.raises(SettingsError) as refused:
        check_connection(rabbitmq_server.url(vhost="payments"))

    assert str(refused.value) == (
        f"BROKER_URL='amqp://***@127.0.0.1:{rabbitmq_server.port}/payments': RabbitMQ has no "
        "virtual host 'payments' that this user may use"
    )


def test_nothing_listening_is_named_with_the_cause():
    port = free_port()  # nothing listens there

    with pytest.raises(SettingsError) as refused:
        check_connection(f"amqp://fintask:hunter2@127.0.0.1:{port}/%2F")

    assert str(refused.value) == (
        f"BROKER_URL='amqp://***@127.0.0.1:{port}/%2F': RabbitMQ did not answer at "
        f"127.0.0.1:{port} (ConnectionRefusedError: [Errno 111] Connection refused): is it "
        "running?"
    )


def test_healthz_names_the_broker_when_the_messages_go_to_rabbitmq(
    rabbitmq_server, redis_server, monkeypatch, tmp_path
):
    # Given the web's settings: the messages on RabbitMQ, the rest on Redis
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'fintask.db'}")
    get_redis.cache_clear()
    client = TestClient(create_app())

    # When RabbitMQ answers, the broker is healthy
    monkeypatch.setenv("BROKER_URL", rabbitmq_server.url())
    up = client.get("/healthz")
    # And when nothing listens at BROKER_URL, the web says which dependency is down
    monkeypatch.setenv("BROKER_URL", f"amqp://fintask:hunter2@127.0.0.1:{free_port()}/%2F")
    down = client.get("/healthz")
    get_redis.cache_clear()

    assert (up.status_code, up.json()["broker"], up.json()["redis"]) == (200, "ok", "ok")
    assert (down.status_code, down.json()["broker"]) == (503, "error: unreachable")
    assert "hunter2" not in down.text


def test_purging_a_queue_on_rabbitmq_deletes_its_ready_messages_and_keeps_its_delayed_ones(
    rabbitmq_server, redis_server, producer, tmp_path
):
    # Given a queue no worker consumes, with three messages ready and one delayed
    queue = "digests"
    before = producer.message_counts(queue)
    for _ in range(3):
        producer.enqueue(Message(queue, "stamp", (), {}, {}))
    producer.enqueue(Message(queue, "stamp", (), {}, {}), delay=600_000)
    database_url = f"sqlite:///{tmp_path / 'audit.db'}"  # the operator's actions are audited
    upgrade(database_url)
    urls = {
        "REDIS_URL": redis_server.url,
        "BROKER_URL": rabbitmq_server.url(),
        "DATABASE_URL": database_url,
    }

    # When an operator purges it
    purged = fintask_json("queues", "purge", queue, "--yes", **urls)

    # Then the ready ones are gone, counted, and the delayed one waits for its eta
    assert purged == {"queue_name": queue, "purged": before[0] + 3}
    ready, delayed, _ = producer.message_counts(queue)
    assert (ready, delayed) == (0, before[1] + 1)
