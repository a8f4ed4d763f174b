"""Browsing, finding and cancelling messages on a real Redis, sent through a fintask broker.

Each state is made the way production makes it: ``send`` (ready), ``send_with_options`` with a
delay (delayed) and with ``retries`` (retrying), a consumer's fetch into its ack set (held),
and a consumer's nack (dead).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq import Message
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis, dq_name

from app.control.cancel import cancel_matching, cancel_message
from app.control.masking import MaskPolicy
from app.control.messages import find_message, list_messages
from app.control.stored import State
from app.control_state import REVOKED_KEY, read_state
from app.cursors import InvalidCursor
from app.redis_access import BATCH_PREFIX
from app.wakeup_broker import WakeupRedisBroker, WakeupRedisConsumer
from chunking import Batches
from tests.support.processes import wait_until
from tests.support.workers import fintask_broker, push, worker_on

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.support.inspection_fixtures"]

QUEUE = "control-messages"
MAX_AGE_MS = 3_600_000
LATER_MS = 600_000
HOUR_MS = 3_600_000

Remind = dramatiq.Actor[..., None]


@pytest.fixture
def broker(inspected_redis: redis.Redis, redis_url: str) -> Iterator[WakeupRedisBroker]:
    broker = fintask_broker(redis_url)
    yield broker
    broker.close()


@pytest.fixture
def runs() -> list[int]:
    return []


@pytest.fixture
def remind(broker: WakeupRedisBroker, runs: list[int]) -> Remind:
    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_age=MAX_AGE_MS)
    def remind(account_id: int, **kwargs: Any) -> None:
        runs.append(account_id)

    return remind


def max_age_of(broker: WakeupRedisBroker) -> Any:
    return lambda actor_name: broker.get_actor(actor_name).options["max_age"]


def batches_of(client: redis.Redis) -> Batches:
    """fintask's batch store on the test's Redis: cancelling a member records it there."""
    return Batches(client=client, prefix=BATCH_PREFIX)


def redis_id(message: Message[Any]) -> str:
    return str(message.options["redis_message_id"])


def every_page(client: redis.Redis, state: State, *, newest_first: bool = False) -> list[list[str]]:
    """The message ids of each page of two, following the cursors to the end."""
    pages, cursor = [], None
    while True:
        page = list_messages(
            client, QUEUE, state=state, newest_first=newest_first, cursor=cursor, limit=2
        )
        pages.append([item.message_id for item in page.items])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


def flat(pages: list[list[str]]) -> list[str]:
    return [message_id for page in pages for message_id in page]


@contextmanager
def fetched(broker: WakeupRedisBroker, queue_name: str) -> Iterator[tuple[Any, MessageProxy]]:
    """One message fetched by a consumer into its worker's ack set, as a worker holds it."""
    consumer = broker.consume(queue_name, prefetch=1, timeout=100)
    assert isinstance(consumer, WakeupRedisConsumer)
    try:
        message = None
        for _ in range(50):
            message = next(consumer)
            if message is not None:
                break
        assert message is not None, f"nothing fetched from {queue_name}"
        yield consumer, message
    finally:
        consumer.close()


def test_pages_of_two_give_every_ready_message_once_oldest_or_newest_first(
    client: redis.Redis, remind: Remind
) -> None:
    sent = [remind.send(account_id=n).message_id for n in range(5)]

    oldest_first = every_page(client, "ready")
    newest_first = every_page(client, "ready", newest_first=True)

    assert [len(page) for page in oldest_first] == [2, 2, 1]
    assert flat(oldest_first) == sent
    assert flat(newest_first) == sent[::-1]


def test_delayed_and_retrying_messages_share_their_list_but_are_listed_apart(
    client: redis.Redis, remind: Remind
) -> None:
    delayed, retrying = [], []
    for n in range(5):
        if n % 2 == 0:
            delayed.append(remind.send_with_options(kwargs={"account_id": n}, delay=LATER_MS))
        else:
            kwargs = {"account_id": n}
            retrying.append(remind.send_with_options(kwargs=kwargs, retries=1, delay=LATER_MS))

    assert flat(every_page(client, "delayed")) == [m.message_id for m in delayed]
    assert flat(every_page(client, "retrying", newest_first=True)) == [
        m.message_id for m in retrying[::-1]
    ]
    (first, *_) = list_messages(client, QUEUE, state="retrying").items
    assert (first.retries, first.eta_ms) == (1, retrying[0].options["eta"])


def test_a_filtered_page_reads_a_bounded_slice_and_says_where_to_go_on(
    client: redis.Redis, remind: Remind
) -> None:
    # Given one retrying message behind more delayed ones than a page of 2 may read (40)
    for n in range(45):
        remind.send_with_options(kwargs={"account_id": n}, delay=LATER_MS)
    retrying = remind.send_with_options(kwargs={"account_id": 99}, retries=1, delay=LATER_MS)

    first = list_messages(client, QUEUE, state="retrying", limit=2)
    second = list_messages(client, QUEUE, state="retrying", limit=2, cursor=first.next_cursor)

    assert (first.items, first.next_cursor is not None) == ([], True)
    assert [m.message_id for m in second.items] == [retrying.message_id]
    assert second.next_cursor is None


def test_dead_letters_and_held_messages_page_stably(
    client: redis.Redis, broker: WakeupRedisBroker, remind: Remind
) -> None:
    sent = [remind.send(account_id=n) for n in range(3)]
    for _ in sent:
        with fetched(broker, QUEUE) as (consumer, message):
            message.stuff_exception(ValueError("card declined"))
            consumer.nack(message)
        # Each death in a millisecond of its own, so "oldest first" has one answer (deaths that
        # share one are the next test's).
        dead_at = current_millis()
        while current_millis() == dead_at:
            time.sleep(0.001)
    remind.send(account_id=9)

    with fetched(broker, QUEUE) as (_, held):
        held_pages = every_page(client, "held")

    assert flat(every_page(client, "dead")) == [m.message_id for m in sent]
    assert flat(every_page(client, "dead", newest_first=True)) == [m.message_id for m in sent[::-1]]
    assert held_pages == [[held.message_id]]
    (dead, *_) = list_messages(client, QUEUE, state="dead").items
    assert dead.reason == "ValueError: card declined"


def test_dead_letters_that_died_in_the_same_millisecond_page_once_each(client: redis.Redis) -> None:
    # Dead-lettered together (a poisoned batch): five deaths, one score.
    ids = []
    for n in range(5):
        message: Message[Any] = Message(QUEUE, "remind", (), {"account_id": n}, {})
        client.hset(f"dramatiq:{QUEUE}.XQ.msgs", f"r{n}", message.encode())
        client.zadd(f"dramatiq:{QUEUE}.XQ", {f"r{n}": 1_700_000_000_000})
        ids.append(message.message_id)

    assert flat(every_page(client, "dead")) == ids
    assert flat(every_page(client, "dead", newest_first=True)) == ids[::-1]


@pytest.mark.parametrize(
    "cursor",
    ["not a cursor", "bm90IGpzb24", "eyJzdGF0ZSI6ICJyZWFkeSJ9", "W10"],
    ids=["not base64", "not JSON", "no position", "not an object"],
)
def test_a_malformed_cursor_is_refused(client: redis.Redis, cursor: str) -> None:
    with pytest.raises(InvalidCursor, match="not one this list handed out"):
        list_messages(client, QUEUE, state="ready", cursor=cursor)


def test_a_cursor_of_another_state_or_order_is_refused(client: redis.Redis, remind: Remind) -> None:
    for n in range(3):
        remind.send(account_id=n)
    cursor = list_messages(client, QUEUE, state="ready", limit=1).next_cursor
    assert cursor is not None

    with pytest.raises(InvalidCursor, match="ready messages, oldest first, not of delayed"):
        list_messages(client, QUEUE, state="delayed", cursor=cursor)
    with pytest.raises(InvalidCursor, match="not of ready messages, newest first"):
        list_messages(client, QUEUE, state="ready", newest_first=True, cursor=cursor)
    with pytest.raises(InvalidCursor, match="not of dead messages"):
        list_messages(client, QUEUE, state="dead", cursor=cursor)


def test_a_message_is_found_by_message_id_or_redis_id_in_each_state(
    client: redis.Redis, broker: WakeupRedisBroker, remind: Remind
) -> None:
    dead = remind.send(account_id=1)
    with fetched(broker, QUEUE) as (consumer, proxy):
        consumer.nack(proxy)
    held = remind.send(account_id=2)
    ready = remind.send(account_id=3)
    delayed = remind.send_with_options(kwargs={"account_id": 4}, delay=LATER_MS)
    retrying = remind.send_with_options(kwargs={"account_id": 5}, retries=2, delay=LATER_MS)
    expected: dict[State, Message[Any]] = {
        "ready": ready,
        "delayed": delayed,
        "retrying": retrying,
        "dead": dead,
        "held": held,
    }

    with fetched(broker, QUEUE) as (_, holding):
        assert holding.message_id == held.message_id
        for state, message in expected.items():
            for wanted in (message.message_id, redis_id(message)):
                view = find_message(client, ["other", QUEUE], wanted)
                assert view is not None, (state, wanted)
                assert (view.state, view.message_id) == (state, message.message_id)
                assert view.redis_id == redis_id(message)
                assert view.worker_id == (broker.broker_id if state == "held" else None)
                assert view.reason == ("failed" if state == "dead" else None)

    assert find_message(client, [QUEUE], "no-such-message") is None


def test_a_delayed_message_a_delay_consumer_holds_is_held_until_its_eta(
    client: redis.Redis, broker: WakeupRedisBroker, remind: Remind
) -> None:
    delayed = remind.send_with_options(kwargs={"account_id": 4}, delay=LATER_MS)

    with fetched(broker, dq_name(QUEUE)):
        view = find_message(client, [QUEUE], delayed.message_id)
        (listed,) = list_messages(client, QUEUE, state="held").items

    assert view is not None
    assert (view.state, view.eta_ms, view.worker_id) == (
        "held",
        delayed.options["eta"],
        broker.broker_id,
    )
    assert listed == view


def test_cancelling_a_ready_message_removes_it_and_a_worker_never_runs_it(
    client: redis.Redis, broker: WakeupRedisBroker, remind: Remind, runs: list[int]
) -> None:
    cancelled = remind.send(account_id=1)
    kept = remind.send(account_id=2)

    outcome = cancel_message(
        client,
        [QUEUE],
        cancelled.message_id,
        max_age_ms=max_age_of(broker),
        batches=batches_of(client),
    )

    assert (outcome.state, outcome.removed, outcome.revoked) == ("ready", True, True)
    assert [m.message_id for m in list_messages(client, QUEUE, state="ready").items] == [
        kept.message_id
    ]
    assert client.hget(f"dramatiq:{QUEUE}.msgs", redis_id(cancelled)) is None
    assert cancelled.message_id in read_state(client).revoked
    with worker_on(broker):
        wait_until(lambda: runs == [2], what="the message kept to run")
    assert runs == [2]


def test_cancelling_a_delayed_message_removes_it_and_revokes_it_past_its_max_age(
    client: redis.Redis, broker: WakeupRedisBroker, remind: Remind
) -> None:
    delayed = remind.send_with_options(kwargs={"account_id": 4}, delay=LATER_MS)

    outcome = cancel_message(
        client,
        [QUEUE],
        redis_id(delayed),
        max_age_ms=max_age_of(broker),
        batches=batches_of(client),
    )

    assert (outcome.message_id, outcome.state) == (delayed.message_id, "delayed")
    assert (outcome.removed, outcome.revoked) == (True, True)
    assert client.llen(f"dramatiq:{QUEUE}.DQ") == client.hlen(f"dramatiq:{QUEUE}.DQ.msgs") == 0
    expiry = client.zscore(REVOKED_KEY, delayed.message_id)
    assert expiry == delayed.message_timestamp + MAX_AGE_MS + HOUR_MS


def test_cancelling_a_held_message_revokes_it_in_the_mode_asked(
    client: redis.Redis, broker: WakeupRedisBroker, remind: Remind
) -> None:
    held = remind.send(account_id=1)

    with fetched(broker, QUEUE):
        outcome = cancel_message(
            client,
            [QUEUE],
            held.message_id,
            mode="hard",
            max_age_ms=max_age_of(broker),
            batches=batches_of(client),
        )
        assert client.hget(f"dramatiq:{QUEUE}.msgs", redis_id(held)) is not None

    assert (outcome.state, outcome.removed, outcome.revoked) == ("held", False, True)
    assert read_state(client).revoked == {held.message_id: "hard"}


def test_a_dead_letter_or_an_unknown_message_is_not_cancelled(
    client: redis.Redis, broker: WakeupRedisBroker, remind: Remind
) -> None:
    dead = remind.send(account_id=1)
    with fetched(broker, QUEUE) as (consumer, message):
        consumer.nack(message)

    outcome = cancel_message(
        client, [QUEUE], dead.message_id, max_age_ms=max_age_of(broker), batches=batches_of(client)
    )
    unknown = cancel_message(
        client,
        [QUEUE],
        "no-such-message",
        max_age_ms=max_age_of(broker),
        batches=batches_of(client),
    )

    assert (outcome.state, outcome.removed, outcome.revoked) == ("dead", False, False)
    assert client.zscore(f"dramatiq:{QUEUE}.XQ", redis_id(dead)) is not None
    assert (unknown.state, unknown.removed, unknown.revoked) == (None, False, False)
    assert read_state(client).revoked == {}


def test_cancel_matching_counts_on_a_dry_run_then_cancels_every_match(
    client: redis.Redis, broker: WakeupRedisBroker, remind: Remind
) -> None:
    @dramatiq.actor(broker=broker, queue_name=QUEUE, max_age=MAX_AGE_MS)
    def other(account_id: int, **kwargs: Any) -> None:
        pass

    held = remind.send(account_id=1, kind="late")
    matching = [
        remind.send(account_id=1, kind="late"),
        remind.send(account_id=1, kind="late", note="extra"),
        remind.send_with_options(kwargs={"account_id": 1, "kind": "late"}, delay=LATER_MS),
        remind.send_with_options(
            kwargs={"account_id": 1, "kind": "late"}, retries=1, delay=LATER_MS
        ),
    ]
    kept = [
        remind.send(account_id=2, kind="late"),
        remind.send(account_id=1, kind="early"),
        other.send(account_id=1, kind="late"),
    ]

    def cancel(*, dry_run: bool) -> int:
        return cancel_matching(
            client,
            [QUEUE],
            actor_name="remind",
            arguments={"account_id": 1, "kind": "late"},
            dry_run=dry_run,
            max_age_ms=max_age_of(broker),
            batches=batches_of(client),
        )

    with fetched(broker, QUEUE) as (_, proxy):
        assert proxy.message_id == held.message_id
        before = flat(every_page(client, "ready")), flat(every_page(client, "delayed"))
        counted = cancel(dry_run=True)
        after = flat(every_page(client, "ready")), flat(every_page(client, "delayed"))
        assert read_state(client).revoked == {}
        cancelled = cancel(dry_run=False)

    assert counted == cancelled == 5
    assert before == after
    assert flat(every_page(client, "ready")) == [m.message_id for m in kept]
    assert list_messages(client, QUEUE, state="delayed").items == []
    assert list_messages(client, QUEUE, state="retrying").items == []
    assert set(read_state(client).revoked) == {m.message_id for m in [held, *matching]}


def test_arguments_are_masked_unless_identifiers_flags_or_made_visible(
    client: redis.Redis, remind: Remind
) -> None:
    # Guardrails refuses an e-mail address at send: only a producer without it can queue one.
    kwargs = {
        "email": "ada@example.com",
        "customer_id": "cus_123",
        "amount": 12.5,
        "urgent": True,
        "coupon": None,
    }
    sent = Message(QUEUE, remind.actor_name, (42,), kwargs, {})
    push(client, QUEUE, sent.encode())

    view = find_message(client, [QUEUE], sent.message_id)
    shown = find_message(client, [QUEUE], sent.message_id, policy=MaskPolicy(frozenset({"email"})))

    assert view is not None and shown is not None
    assert view.args == ["<int>"]
    assert view.kwargs == {
        "email": "<str: 15 chars>",
        "customer_id": "cus_123",
        "amount": "<float>",
        "urgent": True,
        "coupon": None,
    }
    answer = json.dumps(view.as_dict())
    assert "ada@example.com" not in answer
    assert view.as_dict()["sent_at"].endswith("Z")
    assert shown.kwargs["email"] == "ada@example.com"


def test_containers_an_old_producer_sent_are_shown_by_their_size(
    client: redis.Redis, remind: Remind
) -> None:
    # Guardrails refuses containers at send time: only a producer without it can queue them.
    kwargs = {"tags": ["vip", "eu", "b2b"], "address": {"city": "London", "zip": "N1"}}
    push(client, QUEUE, Message(QUEUE, "remind", (), kwargs, {}).encode())

    (view,) = list_messages(client, QUEUE, state="ready").items

    assert view.kwargs == {"tags": "<list: 3 items>", "address": "<dict: 2 keys>"}
    assert "London" not in json.dumps(view.as_dict())


def test_an_account_id_is_shown_and_a_long_one_is_not(client: redis.Redis, remind: Remind) -> None:
    remind.send(account_id=7, order_id="x" * 65)

    (view,) = list_messages(client, QUEUE, state="ready").items

    assert view.kwargs == {"account_id": 7, "order_id": "<str: 65 chars>"}


def test_a_payload_that_is_not_a_message_is_listed_masked_and_can_be_cancelled(
    client: redis.Redis, broker: WakeupRedisBroker
) -> None:
    payload = b"\x00\xff{not json ada@example.com"
    poison = push(client, QUEUE, payload)

    (listed,) = list_messages(client, QUEUE, state="ready").items
    found = find_message(client, [QUEUE], poison)
    outcome = cancel_message(
        client, [QUEUE], poison, max_age_ms=max_age_of(broker), batches=batches_of(client)
    )

    assert (listed.actor_name, listed.message_id, listed.redis_id) == ("?", poison, poison)
    assert listed.args == [f"<payload: {len(payload)} bytes, not a message>"]
    assert "ada@example.com" not in json.dumps(listed.as_dict())
    assert found == listed
    assert (outcome.state, outcome.removed, outcome.revoked) == ("ready", True, False)
    assert client.llen(f"dramatiq:{QUEUE}") == 0
