"""Queue and dead-letter inspection against a real Redis and real dead letters."""

from __future__ import annotations

import json

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis

from app.inspection import (
    dead_letter_counts,
    find_dead_letter,
    list_dead_letters,
    purge_dead_letters,
    queue_stats,
    requeue_all,
    requeue_dead_letter,
)

pytest_plugins = ["tests.support.inspection_fixtures"]


def test_a_failed_message_is_listed_and_shown_with_its_actor_and_arguments(dead_letters):
    message_id = dead_letters.make("reports")

    listed = list_dead_letters(dead_letters.client, ["reports", "emails"])
    shown = find_dead_letter(dead_letters.client, ["emails", "reports"], message_id)

    assert [(d.message_id, d.queue_name, d.actor_name) for d in listed] == [
        (message_id, "reports", "explode_reports")
    ]
    assert shown is not None
    assert shown.message["args"] == [7]
    assert shown.as_dict(with_message=True)["message"]["message_id"] == message_id


def test_listing_is_oldest_first_across_queues_and_limited(dead_letters):
    first = dead_letters.make("reports", 1)
    second = dead_letters.make("emails", 2)
    dead_letters.make("reports", 3)

    listed = list_dead_letters(dead_letters.client, ["emails", "reports"], limit=2)

    assert [d.message_id for d in listed] == [first, second]


def test_an_unknown_message_id_is_not_found(dead_letters):
    dead_letters.make("reports")

    assert find_dead_letter(dead_letters.client, ["reports"], "no-such-id") is None


def test_a_dead_letter_is_found_by_its_redis_id_too(dead_letters):
    message_id = dead_letters.make("reports")
    [listed] = list_dead_letters(dead_letters.client, ["reports"])

    shown = find_dead_letter(dead_letters.client, ["reports"], listed.redis_id)

    assert listed.redis_id != message_id
    assert shown is not None
    assert shown.message_id == message_id


def test_a_requeued_dead_letter_runs_again_as_a_fresh_message(dead_letters):
    message_id = dead_letters.make("reports")
    dead_letters.behaviour["reports"] = "succeed"
    client = dead_letters.client
    letter = find_dead_letter(client, ["reports"], message_id)
    assert letter is not None

    outcome = requeue_dead_letter(client, "reports", letter.redis_id)
    queued = json.loads(client.hget("dramatiq:reports.msgs", letter.redis_id))
    dead_letters.run_worker("reports")

    assert outcome == "requeued"
    assert "retries" not in queued["options"]
    assert queued["message_id"] == message_id
    assert queued["options"]["dlq_requeues"] == 1
    # max_age counts from message_timestamp: a requeued message starts its life again.
    assert queued["message_timestamp"] >= queued["options"]["first_sent_at"]
    assert len(dead_letters.runs) == 2
    assert dead_letter_counts(client, ["reports"]) == {"reports": 0}
    assert client.llen("dramatiq:reports") == 0


def test_requeueing_twice_moves_the_message_once(dead_letters):
    dead_letters.make("reports")
    client = dead_letters.client
    [letter] = list_dead_letters(client, ["reports"])

    outcomes = [requeue_dead_letter(client, "reports", letter.redis_id) for _ in range(2)]

    assert outcomes == ["requeued", "missing"]
    assert client.lrange("dramatiq:reports", 0, -1) == [letter.redis_id.encode()]


def test_a_dead_letter_whose_id_is_queued_already_is_left_where_it_is(dead_letters):
    dead_letters.make("reports")
    client = dead_letters.client
    [letter] = list_dead_letters(client, ["reports"])
    client.hset("dramatiq:reports.msgs", letter.redis_id, "{}")

    outcome = requeue_dead_letter(client, "reports", letter.redis_id)

    assert outcome == "already_queued"
    assert dead_letter_counts(client, ["reports"]) == {"reports": 1}


def test_requeue_all_moves_every_dead_letter_of_the_named_queues_only(dead_letters):
    dead_letters.make("reports", 1)
    dead_letters.make("reports", 2)
    dead_letters.make("emails", 3)
    client = dead_letters.client

    outcomes = requeue_all(client, ["reports"])

    assert outcomes["requeued"] == 2
    assert client.llen("dramatiq:reports") == 2
    assert dead_letter_counts(client, ["reports", "emails"]) == {"reports": 0, "emails": 1}


def test_purge_deletes_the_dead_letters_of_the_named_queues_only(dead_letters):
    dead_letters.make("reports", 1)
    dead_letters.make("emails", 2)
    client = dead_letters.client

    purged = purge_dead_letters(client, ["reports"])

    assert purged == {"reports": 1}
    assert dead_letter_counts(client, ["reports", "emails"]) == {"reports": 0, "emails": 1}
    assert not client.exists("dramatiq:reports.XQ.msgs")


def test_queue_stats_give_depths_and_the_age_of_the_oldest_ready_message(
    inspected_redis, redis_url
):
    broker = RedisBroker(url=redis_url, middleware=[])
    broker.declare_queue("reports")
    sent_at = current_millis() - 90_000
    oldest = Message("reports", "explode_reports", (1,), {}, {}, message_timestamp=sent_at)
    broker.enqueue(oldest)
    broker.enqueue(Message("reports", "explode_reports", (2,), {}, {}))
    broker.enqueue(Message("reports", "explode_reports", (3,), {}, {}), delay=60_000)

    [stats] = queue_stats(inspected_redis, ["reports"], now_ms=sent_at + 5_000)
    [empty] = queue_stats(inspected_redis, ["emails"])

    assert (stats.ready, stats.delayed, stats.dead, stats.oldest_age_s) == (2, 1, 0, 5.0)
    assert (empty.ready, empty.oldest_age_s) == (0, 0.0)
    broker.close()


def test_a_retried_message_is_as_old_as_its_retry_not_its_first_send(inspected_redis, redis_url):
    broker = RedisBroker(url=redis_url, middleware=[])
    broker.declare_queue("reports")
    sent_at = current_millis() - 3_600_000
    retried = Message(
        "reports",
        "explode_reports",
        (1,),
        {},
        {"due_at_ms": sent_at + 3_590_000, "retries": 3},
        message_timestamp=sent_at,
    )
    broker.enqueue(retried)

    [stats] = queue_stats(inspected_redis, ["reports"], now_ms=sent_at + 3_600_000)

    assert stats.oldest_age_s == pytest.approx(10.0)
    broker.close()
