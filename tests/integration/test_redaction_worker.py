"""No e-mail address, card number or IBAN that an exception quotes leaves a real worker: not in
its log (text and JSON), not in the Sentry events its real sentry-sdk client posts, not in the
dead letters ``fintask dlq`` and the console show. Each place shows the placeholder instead.

One ``dramatiq`` worker process per log format runs the failing actors of
``tests.support.pii_actors`` once for the whole module, reporting to
``tests.support.fake_sentry``; every test reads what those two runs left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from dramatiq import Message

import tests.support.pii_actors  # noqa: F401  (declares the queue the CLI and console look at)
from app.cli.main import main
from app.db.migrate import upgrade
from app.db.session import reset_default_engine
from app.local.redis_server import RedisServer
from app.redis_client import get_redis
from app.wakeup_broker import WakeupRedisBroker
from tests.support.console import signed_in
from tests.support.fake_sentry import FakeSentry, fake_sentry
from tests.support.pii_actors import LEAKS, QUEUE, Leak
from tests.support.processes import dramatiq_worker, fintask_env, running, wait_until

pytestmark = pytest.mark.integration

FORMATS = ("text", "json")


@dataclass(frozen=True)
class Runs:
    """What the two workers left: each one's log, the message each actor got in each run (by
    format), and the Sentry that heard them."""

    logs: dict[str, str]
    sent: dict[str, dict[str, str]]
    sentry: FakeSentry

    def message_ids(self) -> list[tuple[Leak, str]]:
        return [(leak, ids[leak.actor_name]) for ids in self.sent.values() for leak in LEAKS]


@pytest.fixture(scope="module")
def runs(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    client = redis.Redis.from_url(redis_server.url)
    producer = WakeupRedisBroker(url=redis_server.url, middleware=[])
    producer.declare_queue(QUEUE)
    logs: dict[str, str] = {}
    sent: dict[str, dict[str, str]] = {}
    with fake_sentry() as sentry:
        for log_format in FORMATS:
            directory = tmp_path_factory.mktemp(f"worker-{log_format}")
            env = fintask_env(
                REDIS_URL=redis_server.url,
                FINTASK_VAR_DIR=str(directory),
                LOG_FORMAT=log_format,
                SENTRY_DSN=sentry.dsn,
                NO_PROXY="127.0.0.1,localhost",
            )
            command = dramatiq_worker(QUEUE, threads=1, modules=("tests.support.pii_actors",))
            with running(command, env, directory / "worker.log"):
                sent[log_format] = {
                    leak.actor_name: _send(producer, leak.actor_name) for leak in LEAKS
                }
                _wait_for_the_failures(client, sentry, sent)
            logs[log_format] = (directory / "worker.log").read_text()
        yield Runs(logs, sent, sentry)
    producer.client.close()
    client.flushdb()
    client.close()


def _send(producer: WakeupRedisBroker, actor_name: str) -> str:
    return producer.enqueue(Message(QUEUE, actor_name, (), {}, {})).message_id


def _wait_for_the_failures(
    client: redis.Redis, sentry: FakeSentry, sent: dict[str, dict[str, str]]
) -> None:
    """Until every message sent so far is a dead letter, and each of its runs a Sentry event."""
    ids = [(leak, by_actor[leak.actor_name]) for by_actor in sent.values() for leak in LEAKS]
    wait_until(lambda: client.zcard(f"dramatiq:{QUEUE}.XQ") == len(ids), what="the dead letters")
    wait_until(
        lambda: all(len(sentry.events_for(i)) >= leak.runs for leak, i in ids),
        timeout_s=60,
        what="a Sentry event per run",
    )


def assert_redacted(text: str, leaks: tuple[Leak, ...] = LEAKS) -> None:
    """None of the leaks' data is in ``text``, and each one's placeholder is."""
    for leak in leaks:
        for written in leak.written:
            assert written not in text
        assert leak.placeholder in text, f"{leak.placeholder} is not in {text!r}"


def test_the_text_log_shows_placeholders_where_the_data_was(runs: Runs):
    log = runs.logs["text"]

    assert_redacted(log)
    assert "Mail to <email> bounced" in log  # a log argument
    assert "SendFailed: 550 5.1.1 <<email>>: no such user" in log  # Dramatiq's traceback


def test_the_json_log_shows_placeholders_and_keeps_the_message_ids(runs: Runs):
    log = runs.logs["json"]
    # The dramatiq master's own lines stay text: it never imports the broker module.
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]

    assert_redacted(log)
    for leak in LEAKS:
        message_id = runs.sent["json"][leak.actor_name]
        failures = [r for r in records if r.get("message_id") == message_id and "exception" in r]
        assert len(failures) == leak.runs
        assert all(leak.placeholder in r["exception"] for r in failures)
    assert any(r["message"] == "Mail to <email> bounced" for r in records)


def test_the_sentry_events_show_placeholders_where_the_data_was(runs: Runs):
    for leak, message_id in runs.message_ids():
        events = runs.sentry.events_for(message_id)
        assert len(events) == leak.runs
        for event in events:
            assert_redacted(json.dumps(event), (leak,))
            assert leak.placeholder in event["exception"]["values"][-1]["value"]
    bounced = runs.sentry.events_for(runs.sent["text"]["bounce"])[0]
    crumbs = [crumb["message"] for crumb in bounced["breadcrumbs"]["values"]]
    assert "Mail to <email> bounced" in crumbs
    every_byte_sent = b"".join(runs.sentry.raw).decode()
    assert_redacted(every_byte_sent)


@pytest.fixture
def operator_env(runs: Runs, redis_server: RedisServer, tmp_path: Path, monkeypatch):
    """The CLI's and the console's environment: the workers' Redis, a migrated database."""
    database_url = f"sqlite:///{tmp_path / 'fintask.db'}"
    upgrade(database_url)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    get_redis.cache_clear()
    reset_default_engine()
    yield
    get_redis.cache_clear()
    reset_default_engine()


def fintask(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_fintask_dlq_list_and_show_show_placeholders(runs: Runs, operator_env: None):
    listed = fintask("dlq", "list", "--queue", QUEUE)
    listed_json = json.loads(fintask("dlq", "list", "--queue", QUEUE, "--json"))

    leaks = {message_id: leak for leak, message_id in runs.message_ids()}
    assert_redacted(listed)
    assert {item["message_id"] for item in listed_json["items"]} == set(leaks)
    for item in listed_json["items"]:
        assert_redacted(item["reason"], (leaks[item["message_id"]],))
    for leak, message_id in runs.message_ids():
        shown = fintask("dlq", "show", message_id)
        details: dict[str, Any] = json.loads(fintask("dlq", "show", message_id, "--json"))
        assert_redacted(shown, (leak,))
        assert_redacted(json.dumps(details), (leak,))
        assert leak.placeholder in details["reason"]
        if leak.runs > 1:  # the traceback Dramatiq kept in the retried message's options
            assert leak.placeholder in details["message"]["options"]["traceback"]


def test_the_consoles_message_page_shows_placeholders(runs: Runs, operator_env: None):
    browser, _ = signed_in("viewer")

    for leak, message_id in runs.message_ids():
        page = browser.get(f"/console/messages/{message_id}")
        assert page.status_code == 200
        assert_redacted(unescape(page.text), (leak,))
