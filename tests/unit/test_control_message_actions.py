"""What an operator does to single messages (``app.control.actions.Operator``): requeue and
delete a dead letter, run a delayed message now, and the same on a page's selection, each
checked in the test's own Redis and in the audit trail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import Engine

from app import control_state
from app.cli.main import main
from app.control import audit
from app.control.actions import Operator, UnknownTarget, WrongState
from app.db.session import new_session
from app.dead_letters import reason_key, runnable_message
from app.middleware.metrics import DUE_AT_OPTION
from pipelines.batches import BATCHES
from tests.unit.test_control_api import (
    LATER_MS,
    QUEUE,
    audited,
    dead_letter,
    hold,
    send,
)

WHO = "token:ops"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite alone: what matters here is Redis and the audit rows."""
    return f"sqlite:///{tmp_path / 'fintask.db'}"


@pytest.fixture
def operator(database: Engine, redis_env: str, client: redis.Redis) -> Iterator[Operator]:
    with new_session() as session:
        yield Operator(WHO, session, client, dramatiq.get_broker(), BATCHES)


def redis_id(message: dramatiq.Message) -> str:
    return str(message.options["redis_message_id"])


def dead_ids(client: redis.Redis) -> list[bytes]:
    return list(client.zrange(f"dramatiq:{QUEUE}.XQ", 0, -1))


def test_a_requeued_dead_letter_is_back_in_its_ready_queue_once_and_gone_from_the_dead(
    operator, redis_env, client
):
    dead = dead_letter(redis_env, ValueError("declined"))

    moved = operator.requeue(dead.message_id)

    assert (moved.message_id, moved.was, moved.now) == (dead.message_id, "dead", "ready")
    assert client.lrange(f"dramatiq:{QUEUE}", 0, -1) == [redis_id(dead).encode()]
    assert dead_ids(client) == []
    assert client.exists(reason_key(QUEUE, redis_id(dead))) == 0
    assert audited("message.requeue") == [(WHO, dead.message_id, 1)]
    with pytest.raises(UnknownTarget, match="no message gone-already is in any queue"):
        operator.requeue("gone-already")
    with pytest.raises(WrongState, match="is ready, not a dead letter"):
        operator.requeue(dead.message_id)
    assert client.llen(f"dramatiq:{QUEUE}") == 1
    assert len(audited("message.requeue")) == 1


def test_deleting_a_dead_letter_removes_it_and_its_reason_and_only_dead_letters(
    operator, redis_env, client
):
    dead = dead_letter(redis_env, ValueError("declined"))
    ready = send(redis_env)

    moved = operator.delete_dead(redis_id(dead))

    assert (moved.was, moved.now) == ("dead", None)
    assert dead_ids(client) == []
    assert client.hlen(f"dramatiq:{QUEUE}.XQ.msgs") == 0
    assert client.exists(reason_key(QUEUE, redis_id(dead))) == 0
    assert audited("message.delete") == [(WHO, dead.message_id, 1)]
    with pytest.raises(WrongState, match="cancel it to remove it without running"):
        operator.delete_dead(ready.message_id)
    with pytest.raises(UnknownTarget):
        operator.delete_dead(dead.message_id)


@pytest.mark.parametrize("retries", [0, 2], ids=["delayed", "retrying"])
def test_run_now_moves_a_delayed_message_to_the_head_of_its_queue_with_its_ids(
    operator, redis_env, client, retries
):
    waiting = send(redis_env)
    delayed = send(redis_env, options={"retries": retries}, delay_ms=LATER_MS)
    tokens = client.llen(f"dramatiq:{QUEUE}.wake")

    moved = operator.run_now(delayed.message_id)

    assert (moved.message_id, moved.now) == (delayed.message_id, "ready")
    assert moved.was == ("retrying" if retries else "delayed")
    assert client.llen(f"dramatiq:{QUEUE}.DQ") == client.hlen(f"dramatiq:{QUEUE}.DQ.msgs") == 0
    assert client.lrange(f"dramatiq:{QUEUE}", 0, -1) == [
        redis_id(delayed).encode(),
        redis_id(waiting).encode(),
    ]
    payload = client.hget(f"dramatiq:{QUEUE}.msgs", redis_id(delayed))
    ready = runnable_message(dramatiq.get_broker(), payload, QUEUE)
    assert not isinstance(ready, str), ready  # a consumer of the queue runs it as it is
    assert ready.message_id == delayed.message_id
    assert "eta" not in ready.options
    assert ready.options[DUE_AT_OPTION] < delayed.options["eta"]
    assert ready.options.get("retries", 0) == retries
    assert client.llen(f"dramatiq:{QUEUE}.wake") == tokens + 1  # a blocked consumer wakes
    assert audited("message.run_now") == [(WHO, delayed.message_id, 1)]


def test_run_now_asks_the_worker_holding_a_delayed_message_to_release_it(
    operator, redis_env, client
):
    delayed = send(redis_env, delay_ms=LATER_MS)
    worker = hold(redis_env, delayed=True)

    moved = operator.run_now(delayed.message_id)

    assert (moved.message_id, moved.was, moved.now) == (delayed.message_id, "held", "held")
    assert moved.released
    assert control_state.read_state(client).released == {redis_id(delayed)}
    kept_until = delayed.options["eta"] + control_state.RELEASE_KEPT_MS
    assert client.zscore(control_state.RELEASED_KEY, redis_id(delayed)) == kept_until
    # left where it is: its worker enqueues it, so no second copy is made here
    assert client.smembers(f"dramatiq:__acks__.{worker}.{QUEUE}.DQ") == {redis_id(delayed).encode()}
    assert client.llen(f"dramatiq:{QUEUE}") == 0
    (event,), _ = audit.list_events(operator.session, cursor=None, action="message.run_now")
    assert (event.target, event.count) == (delayed.message_id, 1)
    assert event.detail["how"] == "released by its worker"


def test_run_now_names_what_to_do_for_a_ready_running_or_dead_message(operator, redis_env):
    dead = dead_letter(redis_env, ValueError("declined"))
    running = send(redis_env)
    worker = hold(redis_env)
    ready = send(redis_env)

    with pytest.raises(WrongState, match="is ready already"):
        operator.run_now(ready.message_id)
    with pytest.raises(WrongState, match=f"held by worker {worker}, .*: it is running or about"):
        operator.run_now(running.message_id)
    with pytest.raises(WrongState, match="is a dead letter: requeue it"):
        operator.run_now(dead.message_id)
    with pytest.raises(UnknownTarget, match="no message nope"):
        operator.run_now("nope")
    assert control_state.read_state(operator.client).released == frozenset()


def test_a_selection_is_acted_on_once_each_and_what_was_gone_is_counted(
    operator, redis_env, client
):
    first = dead_letter(redis_env, ValueError("one"))
    second = dead_letter(redis_env, ValueError("two"))
    selected = [redis_id(first), redis_id(second), redis_id(first), "gone-already"]

    outcome = operator.requeue_many(QUEUE, selected)

    assert (outcome.asked, outcome.done, outcome.gone, outcome.refused) == (3, 2, 1, 0)
    assert client.llen(f"dramatiq:{QUEUE}") == 2
    assert dead_ids(client) == []
    assert sorted(audited("message.requeue")) == sorted(
        [(WHO, first.message_id, 1), (WHO, second.message_id, 1)]
    )


def test_cancelling_a_selection_removes_the_waiting_and_refuses_dead_letters(
    operator, redis_env, client
):
    dead = dead_letter(redis_env, ValueError("one"))
    ready = [send(redis_env) for _ in range(2)]

    cancelled = operator.cancel_many(QUEUE, [redis_id(m) for m in [*ready, dead]])
    deleted = operator.delete_dead_many(QUEUE, [redis_id(dead), redis_id(ready[0])])

    assert (cancelled.done, cancelled.gone, cancelled.refused) == (2, 0, 1)
    assert client.llen(f"dramatiq:{QUEUE}") == 0
    assert (deleted.done, deleted.gone) == (1, 1)
    assert dead_ids(client) == []
    assert {target for _, target, _ in audited("message.cancel")} == {m.message_id for m in ready}
    assert audited("message.delete") == [(WHO, dead.message_id, 1)]


def test_an_unknown_queue_is_refused_before_anything_is_read(operator):
    with pytest.raises(UnknownTarget, match="'nope' is not a queue of fintask"):
        operator.requeue_many("nope", ["x"])


def test_a_requeued_message_starts_its_life_again(operator, redis_env, client):
    dead = dead_letter(redis_env, ValueError("declined"), options={"retries": 3})

    operator.requeue(dead.message_id)

    queued = json.loads(client.hget(f"dramatiq:{QUEUE}.msgs", redis_id(dead)))
    assert "retries" not in queued["options"]
    assert queued["options"]["dlq_requeues"] == 1


def test_the_cli_requeues_runs_now_and_deletes_as_the_operator_does(operator, redis_env, client):
    dead = dead_letter(redis_env, ValueError("declined"))
    delayed = send(redis_env, delay_ms=LATER_MS)

    def fintask(*args: str):
        return CliRunner().invoke(main, ["messages", *args])

    requeued = fintask("requeue", dead.message_id, "--json")
    ran = fintask("run-now", delayed.message_id)
    refused = fintask("delete", delayed.message_id)
    filtered = fintask("list", "--queue", QUEUE, "--actor", "nope", "--json")
    held = send(redis_env, delay_ms=LATER_MS)
    hold(redis_env, delayed=True)
    released = fintask("run-now", held.message_id)

    assert requeued.exit_code == 0, requeued.output
    assert json.loads(requeued.output)["state"] == "ready"
    assert (
        ran.output.strip() == f"{delayed.message_id} (delayed in {QUEUE}): moved to its ready queue"
    )
    assert released.output.strip() == (
        f"{held.message_id} (held in {QUEUE}): its worker releases it to its ready queue within "
        "about 2 s"
    )
    assert refused.exit_code == 1
    assert "is ready, not a dead letter: cancel it" in refused.output
    assert json.loads(filtered.output)["scanned"] == 2
    assert client.llen(f"dramatiq:{QUEUE}") == 2
    assert [who.startswith("cli:") for who, _, _ in audited("message.run_now")] == [True, True]
