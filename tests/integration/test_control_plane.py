"""The control plane end to end: real worker processes (the ``worker`` process type's stack) on
a real redis-server, driven through ``app.control.actions`` as the CLI and the API drive it,
with the audit trail in a migrated SQLite database."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from dramatiq import Message
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

import tests.support.control_actors  # noqa: F401  (declares the actors the operator names)
from app import control_state
from app.control import audit
from app.control.actions import Operator
from app.control.messages import find_message
from app.control.workers import WorkerView, list_workers
from app.db.migrate import upgrade
from app.wakeup_broker import WakeupRedisBroker
from chunking import Batches
from pipelines.batches import BATCHES
from tests.support.control_actors import ENDED_KEY, QUEUE, RELEASE_KEY, STARTED_KEY, STARTS_KEY
from tests.support.processes import running, wait_until
from tests.support.recovery import counts, unacked, worker_env, worker_process

pytestmark = pytest.mark.integration

MODULES = ("actors", "tests.support.control_actors")
HOUR_MS = 3_600_000


@pytest.fixture
def operator(redis_url: str, client: redis.Redis, tmp_path: Path) -> Iterator[Operator]:
    """An operator acting on the test's Redis, auditing into a migrated SQLite database."""
    import dramatiq

    url = f"sqlite:///{tmp_path / 'control.db'}"
    upgrade(url)
    engine = create_engine(url)
    with Session(engine) as session:
        batches = Batches(client=client, prefix=BATCHES.prefix)
        yield Operator("test:operator", session, client, dramatiq.get_broker(), batches)
    engine.dispose()


@pytest.fixture
def producer(redis_url: str) -> Iterator[WakeupRedisBroker]:
    broker = WakeupRedisBroker(url=redis_url, middleware=[])
    broker.declare_queue(QUEUE)
    yield broker
    broker.client.close()


def send(
    producer: WakeupRedisBroker, actor: str, delay_ms: int | None = None, **kwargs: object
) -> str:
    return producer.enqueue(Message(QUEUE, actor, (), kwargs, {}), delay=delay_ms).message_id


def start_worker(redis_url: str, tmp_path: Path, name: str, *, threads: int = 2, prefetch: int = 4):
    env = worker_env(redis_url, tmp_path / name, prefetch=prefetch)
    command = worker_process(threads=threads, modules=MODULES, queue=QUEUE)
    return running(command, env, tmp_path / f"{name}.log")


def alive(client: redis.Redis) -> list[WorkerView]:
    return [w for w in list_workers(client, [QUEUE]) if w.state == "alive"]


def obeying(client: redis.Redis, version: int) -> bool:
    """Every alive worker published a record obeying control state ``version`` or later."""
    workers = alive(client)
    return bool(workers) and all(w.record["control_version"] >= version for w in workers)


def started(client: redis.Redis) -> dict[str, int]:
    return counts(client, STARTED_KEY)


def test_a_worker_shows_what_it_runs_and_once_killed_what_it_left_for_recovery(
    redis_url, client, tmp_path, producer
):
    with start_worker(redis_url, tmp_path, "w", threads=2, prefetch=4) as worker:
        wait_until(lambda: alive(client), timeout_s=60, what="the worker's record")
        holds = [send(producer, "hold"), send(producer, "hold")]
        waiting = send(producer, "quick")
        wait_until(
            lambda: (
                {r["message_id"] for w in alive(client) for r in w.record["running"]} == set(holds)
            ),
            what="the record to show both running messages",
        )
        (view,) = alive(client)
        shown = view.as_dict()
        assert os.getpgid(shown["pid"]) == worker.pid
        assert (shown["process_type"], shown["queues"]) == ("worker", [QUEUE])
        assert (shown["threads"], shown["prefetch"]) == (2, 4)
        assert shown["unacked"] == {QUEUE: 3}
        assert shown["waiting_for_recovery"] == 0

        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    wait_until(
        lambda: [w.state for w in list_workers(client, [QUEUE])] == ["gone"],
        timeout_s=60,
        what="the killed worker to show as gone",
    )
    (gone,) = list_workers(client, [QUEUE])
    assert gone.as_dict()["waiting_for_recovery"] == 3
    assert gone.as_dict()["heartbeat_at"] is not None
    assert waiting not in started(client)


def test_a_paused_queue_starts_nothing_until_resumed_and_still_takes_messages(
    redis_url, client, tmp_path, producer, operator
):
    sent: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.wait(0.02):
            sent.append(send(producer, "quick"))

    with start_worker(redis_url, tmp_path, "w", threads=2, prefetch=4):
        wait_until(lambda: alive(client), timeout_s=60, what="the worker's record")
        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            wait_until(lambda: len(started(client)) >= 10, what="traffic to run")

            assert operator.pause_queue(QUEUE) is True
            version = control_state.read_version(client)
            wait_until(lambda: obeying(client, version), what="the worker to obey the pause")
            before = sum(started(client).values())
            sent_before = len(sent)
            time.sleep(3)  # an observation window: nothing may start in it, however slow
            assert sum(started(client).values()) == before
            assert len(sent) > sent_before  # sends are still accepted...
            assert client.llen(f"dramatiq:{QUEUE}") > 0  # ...and wait in the queue

            assert operator.resume_queue(QUEUE) is True
        finally:
            stop.set()
            sender.join()
        wait_until(
            lambda: set(started(client)) == set(sent), timeout_s=120, what="every message to run"
        )
    assert set(started(client).values()) == {1}
    events, _ = audit.list_events(operator.session, cursor=None)
    assert [(e.action, e.target) for e in events][:2] == [
        ("queue.resume", QUEUE),
        ("queue.pause", QUEUE),
    ]


def test_cancelling_a_delayed_message_and_two_running_ones(
    redis_url, client, tmp_path, producer, operator
):
    with start_worker(redis_url, tmp_path, "w", threads=2, prefetch=4):
        wait_until(lambda: alive(client), timeout_s=60, what="the worker's record")
        due_at = time.time() + 4
        delayed = send(producer, "quick", delay_ms=4_000)
        cooperative = send(producer, "hold", cooperative=True)
        stubborn = send(producer, "hold", cooperative=False)
        wait_until(lambda: {cooperative, stubborn} <= set(started(client)), what="both to run")

        assert operator.cancel(delayed).state in {"delayed", "held"}
        assert operator.cancel(cooperative, mode="soft").revoked
        assert operator.cancel(stubborn, mode="hard").revoked

        wait_until(
            lambda: ended(client) == {cooperative: "revoked", stubborn: "revoked"},
            what="both running messages to stop as revoked",
        )
        wait_until(lambda: time.time() > due_at + 2, what="the delayed message's eta")
        wait_until(lambda: nothing_left(client), what="nothing left to run")
    assert started(client) == {cooperative: 1, stubborn: 1}  # no retry, no delayed run
    assert client.zcard(f"dramatiq:{QUEUE}.XQ") == 0
    assert not client.exists(RELEASE_KEY)
    events, _ = audit.list_events(operator.session, cursor=None, action="message.cancel")
    assert {e.target for e in events} == {delayed, cooperative, stubborn}


def test_run_now_of_a_delayed_message_its_worker_holds_runs_it_once_long_before_its_eta(
    redis_url, client, tmp_path, producer, operator
):
    with start_worker(redis_url, tmp_path, "w"):
        wait_until(lambda: alive(client), timeout_s=60, what="the worker's record")
        eta_us = redis_now_us(client) + HOUR_MS * 1000
        delayed = send(producer, "quick", delay_ms=HOUR_MS)
        wait_until(lambda: held_until_eta(client, delayed), what="the worker to hold it")

        moved = operator.run_now(delayed)

        assert (moved.was, moved.released) == ("held", True)
        wait_until(lambda: started(client), what="the released message to run")
        wait_until(lambda: nothing_left(client), what="nothing of it left to run")
    (start_us,) = (int(stamp) for stamp in client.lrange(STARTS_KEY, 0, -1))
    assert started(client) == {delayed: 1}
    assert start_us < eta_us - HOUR_MS * 1000 // 2  # in the first half of its delay
    assert client.hlen(f"dramatiq:{QUEUE}.DQ.msgs") == 0


def test_run_now_asked_while_its_holder_is_dead_is_done_by_the_worker_that_recovers_it(
    redis_url, client, tmp_path, producer, operator
):
    with start_worker(redis_url, tmp_path, "first") as first:
        wait_until(lambda: alive(client), timeout_s=60, what="the first worker's record")
        delayed = send(producer, "quick", delay_ms=HOUR_MS)
        wait_until(lambda: held_until_eta(client, delayed), what="the first worker to hold it")
        holder = find_message(client, [QUEUE], delayed).worker_id
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # Its heartbeat made older than the heartbeat timeout, as if 60 s had passed: recovery may
    # return the message at once.
    client.zadd("dramatiq:__heartbeats__", {holder: 0})

    moved = operator.run_now(delayed)  # still in the dead worker's ack set: no one holds it

    assert (moved.was, moved.released) == ("held", True)
    with start_worker(redis_url, tmp_path, "second"):
        wait_until(lambda: started(client), timeout_s=60, what="the recovered message to run")
        wait_until(lambda: nothing_left(client), what="nothing of it left to run")
    assert started(client) == {delayed: 1}
    # The request stays until an hour past the eta, harmless: no copy with its Redis id is left.
    assert control_state.read_state(client).released == {moved.redis_id}
    assert client.hlen(f"dramatiq:{QUEUE}.DQ.msgs") == 0


def test_a_runtime_rate_limit_replaces_the_declared_one_until_cleared(
    redis_url, client, tmp_path, producer, operator
):
    with start_worker(redis_url, tmp_path, "w", threads=8, prefetch=16):
        wait_until(lambda: alive(client), timeout_s=60, what="the worker's record")
        view = operator.set_rate_limit("limited", "20/s")
        assert (view.declared, view.effective) == ("2/s", "20/s")
        version = control_state.read_version(client)
        wait_until(lambda: obeying(client, version), what="the worker to obey the override")

        faster = [send(producer, "limited") for _ in range(40)]
        wait_until(lambda: set(faster) <= set(started(client)), timeout_s=120, what="40 starts")
        spans = _starts_span_s(client)
        client.delete(STARTS_KEY)

        assert operator.clear_rate_limit("limited") is True
        version = control_state.read_version(client)
        wait_until(lambda: obeying(client, version), what="the worker to obey the clear")
        slower = [send(producer, "limited") for _ in range(6)]
        wait_until(lambda: set(slower) <= set(started(client)), timeout_s=120, what="6 starts")
        declared_span = _starts_span_s(client)

    # 20/s: 40 starts at least 50 ms apart, and far sooner than 2/s would allow (19.5 s)
    assert 39 * 0.05 * 0.95 <= spans < 39 * 0.5 / 2
    # back to the declared 2/s: 6 starts at least 500 ms apart
    assert declared_span >= 5 * 0.5 * 0.95


def held_until_eta(client: redis.Redis, message_id: str) -> bool:
    """Whether a worker's delay consumer holds ``message_id`` in memory until its eta."""
    view = find_message(client, [QUEUE], message_id)
    return view is not None and view.state == "held" and view.eta_ms is not None


def nothing_left(client: redis.Redis) -> bool:
    """No message of ``QUEUE`` waits in its lists or in a worker's ack sets."""
    return (
        unacked(client, QUEUE) == unacked(client, f"{QUEUE}.DQ") == 0
        and client.llen(f"dramatiq:{QUEUE}") == client.llen(f"dramatiq:{QUEUE}.DQ") == 0
    )


def redis_now_us(client: redis.Redis) -> int:
    """Now on Redis's clock, the clock the actors stamp their starts with."""
    seconds, micros = client.time()
    return int(seconds) * 1_000_000 + int(micros)


def ended(client: redis.Redis) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in client.hgetall(ENDED_KEY).items()}


def _starts_span_s(client: redis.Redis) -> float:
    stamps = sorted(int(s) for s in client.lrange(STARTS_KEY, 0, -1))
    return (stamps[-1] - stamps[0]) / 1_000_000
