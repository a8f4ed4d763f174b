"""Counts per minute in Redis (``app.minute_counts``): what the console's sparklines draw.

Given tallies counted in memory and flushed to the test's own Redis, when the last minutes are
read, then each field has one count per minute, oldest first, summed over every process.
"""

from __future__ import annotations

import pytest
import redis
from dramatiq.common import current_millis

from app.local.ports import free_port
from app.minute_counts import (
    KEPT_S,
    KEY,
    MinuteTally,
    minute_of,
    read_many_minutes,
    read_minutes,
)

MINUTE_MS = 60_000
#: 30 s into the current minute, so that "a minute earlier" is unambiguous (and near the real
#: time: Redis expires a minute two hours after it began).
NOW_MS = minute_of(current_millis()) * MINUTE_MS + 30_000


def test_a_flushed_tally_is_read_in_its_minute_the_last_one_being_the_current(client):
    tally = MinuteTally()
    tally.add("queue:emails", "done", now_ms=NOW_MS)
    tally.add("queue:emails", "done", 2, now_ms=NOW_MS)
    tally.add("queue:emails", "failed", now_ms=NOW_MS - 2 * MINUTE_MS)

    tally.flush(client, now_ms=NOW_MS)
    counts = read_minutes(client, "queue:emails", minutes=5, now_ms=NOW_MS)

    assert counts == {"done": [0, 0, 0, 0, 3], "failed": [0, 0, 1, 0, 0]}


def test_a_series_without_events_reads_as_no_fields_and_others_do_not_leak_in(client):
    tally = MinuteTally()
    tally.add("queue:emails", "done", now_ms=NOW_MS)
    tally.flush(client, now_ms=NOW_MS)

    assert read_minutes(client, "queue:sync", now_ms=NOW_MS) == {}
    assert len(read_minutes(client, "queue:emails", now_ms=NOW_MS)["done"]) == 60


def test_several_series_read_together_each_get_their_own_counts(client):
    tally = MinuteTally()
    tally.add("queue:emails", "done", now_ms=NOW_MS)
    tally.add("queue:sync", "failed", 2, now_ms=NOW_MS - MINUTE_MS)
    tally.flush(client, now_ms=NOW_MS)

    read = read_many_minutes(
        client, ["queue:emails", "queue:sync", "queue:etl"], minutes=3, now_ms=NOW_MS
    )

    assert read == {
        "queue:emails": {"done": [0, 0, 1]},
        "queue:sync": {"failed": [0, 2, 0]},
        "queue:etl": {},
    }


def test_flushes_of_several_processes_add_up(client):
    first, second = MinuteTally(), MinuteTally()
    first.add("queue:emails", "done", 4, now_ms=NOW_MS)
    second.add("queue:emails", "done", 6, now_ms=NOW_MS)
    second.add("queue:emails", "failed", now_ms=NOW_MS)

    first.flush(client, now_ms=NOW_MS)
    second.flush(client, now_ms=NOW_MS)
    first.flush(client, now_ms=NOW_MS)  # nothing new: nothing counted twice

    counts = read_minutes(client, "queue:emails", minutes=1, now_ms=NOW_MS)
    assert counts == {"done": [10], "failed": [1]}


def test_minutes_older_than_the_window_are_not_read(client):
    tally = MinuteTally()
    tally.add("queue:emails", "done", now_ms=NOW_MS - 3 * MINUTE_MS)
    tally.add("queue:emails", "done", 5, now_ms=NOW_MS - MINUTE_MS)
    tally.flush(client, now_ms=NOW_MS)

    assert read_minutes(client, "queue:emails", minutes=2, now_ms=NOW_MS) == {"done": [5, 0]}


def test_each_minute_expires_two_hours_after_it_began(client):
    tally = MinuteTally()
    tally.add("queue:emails", "done", now_ms=NOW_MS)
    tally.flush(client, now_ms=NOW_MS)

    key = KEY.format(series="queue:emails", minute=minute_of(NOW_MS))
    began_s = minute_of(NOW_MS) * 60
    assert client.expiretime(key) == began_s + KEPT_S


def test_counts_a_flush_could_not_write_are_kept_for_the_next_one(client):
    down = redis.Redis(port=free_port(), socket_connect_timeout=1)
    tally = MinuteTally()
    tally.add("queue:emails", "done", 2, now_ms=NOW_MS)

    with pytest.raises(redis.RedisError):
        tally.flush(down, now_ms=NOW_MS)
    tally.add("queue:emails", "done", now_ms=NOW_MS)
    tally.flush(client, now_ms=NOW_MS)

    assert read_minutes(client, "queue:emails", minutes=1, now_ms=NOW_MS) == {"done": [3]}
