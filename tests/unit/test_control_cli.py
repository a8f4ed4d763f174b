"""The control plane from a shell: ``fintask workers``, ``messages``, ``queues pause|resume|
purge`` and ``limits``, on the test's own Redis and a SQLite database for the audit trail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from dramatiq import Message
from sqlalchemy import Engine

from app import control_state
from app.cli.main import main
from app.redis_client import get_redis
from app.wakeup_broker import WakeupRedisBroker
from tests.unit.test_control_api import QUEUE, an_actor_of


def fintask(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite alone: what matters here is Redis; the audit and token tables on PostgreSQL are
    tests/unit/test_control_audit_tokens.py's."""
    return f"sqlite:///{tmp_path / 'fintask.db'}"


@pytest.fixture
def stack(database: Engine, redis_env: str) -> str:
    return redis_env


def enqueue(redis_url: str, count: int, **kwargs: object) -> list[str]:
    producer = WakeupRedisBroker(url=redis_url, middleware=[])
    actor_name = an_actor_of(QUEUE)
    ids = [producer.enqueue(Message(QUEUE, actor_name, (), kwargs, {})).message_id
           for _ in range(count)]  # fmt: skip
    producer.client.close()
    return ids


def test_messages_list_pages_show_and_cancel(stack):
    sent = enqueue(stack, 3, user_id=7, email="ada@example.com")

    page = fintask("messages", "list", "--queue", QUEUE, "--limit", "2", "--json")
    assert page.exit_code == 0, page.output
    listed = json.loads(page.output)
    assert [m["message_id"] for m in listed["items"]] == sent[:2]
    assert listed["items"][0]["kwargs"] == {"user_id": 7, "email": "<str: 15 chars>"}
    table = fintask("messages", "list", "--queue", QUEUE, "--limit", "2")
    assert f"more: --cursor {listed['next_cursor']}" in table.output
    assert "ada@example.com" not in table.output

    shown = fintask("messages", "show", sent[2])
    assert "state: ready" in shown.output
    cancelled = fintask("messages", "cancel", sent[2])
    assert cancelled.output.strip() == f"removed and revoked {sent[2]} (it was ready)"
    again = fintask("messages", "cancel", sent[2])
    assert again.exit_code == 1
    assert f"no message {sent[2]}" in again.output


def test_cancel_matching_counts_first_and_cancels_with_yes(stack):
    enqueue(stack, 2, user_id=7)
    enqueue(stack, 1, user_id=8)
    actor_name = an_actor_of(QUEUE)

    counted = fintask("messages", "cancel-matching", actor_name, "--arg", "user_id=7")
    assert "2 messages of" in counted.output and "--yes" in counted.output
    done = fintask("messages", "cancel-matching", actor_name, "--arg", "user_id=7", "--yes")
    assert done.output.strip() == f"cancelled 2 messages of {actor_name}"
    bad = fintask("messages", "cancel-matching", actor_name, "--arg", "user_id")
    assert bad.exit_code == 2
    assert "is not NAME=VALUE" in bad.output


def test_a_queue_is_paused_resumed_and_purged(stack, client):
    enqueue(stack, 2)

    assert fintask("queues", "pause", QUEUE).output.strip() == f"{QUEUE}: paused"
    assert control_state.read_state(client).paused == {QUEUE}
    listed = json.loads(fintask("queues", "--json").output)["items"]
    assert next(q for q in listed if q["queue_name"] == QUEUE)["paused"] is True
    assert fintask("queues", "resume", QUEUE).output.strip() == f"{QUEUE}: resumed"
    unknown = fintask("queues", "pause", "nope")
    assert unknown.exit_code == 2
    assert "'nope' is not a queue of fintask" in unknown.output

    refused = CliRunner().invoke(main, ["queues", "purge", QUEUE], input="n\n")
    assert refused.exit_code == 1
    assert client.llen(f"dramatiq:{QUEUE}") == 2
    purged = fintask("queues", "purge", QUEUE, "--yes")
    assert purged.output.strip() == f"purged 2 ready messages of {QUEUE}"
    audit = json.loads(fintask("audit", "--json").output)["items"]
    assert [e["action"] for e in audit][:3] == ["queue.purge", "queue.resume", "queue.pause"]


def test_limits_are_listed_set_and_cleared(stack, client):
    actor_name = an_actor_of(QUEUE)

    assert fintask("limits", "set", actor_name, "3/m").exit_code == 0
    listed = json.loads(fintask("limits", "--json").output)["items"]
    assert {"actor_name": actor_name, "override": "3/m", "effective": "3/m"}.items() <= next(
        v for v in listed if v["actor_name"] == actor_name
    ).items()
    bad = fintask("limits", "set", actor_name, "fast")
    assert bad.exit_code == 2
    assert "is not a rate" in bad.output
    assert (
        fintask("limits", "clear", actor_name).output.strip() == f"{actor_name}: override removed"
    )
    assert control_state.read_state(client).limits == {}


def test_workers_says_when_none_has_published(stack):
    answer = fintask("workers")
    assert answer.exit_code == 0
    assert answer.output.strip() == "no worker has published a record in the last day"


def test_redis_not_answering_is_one_line_saying_what_to_do(database, monkeypatch):
    from app.local.ports import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_redis.cache_clear()
    for command in (["queues"], ["workers"], ["limits"], ["queues", "pause", QUEUE]):
        answer = fintask(*command)
        assert answer.exit_code == 1, (command, answer.output)
        assert answer.output.startswith("Error: Redis did not answer"), answer.output
        assert "Traceback" not in answer.output
    get_redis.cache_clear()
