"""The owned mutex, the Mutex middleware and unique enqueue, on Dramatiq's StubBroker with the
locks in the test's own Redis."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Worker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Middleware, default_middleware

from app.middleware import InvalidActorOption
from app.middleware.guardrails import SCHEMA_VERSION, Guardrails
from app.middleware.locks import (
    AlreadyPending,
    LockNotAcquired,
    Mutex,
    RedisMutex,
    UniqueEnqueue,
)
from tests.support.processes import wait_until

EXPLICIT: dict[str, Any] = {"max_retries": 0, "time_limit": 10_000, "max_age": 60_000}
#: Long enough that no lock here expires by the clock: a test expires or replaces it by hand.
TTL_MS = 60_000
#: The TTL of the renewal test, renewed every second: any PTTL at or below it comes from a renewal.
RENEWED_TTL_MS = 3_000


def stub_broker(client: redis.Redis, **mutex: Any) -> StubBroker:
    """fintask's order: UniqueEnqueue first, Dramatiq's defaults, CurrentMessage, Mutex."""
    stack: list[Middleware] = [UniqueEnqueue(client=client)]
    stack += [m() for m in default_middleware]
    return StubBroker(middleware=[*stack, CurrentMessage(), Mutex(client=client, **mutex)])


@contextmanager
def working(broker: StubBroker, threads: int = 2) -> Iterator[Worker]:
    worker = Worker(broker, worker_timeout=50, worker_threads=threads)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def current_options() -> dict[str, Any]:
    message = CurrentMessage.get_current_message()
    assert message is not None
    return dict(message.options)


# The owned mutex


def test_only_the_owner_releases_the_lock(client):
    owner = RedisMutex(client, "account:1", ttl_ms=TTL_MS)
    intruder = RedisMutex(client, "account:1", ttl_ms=TTL_MS)

    assert owner.acquire()
    assert not intruder.acquire()
    assert not intruder.release()
    assert client.get("fintask:lock:account:1") == owner.token.encode()
    assert owner.release()
    assert client.exists("fintask:lock:account:1") == 0


def test_the_lock_is_renewed_while_held_past_its_ttl(client):
    # Given a held lock whose expiry is pushed far out, to a PTTL no renewal would set
    owner = RedisMutex(client, "account:1", ttl_ms=RENEWED_TTL_MS)
    assert owner.acquire()
    key = "fintask:lock:account:1"
    started = time.monotonic()

    # Then, again and again until it has been held for longer than its TTL, the holder's
    # renewal brings the PTTL back to its TTL (no race: the lock cannot expire in between)
    renewals = 0
    while renewals < 2 or time.monotonic() - started <= RENEWED_TTL_MS / 1000:
        client.pexpire(key, 10 * TTL_MS)
        wait_until(lambda: 0 < client.pttl(key) <= RENEWED_TTL_MS, what="the lock's renewal")
        renewals += 1

    # and it is still the owner's: nobody else gets it, and the owner releases it
    assert not RedisMutex(client, "account:1", ttl_ms=RENEWED_TTL_MS).acquire()
    assert not owner.lost
    assert owner.release()
    assert client.exists(key) == 0


def test_a_lock_taken_away_is_reported_lost_and_not_released_from_its_new_holder(client):
    owner = RedisMutex(client, "account:1", ttl_ms=RENEWED_TTL_MS)
    assert owner.acquire()

    client.set("fintask:lock:account:1", "someone else")

    # at the holder's next renewal
    wait_until(lambda: owner.lost, what="the owner to find its lock lost")
    assert not owner.release()
    assert client.get("fintask:lock:account:1") == b"someone else"


# The Mutex middleware


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lock_key": "account:{acount_id}"}, "names acount_id, which sync() does not take"),
        ({"lock_key": "account:{account_id}", "lock_contention": "queue"}, "must be one of"),
        ({"lock_key": "account:{account_id}", "lock_ttl_ms": 0}, "lock_ttl_ms=0 must be a"),
        ({"lock_key": 42}, "lock_key=42 must be a template"),
    ],
)
def test_bad_lock_options_fail_the_declaration(client, options, message):
    broker = stub_broker(client)

    with pytest.raises(InvalidActorOption, match=re.escape(message)):

        @dramatiq.actor(broker=broker, **options, **EXPLICIT)
        def sync(account_id: int) -> None: ...


@pytest.mark.parametrize("contention", ["skip", "defer", "fail"])
def test_a_message_whose_lock_is_held_skips_defers_or_fails(client, contention):
    # Given a flow holding the account's lock until a message has met it
    contended = threading.Event()
    broker = stub_broker(client, defer_ms=100, on_contention=lambda *_: contended.set())
    ran: list[dict[str, Any]] = []

    @dramatiq.actor(
        broker=broker, lock_key="account:{account_id}", lock_contention=contention, **EXPLICIT
    )
    def sync(account_id: int, **kwargs: Any) -> None:
        ran.append(current_options())

    flow = RedisMutex(client, "account:7", ttl_ms=TTL_MS)
    assert flow.acquire()

    # When a message for that account arrives (and the flow lets go once it has met the lock)
    sync.send(account_id=7)
    with working(broker):
        assert contended.wait(30), "the message never met the held lock"
        assert flow.release()
        if contention == "fail":
            with pytest.raises(LockNotAcquired, match="lock 'account:7' is held"):
                broker.join(sync.queue_name)
        else:
            broker.join(sync.queue_name)

    # Then skip drops it, defer runs it later without a retry, fail is an ordinary failure
    mutex = next(m for m in broker.middleware if isinstance(m, Mutex))
    assert mutex.contended["sync", contention] >= 1
    if contention == "defer":
        assert len(ran) == 1
        assert ran[0]["lock_deferrals"] >= 1
        assert "retries" not in ran[0]
        assert broker.dead_letters == []
    else:
        assert ran == []
        assert len(broker.dead_letters) == (1 if contention == "fail" else 0)
    assert client.exists("fintask:lock:account:7") == 0


def test_messages_of_one_account_never_overlap_and_the_lock_is_released_after_a_failure(client):
    broker = stub_broker(client, defer_ms=50)
    spans: list[tuple[float, float]] = []

    @dramatiq.actor(broker=broker, lock_key="account:{account_id}", **EXPLICIT)
    def sync(account_id: int, fail: bool = False, **kwargs: Any) -> None:
        started = time.monotonic()
        time.sleep(0.1)
        spans.append((started, time.monotonic()))
        if fail:
            raise RuntimeError("provider down")

    sync.send(1, fail=True)
    for _ in range(3):
        sync.send(1)
    with working(broker, threads=4):
        broker.join(sync.queue_name, fail_fast=False)

    spans.sort()
    assert len(spans) == 4
    assert all(end <= next_start for (_, end), (next_start, _) in pairwise(spans))
    assert client.exists("fintask:lock:account:1") == 0


# Unique enqueue


def test_a_second_send_for_a_pending_key_is_a_detectable_no_op(client):
    broker = stub_broker(client)

    @dramatiq.actor(broker=broker, unique_key="account:{account_id}", **EXPLICIT)
    def recalculate(account_id: int, **kwargs: Any) -> None: ...

    first = recalculate.send(account_id=1)
    with pytest.raises(AlreadyPending) as pending:
        recalculate.send(account_id=1)

    assert pending.value.pending_message_id == first.message_id
    recalculate.send(account_id=2)  # another key is not held back
    assert broker.queues[recalculate.queue_name].qsize() == 2


def test_a_change_after_the_message_started_gets_a_fresh_message(client):
    # Given a pending recalculation that has started running
    broker = stub_broker(client)
    started, finish = threading.Event(), threading.Event()
    runs: list[str] = []

    @dramatiq.actor(broker=broker, unique_key="account:{account_id}", **EXPLICIT)
    def recalculate(account_id: int, **kwargs: Any) -> None:
        runs.append(current_options()["unique_claim"])
        started.set()
        finish.wait(30)

    recalculate.send(account_id=1)
    with working(broker):
        assert started.wait(30)
        # When the account changes again (a send held back would raise AlreadyPending)
        recalculate.send(account_id=1)
        finish.set()
        broker.join(recalculate.queue_name)

    # Then that change was enqueued, and ran too
    assert runs == ["fintask:unique:recalculate:account:1"] * 2
    assert client.exists("fintask:unique:recalculate:account:1") == 0


def test_a_delayed_message_holds_its_key_until_it_runs(client):
    broker = stub_broker(client)
    key = "fintask:unique:recalculate:account:1"
    runs: list[tuple[int, int]] = []

    @dramatiq.actor(broker=broker, unique_key="account:{account_id}", **EXPLICIT)
    def recalculate(account_id: int, **kwargs: Any) -> None:
        runs.append((account_id, client.exists(key)))

    recalculate.send_with_options(kwargs={"account_id": 1}, delay=200)
    ttl_ms = client.pttl(key)
    # while it waits out its delay (no worker runs it yet), a change is held back
    with pytest.raises(AlreadyPending):
        recalculate.send(account_id=1)
    with working(broker):
        broker.join(recalculate.queue_name)

    # it ran once, the key already released when it started, and the key is gone after
    assert runs == [(1, 0)]
    assert EXPLICIT["max_age"] < ttl_ms <= EXPLICIT["max_age"] + 60_000
    assert client.exists(key) == 0


def test_a_retry_is_not_blocked_by_the_key(client):
    # Given a pending message that fails once, and a change that arrives while it runs
    broker = stub_broker(client)
    attempts: list[tuple[str, int]] = []

    @dramatiq.actor(
        broker=broker,
        unique_key="account:{account_id}",
        max_retries=1,
        min_backoff=1,
        max_backoff=1,
        time_limit=10_000,
        max_age=60_000,
    )
    def recalculate(account_id: int, label: str, **kwargs: Any) -> None:
        retries = current_options().get("retries", 0)
        attempts.append((label, retries))
        if label == "first" and retries == 0:
            recalculate.send(account_id=account_id, label="change")  # not held back
            raise RuntimeError("database busy")

    recalculate.send(account_id=1, label="first")
    with working(broker):
        broker.join(recalculate.queue_name)

    # Then the retry ran although the change held the key, and the change ran too
    assert sorted(attempts) == [("change", 0), ("first", 0), ("first", 1)]


def test_a_message_dead_lettered_before_it_ran_frees_its_key(client):
    # Given fintask's order (Guardrails first) and a pending message from a newer release,
    broker = StubBroker(
        middleware=[
            Guardrails(max_message_bytes=16_384),
            UniqueEnqueue(client=client),
            *(m() for m in default_middleware),
        ]
    )
    runs: list[int] = []

    @dramatiq.actor(broker=broker, unique_key="account:{account_id}", **EXPLICIT)
    def recalculate(account_id: int, **kwargs: Any) -> None:
        runs.append(account_id)

    newer = recalculate.message(account_id=1).copy(options={"schema": SCHEMA_VERSION + 1})
    broker.enqueue(newer)
    with pytest.raises(AlreadyPending):
        recalculate.send(account_id=1)

    # When a worker of this release dead-letters it,
    with working(broker):
        broker.join(recalculate.queue_name, fail_fast=False)

    # Then it never ran, and the next change is not blocked by its claim.
    assert runs == []
    assert [message.message_id for message in broker.dead_letters] == [newer.message_id]
    assert client.exists("fintask:unique:recalculate:account:1") == 0
    recalculate.send(account_id=1)
