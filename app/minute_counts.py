"""Counts per minute, kept in Redis for two hours: what the console's sparklines draw.

A process adds to its own tally in memory (a dict increment under a lock, no round trip per
message) and flushes it every few seconds: worker processes do so with their record
(``app.middleware.fleet``). Each minute of a series is one Redis hash, ``field -> count``,
summed over every process, that expires two hours after it began, so a reader gets the last
hour of the whole fleet in one pipeline of 60 ``HGETALL``.

Counts a process had not flushed when it died are lost (a few seconds' worth): this is a view
for people, not an account; the Prometheus counters are the record.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import cast

import redis
from dramatiq.common import current_millis

from app.redis_client import as_text

#: One minute of one series: a hash of field -> count.
KEY = "fintask:minutes:{series}:{minute}"
#: How long a minute is kept after it began.
KEPT_S = 2 * 3600

_MINUTE_MS = 60_000


def minute_of(now_ms: int) -> int:
    """The minute ``now_ms`` falls in, as minutes since the epoch."""
    return now_ms // _MINUTE_MS


class MinuteTally:
    """A process's counts not yet flushed to Redis."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int, str], int] = {}
        self._lock = threading.Lock()

    def add(self, series: str, field: str, count: int = 1, *, now_ms: int | None = None) -> None:
        """Count ``count`` events of ``field`` in ``series`` in the current minute."""
        minute = minute_of(current_millis() if now_ms is None else now_ms)
        key = (series, minute, field)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + count

    def flush(self, client: redis.Redis, *, now_ms: int | None = None) -> None:
        """Add the tally to Redis and start it again. If Redis does not answer, the counts are
        kept for the next flush (those older than ``KEPT_S`` are dropped) and the error raised."""
        with self._lock:
            counts, self._counts = self._counts, {}
        if not counts:
            return
        pipe = client.pipeline(transaction=False)
        for (series, minute, field), count in counts.items():
            redis_key = KEY.format(series=series, minute=minute)
            pipe.hincrby(redis_key, field, count)
            pipe.expireat(redis_key, (minute * _MINUTE_MS) // 1000 + KEPT_S)
        try:
            pipe.execute()
        except redis.RedisError:
            oldest = minute_of(current_millis() if now_ms is None else now_ms) - KEPT_S // 60
            with self._lock:
                for key, count in counts.items():
                    if key[1] > oldest:
                        self._counts[key] = self._counts.get(key, 0) + count
            raise


def read_minutes(
    client: redis.Redis, series: str, *, minutes: int = 60, now_ms: int | None = None
) -> dict[str, list[int]]:
    """Each field of ``series`` with its count in each of the last ``minutes`` minutes,
    oldest first (the last is the minute in progress); a minute without events counts 0."""
    return read_many_minutes(client, [series], minutes=minutes, now_ms=now_ms)[series]


def read_many_minutes(
    client: redis.Redis, series: Iterable[str], *, minutes: int = 60, now_ms: int | None = None
) -> dict[str, dict[str, list[int]]]:
    """``read_minutes`` of each of ``series``, all in one pipeline: a page drawing a sparkline
    per queue or per actor makes one round trip, not one per line."""
    last = minute_of(current_millis() if now_ms is None else now_ms)
    span = range(last - minutes + 1, last + 1)
    names = list(dict.fromkeys(series))
    pipe = client.pipeline(transaction=False)
    for name in names:
        for minute in span:
            pipe.hgetall(KEY.format(series=name, minute=minute))
    answers = cast(list[dict[bytes, bytes]], pipe.execute())
    read: dict[str, dict[str, list[int]]] = {}
    for position, name in enumerate(names):
        counts: dict[str, list[int]] = {}
        for index, answer in enumerate(answers[position * minutes : (position + 1) * minutes]):
            for field, count in answer.items():
                counts.setdefault(as_text(field), [0] * minutes)[index] = int(count)
        read[name] = counts
    return read


#: This process's tally: what its middleware counts, flushed with its worker record.
TALLY = MinuteTally()
