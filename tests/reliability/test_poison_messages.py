"""Poison messages pushed straight into Redis, between good ones, to a real consumer.

Each kind a consumer cannot run goes to the dead letters with a reason ``fintask dlq`` shows,
and the good messages of the same prefetched batch run once each, on the same consumer: it
neither restarts nor stalls.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
import pytest
from click.testing import CliRunner
from dramatiq import Message

from app.cli.main import main
from app.middleware.guardrails import SCHEMA_VERSION
from tests.support.processes import wait_until
from tests.support.workers import fintask_broker, push, worker_on

pytestmark = [pytest.mark.reliability, pytest.mark.quick]
pytest_plugins = ["tests.support.inspection_fixtures"]

#: A queue of fintask's, so that ``fintask dlq`` looks in it.
QUEUE = "maintenance"

POISON: dict[str, tuple[bytes, str]] = {
    "not JSON": (b"\x00\xff{not json", "its payload is not JSON"),
    "JSON, not a message": (b'{"hello": "world"}', "its payload is JSON but not a message"),
    "an unknown actor": (
        Message(QUEUE, "retired_actor", (), {}, {}).encode(),
        "this release has no actor 'retired_actor'",
    ),
    "arguments that do not bind": (
        Message(QUEUE, "tally", (1, 2), {}, {}).encode(),
        "its arguments do not fit tally(n, **kwargs): too many positional arguments",
    ),
    "a newer schema": (
        Message(QUEUE, "tally", (9,), {}, {"schema": SCHEMA_VERSION + 1}).encode(),
        f"its schema {SCHEMA_VERSION + 1} is newer than this release's {SCHEMA_VERSION}",
    ),
}


def fintask(*args: str) -> Any:
    return CliRunner().invoke(main, list(args))


def test_poison_is_dead_lettered_with_its_reason_and_its_neighbours_run(
    inspected_redis, redis_url, caplog
):
    client = inspected_redis
    broker = fintask_broker(redis_url)
    ran: list[int] = []

    def tally(n: int, **kwargs: Any) -> None:
        ran.append(n)

    dramatiq.actor(tally, broker=broker, queue_name=QUEUE)

    # Given good messages with each kind of poison between them, all in one prefetch batch,
    # and a poisoned delayed message
    kinds = list(POISON)
    good = list(range(len(kinds) + 1))
    bad: dict[str, str] = {}
    for n in good:
        push(client, QUEUE, Message(QUEUE, "tally", (n,), {}, {}).encode())
        if n < len(kinds):
            bad[kinds[n]] = push(client, QUEUE, POISON[kinds[n]][0])
    bad["delayed, not JSON"] = push(client, f"{QUEUE}.DQ", b"\x00delayed")
    expected = {kind: reason for kind, (_, reason) in POISON.items()}
    expected["delayed, not JSON"] = "its payload is not JSON"

    # When one worker consumes them
    with caplog.at_level(logging.WARNING), worker_on(broker, threads=2, prefetch=32):
        wait_until(lambda: sorted(ran) == good, what="every good message to run")
        wait_until(lambda: client.zcard(f"dramatiq:{QUEUE}.XQ") == len(bad), what="the poison")

    # Then each good message ran once, on a consumer that never restarted
    assert sorted(ran) == good
    assert "Restarting consumer" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.CRITICAL]
    # And each poison is a dead letter whose reason `fintask dlq show` prints
    for kind, redis_id in bad.items():
        shown = fintask("dlq", "show", redis_id)
        assert shown.exit_code == 0, (kind, shown.output)
        assert f"reason: {expected[kind]}" in shown.output, kind
    listed = fintask("dlq", "list", "--queue", QUEUE)
    assert listed.output.splitlines()[0].split()[-1] == "REASON"
    # And nothing is left behind in the queues or a worker's ack set
    assert client.hlen(f"dramatiq:{QUEUE}.msgs") == client.hlen(f"dramatiq:{QUEUE}.DQ.msgs") == 0
    assert not list(client.scan_iter("dramatiq:__acks__.*"))
    print(
        f"\npoison: {len(bad)} of {len(bad)} dead-lettered with their reason, "
        f"{len(good)} neighbours ran once, lost 0, consumer restarts 0"
    )


def test_dlq_show_prints_a_payload_that_is_not_a_message_as_it_is(inspected_redis, redis_url):
    client = inspected_redis
    broker = fintask_broker(redis_url)
    dramatiq.actor(lambda **kwargs: None, broker=broker, actor_name="noop", queue_name=QUEUE)

    # Given a payload that is not JSON, dead-lettered by a worker
    redis_id = push(client, QUEUE, b"<xml>not a message</xml>")
    with worker_on(broker, threads=1):
        wait_until(lambda: client.zcard(f"dramatiq:{QUEUE}.XQ") == 1, what="the dead letter")

    # When it is shown
    shown = fintask("dlq", "show", redis_id)
    as_json = fintask("dlq", "show", redis_id, "--json")

    # Then the operator reads why, and the payload as it was stored
    assert shown.exit_code == 0, shown.output
    assert "payload: <xml>not a message</xml>" in shown.output
    assert "message: {}" not in shown.output
    assert as_json.exit_code == 0, as_json.output
    assert '"reason": "its payload is not JSON' in as_json.output
