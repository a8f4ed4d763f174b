"""RabbitMQ as the broker, without a node: ``BROKER_URL`` and ``FINTASK_HOSTNAME`` checked at
start, worker ids apart across hosts, and every face of a Redis-only feature (the API, the CLI)
saying so in words instead of a 500 or a traceback.

The process's broker is swapped for a ``FintaskRabbitmqBroker`` that never connects: the
features refuse before they would talk to RabbitMQ or read a Redis queue key.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import dramatiq.broker
import pytest
from click.testing import CliRunner
from dramatiq.brokers.stub import StubBroker

from app.cli.main import main
from app.middleware.fleet import worker_id
from app.rabbitmq import FintaskRabbitmqBroker
from app.settings import SettingsError, load_settings
from tests.unit.test_control_api import api, token  # noqa: F401  (api: a fixture)

PASSWORD = "hunter2"
REFUSAL = (
    "reads Dramatiq's Redis queue keys, and this fintask runs on RabbitMQ (BROKER_URL=amqp://...): "
    "look at the queues with RabbitMQ's own tools (rabbitmqctl list_queues, the management UI); "
    "`fintask queues` counts them"
)


@pytest.fixture
def on_rabbitmq(monkeypatch: pytest.MonkeyPatch) -> Iterator[FintaskRabbitmqBroker]:
    """This process's broker is RabbitMQ (one never reached), with fintask's queues declared."""
    stub = dramatiq.get_broker()
    assert isinstance(stub, StubBroker)
    rabbitmq = FintaskRabbitmqBroker(url=f"amqp://u:{PASSWORD}@127.0.0.1:9/%2F", middleware=[])
    for queue_name in stub.get_declared_queues():
        rabbitmq.declare_queue(queue_name)
    monkeypatch.setattr(dramatiq.broker, "global_broker", rabbitmq)
    yield rabbitmq


def test_broker_url_takes_amqp_and_names_a_wrong_scheme_without_the_password():
    assert load_settings({"BROKER_URL": "amqps://u:p@mq.internal:5671/prod"}).rabbitmq_url == (
        "amqps://u:p@mq.internal:5671/prod"
    )
    with pytest.raises(SettingsError) as refused:
        load_settings({"BROKER_URL": f"rabbitmq://u:{PASSWORD}@mq.internal/prod"})

    assert str(refused.value) == (
        "BROKER_URL='rabbitmq://***@mq.internal/prod': the scheme must be one of amqp://, "
        "amqps://, stub://"
    )


def test_settings_never_show_the_broker_password():
    settings = load_settings({"BROKER_URL": f"amqp://u:{PASSWORD}@mq.internal:5672/prod"})

    assert PASSWORD not in repr(settings)


def test_the_host_defaults_to_the_machines_name_and_a_bad_one_is_named():
    assert load_settings({}).hostname == socket.gethostname()
    assert load_settings({"FINTASK_HOSTNAME": "worker-7.eu-west-1"}).hostname == (
        "worker-7.eu-west-1"
    )
    with pytest.raises(SettingsError) as refused:
        load_settings({"FINTASK_HOSTNAME": "two words"})

    assert str(refused.value) == (
        "FINTASK_HOSTNAME='two words': expected a host name: letters, digits, '.', '-' and "
        "'_', at most 253"
    )


def test_worker_ids_on_rabbitmq_name_the_host_so_equal_pids_on_two_hosts_stay_apart(
    on_rabbitmq,
):
    # Two containers' first processes share a pid; their records must not overwrite each other.
    assert worker_id(on_rabbitmq, "host-a") != worker_id(on_rabbitmq, "host-b")
    assert worker_id(on_rabbitmq, "host-a").startswith("host-a:")


def test_fintask_dlq_on_rabbitmq_says_why_in_one_line(on_rabbitmq, redis_env):
    result = CliRunner().invoke(main, ["dlq", "list"])

    assert result.exit_code == 1
    assert result.output.splitlines() == [f"Error: the dead-letter list {REFUSAL}"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fintask.db'}"


@pytest.mark.parametrize(
    ("method", "path", "feature"),
    [
        ("get", "/api/queues/maintenance/messages", "browsing a queue's messages"),
        ("get", "/api/messages/m-1", "finding a message by id"),
        ("post", "/api/messages/m-1/cancel", "cancelling a message"),
        ("post", "/api/messages/m-1/run-now", "running a delayed message now"),
        ("post", "/api/messages/m-1/requeue", "the dead-letter list"),
    ],
)
def test_the_api_answers_a_redis_only_feature_on_rabbitmq_with_409_saying_why(
    api,  # noqa: F811  (the fixture imported above)
    on_rabbitmq,
    method,
    path,
    feature,
):
    answer = getattr(api, method)(path, headers=token("operator"))

    assert answer.status_code == 409
    assert answer.json()["detail"] == f"{feature} {REFUSAL}"
