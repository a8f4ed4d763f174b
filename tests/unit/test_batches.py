"""Batches (``chunking.batches``) on Dramatiq's StubBroker, a real worker and a real redis-server.

Each test has a broker of its own with Dramatiq's default middleware and ``BatchMembers``
right before ``Retries``, as fintask's stack places it. Workers run one thread
(``run_until_idle``) where a test counts callback deliveries: with one thread no duplicate can
arrive while the batch fires, so a second callback would be a bug, not a race.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries, SkipMessage, default_middleware

from app.middleware.guardrails import MessageRejected, validate_message
from chunking import (
    BatchClosed,
    Batches,
    BatchMembers,
    Callback,
    FailureKind,
    UnknownBatch,
    member_kwargs,
)
from chunking import batch_scripts as scripts
from tests.support.stub_workers import run_until_idle

MEMBERS = "members"
CALLBACKS = "callbacks"


class Seen:
    """What the actors saw, from any worker thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.work: Counter[int] = Counter()
        self.callbacks: list[tuple[str, dict[str, Any]]] = []

    def did(self, item: int) -> None:
        with self.lock:
            self.work[item] += 1

    def called(self, which: str, kwargs: dict[str, Any]) -> None:
        with self.lock:
            self.callbacks.append((which, kwargs))

    def names(self) -> list[str]:
        return sorted(which for which, _ in self.callbacks)


class SkipRevoked(dramatiq.Middleware):
    """What fintask's ``FleetControl`` does to a revoked message: it does not start."""

    def __init__(self, revoked: set[str]) -> None:
        self.revoked = revoked

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if message.message_id in self.revoked:
            raise SkipMessage(f"message {message.message_id} was revoked")


class Stack:
    """A broker with BatchMembers, its batches, and the test's actors."""

    def __init__(self, client: redis.Redis, revoked: set[str]) -> None:
        middleware: list[dramatiq.Middleware] = []
        self.batches = Batches(client=client, prefix=f"test-batch:{uuid.uuid4().hex}")
        for kind in default_middleware:
            if kind is Retries:
                middleware.append(BatchMembers(batches=self.batches, revoked=revoked.__contains__))
            middleware.append(kind())
        middleware += [CurrentMessage(), SkipRevoked(revoked)]
        self.broker = StubBroker(middleware=middleware)
        self.batches._broker = self.broker
        self.seen = seen = Seen()

        @dramatiq.actor(broker=self.broker, queue_name=MEMBERS, max_retries=1, min_backoff=1)
        def work(item: int, fail: bool = False, **kwargs: Any) -> None:
            seen.did(item)
            if fail:
                raise RuntimeError(f"item {item} cannot be done")

        def callback(which: str) -> dramatiq.Actor[Any, Any]:
            def fn(**kwargs: Any) -> str:
                seen.called(which, kwargs)
                return which

            fn.__name__ = which
            return dramatiq.actor(fn, broker=self.broker, queue_name=CALLBACKS, actor_name=which)

        self.work = work
        self.on = {which: callback(which) for which in ("succeeded", "failed", "completed")}

    def callbacks(self, **kwargs: Any) -> dict[str, Callback]:
        return {
            "on_success": Callback("succeeded", CALLBACKS, kwargs),
            "on_failure": Callback("failed", CALLBACKS, kwargs),
            "on_complete": Callback("completed", CALLBACKS, kwargs),
        }

    def run(self) -> None:
        run_until_idle(self.broker, MEMBERS)
        run_until_idle(self.broker, CALLBACKS)


@pytest.fixture
def revoked() -> set[str]:
    return set()


@pytest.fixture
def stack(client: redis.Redis, revoked: set[str]) -> Iterator[Stack]:
    stack = Stack(client, revoked)
    yield stack
    stack.broker.flush_all()
    stack.broker.close()


def test_every_member_delivered_three_times_fires_each_callback_once(stack: Stack) -> None:
    # Given a sealed batch of 20 members, each of whose messages is delivered three times
    batch_id = stack.batches.create(**stack.callbacks(week="2026-W48"))
    stack.batches.add(batch_id, (stack.work.message(item=i) for i in range(20)))
    for encoded in list(stack.broker.queues[MEMBERS].queue):
        for _ in range(2):
            stack.broker.enqueue(dramatiq.Message.decode(encoded))
    stack.batches.seal(batch_id)

    # When every delivery runs
    stack.run()

    # Then every member ran three times, yet on_success and on_complete came once, with counts
    assert stack.seen.work == Counter({i: 3 for i in range(20)})
    assert stack.seen.names() == ["completed", "succeeded"]
    kwargs = dict(stack.seen.callbacks)["succeeded"]
    assert kwargs == {"week": "2026-W48", "batch_id": batch_id, "succeeded": 20, "failed": 0}
    progress = stack.batches.progress(batch_id)
    assert progress is not None and progress.state == "fired"
    assert (progress.total, progress.succeeded, progress.failed, progress.pending) == (20, 20, 0, 0)


def test_members_done_before_the_seal_fire_at_the_seal(stack: Stack) -> None:
    # Given a batch whose members all finish while it is still open
    batch_id = stack.batches.create(**stack.callbacks())
    stack.batches.add(batch_id, [stack.work.message(item=1)])
    stack.batches.add(batch_id, [stack.work.message(item=2), stack.work.message(item=3)])
    stack.run()
    assert stack.seen.callbacks == []
    assert stack.batches.progress(batch_id).pending == 0  # type: ignore[union-attr]

    # When it is sealed (twice: a producer's retry)
    assert stack.batches.seal(batch_id) is True
    assert stack.batches.seal(batch_id) is False
    run_until_idle(stack.broker, CALLBACKS)

    # Then its callbacks fired once, and it takes no more members
    assert stack.seen.names() == ["completed", "succeeded"]
    with pytest.raises(BatchClosed, match="sealed or cancelled"):
        stack.batches.add(batch_id, [stack.work.message(item=4)])


def test_a_dead_lettered_member_fires_on_failure_with_its_id_and_reason(stack: Stack) -> None:
    # Given a batch of three members, one of which fails on every attempt
    batch_id = stack.batches.create(**stack.callbacks())
    stack.batches.add(
        batch_id,
        [
            stack.work.message(item=1),
            stack.work.message(item=2, fail=True),
            stack.work.message(item=3),
        ],
    )
    stack.batches.seal(batch_id)
    failing_id = stack.broker.queues[MEMBERS].queue[1]

    # When they run (the failing one is retried once, then dead-lettered)
    stack.run()

    # Then on_failure and on_complete fired once, with the counts, and the failure is pageable
    assert stack.seen.work[2] == 2
    assert stack.seen.names() == ["completed", "failed"]
    assert dict(stack.seen.callbacks)["failed"]["failed"] == 1
    cursor, failed = stack.batches.failed_members(batch_id)
    assert cursor == 0 and len(failed) == 1
    assert failed[0].ordinal == 1
    assert failed[0].kind == FailureKind.DEAD_LETTERED
    assert failed[0].reason == "RuntimeError: item 2 cannot be done"
    assert failed[0].message_id == dramatiq.Message.decode(failing_id).message_id


def test_an_expired_and_a_revoked_member_count_as_failed(stack: Stack, revoked: set[str]) -> None:
    # Given a batch with a member past its max_age and a member an operator revoked
    batch_id = stack.batches.create(**stack.callbacks())
    old = stack.work.message_with_options(kwargs={"item": 1}, max_age=60_000)
    old = old.copy(message_timestamp=old.message_timestamp - 3_600_000)
    cancelled = stack.work.message(item=2)
    revoked.add(cancelled.message_id)
    ordinals = stack.batches.reserve(batch_id, 3)
    members = [old, cancelled, stack.work.message(item=3)]
    for message, ordinal in zip(members, ordinals, strict=True):
        kwargs = {**message.kwargs, **member_kwargs(batch_id, ordinal)}
        stack.broker.enqueue(message.copy(kwargs=kwargs))
    stack.batches.seal(batch_id)

    # When they come up
    stack.run()

    # Then only the third ran, and the batch failed with one expired and one cancelled member
    assert stack.seen.work == Counter({3: 1})
    progress = stack.batches.progress(batch_id)
    assert progress is not None
    assert progress.failed_by_kind == {"expired": 1, "cancelled": 1}
    assert stack.seen.names() == ["completed", "failed"]
    kinds = {member.ordinal: member.kind for member in stack.batches.failed_members(batch_id)[1]}
    assert kinds == {0: "expired", 1: "cancelled"}


def test_a_cancelled_batch_skips_its_pending_members_and_fails_once(stack: Stack) -> None:
    # Given a sealed batch of 10 members, 4 of which ran
    batch_id = stack.batches.create(**stack.callbacks())
    stack.batches.add(batch_id, (stack.work.message(item=i) for i in range(4)))
    stack.run()
    stack.batches.add(batch_id, (stack.work.message(item=i) for i in range(4, 10)))

    # When it is cancelled (twice), then its pending members come up
    assert stack.batches.cancel(batch_id) is True
    assert stack.batches.cancel(batch_id) is False
    stack.run()

    # Then none of them ran, and on_failure and on_complete fired once with 6 cancelled
    assert sorted(stack.seen.work) == [0, 1, 2, 3]
    assert stack.seen.names() == ["completed", "failed"]
    assert dict(stack.seen.callbacks)["failed"]["failed"] == 6
    progress = stack.batches.progress(batch_id)
    assert progress is not None and progress.cancelled and progress.total == 10
    assert progress.failed_by_kind == {"cancelled": 6}


def test_a_batch_of_batches_completes_when_its_children_do(stack: Stack) -> None:
    # Given a parent batch of two child batches, one of whose members fails
    parent = stack.batches.create(**stack.callbacks())
    first, second = stack.batches.reserve(parent, 2)
    stack.batches.seal(parent)
    ok = stack.batches.create(parent=(parent, first), name="ok")
    bad = stack.batches.create(parent=(parent, second), name="bad")
    stack.batches.add(ok, (stack.work.message(item=i) for i in range(3)))
    stack.batches.add(bad, [stack.work.message(item=9, fail=True)])
    stack.batches.seal(ok)
    stack.batches.seal(bad)

    # When the children's members run
    stack.run()

    # Then the parent's on_failure fired once, naming the child that failed
    assert stack.seen.names() == ["completed", "failed"]
    assert dict(stack.seen.callbacks)["completed"]["succeeded"] == 1
    [failure] = stack.batches.failed_members(parent)[1]
    assert failure.message_id == bad and failure.kind == FailureKind.FAILED


def test_a_pipeline_whose_middle_step_is_a_batch(stack: Stack) -> None:
    # Given a pipeline: fan out (a batch of downloads) -> aggregate -> publish
    published: list[Any] = []

    @dramatiq.actor(broker=stack.broker, queue_name=CALLBACKS)
    def aggregate(batch_id: str, succeeded: int, failed: int, **kwargs: Any) -> int:
        return sum(stack.seen.work.values()) if failed == 0 else -1

    @dramatiq.actor(broker=stack.broker, queue_name=CALLBACKS)
    def publish(total: int, **kwargs: Any) -> None:
        published.append(total)

    @dramatiq.actor(broker=stack.broker, queue_name=MEMBERS)
    def fan_out(accounts: int, **kwargs: Any) -> None:
        then = dramatiq.pipeline([aggregate.message(), publish.message()])
        batch_id = stack.batches.create(on_complete=Callback.of(then.messages[0]))
        stack.batches.add(batch_id, (stack.work.message(item=i) for i in range(accounts)))
        stack.batches.seal(batch_id)

    # When it starts
    fan_out.send(accounts=5)
    stack.run()
    run_until_idle(stack.broker, CALLBACKS)

    # Then the aggregate ran once, after every download, and its result reached the next step
    assert stack.seen.work == Counter({i: 1 for i in range(5)})
    assert published == [5]


def test_a_last_member_whose_worker_died_before_the_callbacks_fires_them_when_redelivered(
    stack: Stack,
) -> None:
    # Given a batch whose last member was recorded, but whose worker died before it enqueued
    # the callbacks (the script ran; nothing else did)
    batch_id = stack.batches.create(**stack.callbacks())
    stack.batches.add(batch_id, [stack.work.message(item=1)])
    stack.batches.seal(batch_id)
    [encoded] = list(stack.broker.queues[MEMBERS].queue)
    keys = stack.batches._member_keys(batch_id)
    answer = stack.batches._script("settle")(keys, [0, "", "", "", 0])
    assert answer == scripts.FIRE
    assert stack.broker.queues[CALLBACKS].qsize() == 0

    # When its message is delivered again
    stack.run()

    # Then the callbacks fire once, and the member still counts once
    assert stack.seen.names() == ["completed", "succeeded"]
    assert stack.batches.progress(batch_id).succeeded == 1  # type: ignore[union-attr]
    assert encoded


def test_bad_input_is_refused_with_a_reason(stack: Stack) -> None:
    def guardrails(message: dramatiq.Message[Any]) -> None:
        validate_message(message, max_bytes=10_000)

    checked = Batches(
        client=stack.batches.client, prefix=stack.batches.prefix, check_message=guardrails
    )
    with pytest.raises(MessageRejected, match="argument 'to' looks like an e-mail address"):
        checked.create(on_success=Callback("succeeded", CALLBACKS, {"to": "ada@example.com"}))
    with pytest.raises(ValueError, match="failed are given to every callback"):
        checked.create(on_failure=Callback("failed", CALLBACKS, {"failed": 1}))
    with pytest.raises(ValueError, match="not plain JSON"):
        checked.create(on_failure=Callback("failed", CALLBACKS, {"when": object()}))
    with pytest.raises(UnknownBatch, match="no batch 'nope'"):
        checked.seal("nope")
    with pytest.raises(ValueError, match="count must be >= 0"):
        checked.reserve(checked.create(), -1)


def test_progress_and_listing_for_readers(stack: Stack) -> None:
    first = stack.batches.create(name="first")
    second = stack.batches.create(name="second")
    stack.batches.add(second, (stack.work.message(item=i) for i in range(3)))

    listed = stack.batches.recent(limit=10)

    assert [progress.batch_id for progress in listed] == [second, first]
    assert (listed[0].name, listed[0].state, listed[0].added, listed[0].pending) == (
        "second",
        "open",
        3,
        3,
    )
    assert listed[0].total is None and listed[0].sealed_at is None
