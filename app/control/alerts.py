"""The alerts of ``ops/alerts.yml``, evaluated over what the console reads, not over Prometheus.

An operator on the console's Overview should see the alert that is about to page them, even
where no Prometheus runs (a laptop, a staging stack). Each rule of ``ops/alerts.yml`` that can
be decided from Redis and the database is a ``Rule`` here, with the file's thresholds (PyYAML
is not among fintask's dependencies, so they are written out below, and
``tests/unit/test_control_alerts.py`` holds them equal to the file's expressions); the others
are listed in ``NOT_EVALUABLE`` with the reason, and the page shows both.

What differs from Prometheus, and is said on the page: the console sees one moment, so a rule
fires here as soon as its condition holds, where Prometheus waits its ``for:`` before paging;
rates come from the counts per minute of ``app.minute_counts`` (per queue, where the metric is
per actor), over the window's whole minutes and the one in progress.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import redis
from sqlalchemy.orm import Session

from app.control.overview import Overview
from app.outbox import failed_messages
from chunking.redis_keys import dead_letters_key

#: FintaskHighErrorRate: more than this share of runs failed over the window...
ERROR_SHARE_MAX = 0.05
ERROR_WINDOW_MIN = 5
#: ...while more than this many ran per second (a rare message that fails is no alert).
ERROR_RATE_MIN_PER_S = 0.01
#: FintaskQueueBacklog: more ready messages than this.
BACKLOG_READY_MAX = 10_000
#: FintaskOldestMessageTooOld: the oldest ready message of a queue (urgent's aside) waited
#: longer than this.
OLDEST_AGE_MAX_S = 600
#: FintaskUrgentMessagesWaiting: the oldest ready urgent notification waited longer than this.
URGENT_QUEUE = "urgent_notifications"
URGENT_AGE_MAX_S = 60
#: FintaskNoConsumers: fewer worker processes with a fresh broker heartbeat than this.
CONSUMERS_MIN = 1
#: FintaskQueueStalled: messages ready and none processed over this window.
STALLED_WINDOW_MIN = 10
#: FintaskDeadLettersGrowing: new dead letters over this window.
DEAD_LETTERS_WINDOW_MIN = 30
#: FintaskOutboxMessagesFailed: an outbox message failed over this window.
OUTBOX_FAILED_WINDOW_MIN = 30

Severity = Literal["warning", "critical"]


@dataclass(frozen=True)
class Readings:
    """What some rules need besides the overview, read at the same moment."""

    #: Per queue, the dead letters that died within ``DEAD_LETTERS_WINDOW_MIN``.
    new_dead_letters: dict[str, int]
    #: When the latest outbox message that can never be sent failed (None: none did).
    outbox_failed_at: dt.datetime | None


#: A rule's condition: the targets (a queue, or ``fleet``) it holds for, each with a sentence.
Check = Callable[[Overview, Readings], Iterable[tuple[str, str]]]


@dataclass(frozen=True)
class Rule:
    """An alert of ``ops/alerts.yml`` as the console evaluates it."""

    name: str
    severity: Severity
    #: The rule's ``for:``: how long Prometheus waits, the condition holding, before paging.
    wait: str
    #: How the console decides it, for the page.
    how: str
    check: Check


@dataclass(frozen=True)
class NotEvaluable:
    """An alert of ``ops/alerts.yml`` the console cannot decide, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Firing:
    """A rule whose condition holds now for ``target``."""

    rule: Rule
    target: str
    text: str


def read_alerts(client: redis.Redis, session: Session, overview: Overview) -> list[Firing]:
    """The alerts firing over ``overview``, with what the rules read besides it as of the same
    moment."""
    names = [queue.queue_name for queue in overview.queues]
    return evaluate(overview, read_readings(client, session, names, now_ms=overview.read_at_ms))


def read_readings(
    client: redis.Redis, session: Session, queue_names: Sequence[str], *, now_ms: int
) -> Readings:
    """The new dead letters of each queue (a dead letter's score is when it died) and the
    latest outbox failure."""
    since_ms = now_ms - DEAD_LETTERS_WINDOW_MIN * 60_000
    pipe = client.pipeline(transaction=False)
    for name in queue_names:
        pipe.zcount(dead_letters_key(name), since_ms, "+inf")
    new = {name: int(count) for name, count in zip(queue_names, pipe.execute(), strict=True)}
    latest = failed_messages(session, limit=1)
    return Readings(new_dead_letters=new, outbox_failed_at=latest[0].failed_at if latest else None)


def evaluate(overview: Overview, readings: Readings) -> list[Firing]:
    """The rules that fire over the overview, critical ones first, else in the file's order."""
    firing = [
        Firing(rule, target, text)
        for rule in RULES
        for target, text in rule.check(overview, readings)
    ]
    return sorted(firing, key=lambda alert: alert.rule.severity != "critical")


def window(counts: Sequence[int], minutes: int) -> int:
    """The sum of ``counts`` (one per minute, the last in progress) over the last ``minutes``
    whole minutes and the one in progress: at least the last ``minutes`` minutes."""
    return sum(counts[-(minutes + 1) :])


def _high_error_rate(overview: Overview, _: Readings) -> Iterator[tuple[str, str]]:
    for queue in overview.queues:
        failed = window(queue.failed, ERROR_WINDOW_MIN)
        runs = failed + window(queue.done, ERROR_WINDOW_MIN)
        rate_per_s = runs / (ERROR_WINDOW_MIN * 60)
        if runs and failed / runs > ERROR_SHARE_MAX and rate_per_s > ERROR_RATE_MIN_PER_S:
            yield (
                queue.queue_name,
                f"{queue.queue_name}: {failed / runs:.0%} of {runs} runs failed in the last "
                f"{ERROR_WINDOW_MIN} minutes",
            )


def _backlog(overview: Overview, _: Readings) -> Iterator[tuple[str, str]]:
    for queue in overview.queues:
        if queue.counts.ready > BACKLOG_READY_MAX:
            yield (
                queue.queue_name,
                f"{queue.queue_name}: {queue.counts.ready} messages ready and waiting "
                f"(more than {BACKLOG_READY_MAX})",
            )


def _oldest_too_old(overview: Overview, _: Readings) -> Iterator[tuple[str, str]]:
    for queue in overview.queues:
        age_s = queue.counts.oldest_age_s
        if queue.queue_name != URGENT_QUEUE and age_s > OLDEST_AGE_MAX_S:
            yield (
                queue.queue_name,
                f"{queue.queue_name}: the oldest ready message has waited {age_s:.0f} s "
                f"(more than {OLDEST_AGE_MAX_S} s)",
            )


def _urgent_waiting(overview: Overview, _: Readings) -> Iterator[tuple[str, str]]:
    for queue in overview.queues:
        age_s = queue.counts.oldest_age_s
        if queue.queue_name == URGENT_QUEUE and age_s > URGENT_AGE_MAX_S:
            yield (
                queue.queue_name,
                f"Urgent notifications have waited {age_s:.0f} s (more than {URGENT_AGE_MAX_S} s)",
            )


def _no_consumers(overview: Overview, _: Readings) -> Iterator[tuple[str, str]]:
    if overview.consumers_alive < CONSUMERS_MIN:
        yield "fleet", "No worker process is consuming messages: no broker heartbeat is fresh"


def _stalled(overview: Overview, _: Readings) -> Iterator[tuple[str, str]]:
    for queue in overview.queues:
        processed = window(queue.done, STALLED_WINDOW_MIN) + window(
            queue.failed, STALLED_WINDOW_MIN
        )
        # Its oldest message has waited the whole window: the counts do not reach back before
        # the fleet began writing them, and a message sent a minute ago has not stalled.
        waited = queue.counts.oldest_age_s >= STALLED_WINDOW_MIN * 60
        if queue.counts.ready > 0 and waited and processed == 0:
            paused = " (the queue is paused)" if queue.counts.paused else ""
            yield (
                queue.queue_name,
                f"{queue.queue_name}: {queue.counts.ready} messages wait but none was processed "
                f"for {STALLED_WINDOW_MIN} minutes{paused}",
            )


def _dead_letters_growing(_: Overview, readings: Readings) -> Iterator[tuple[str, str]]:
    for name, count in readings.new_dead_letters.items():
        if count > 0:
            yield (
                name,
                f"{name}: {count} new dead letters in the last {DEAD_LETTERS_WINDOW_MIN} minutes",
            )


def _outbox_failed(overview: Overview, readings: Readings) -> Iterator[tuple[str, str]]:
    failed_at = readings.outbox_failed_at
    since = overview.read_at - dt.timedelta(minutes=OUTBOX_FAILED_WINDOW_MIN)
    if failed_at is not None and failed_at >= since:
        yield (
            "outbox",
            f"An outbox message could not be sent in the last {OUTBOX_FAILED_WINDOW_MIN} "
            "minutes: see which and why with fintask outbox",
        )


#: The rules of ``ops/alerts.yml`` the console evaluates, in the file's order.
RULES: tuple[Rule, ...] = (
    Rule(
        "FintaskHighErrorRate",
        "warning",
        "10m",
        f"more than {ERROR_SHARE_MAX:.0%} of a queue's runs failed in the last "
        f"{ERROR_WINDOW_MIN} minutes, at more than {ERROR_RATE_MIN_PER_S} runs/s (Prometheus "
        "counts per actor)",
        _high_error_rate,
    ),
    Rule(
        "FintaskQueueBacklog",
        "warning",
        "15m",
        f"a queue has more than {BACKLOG_READY_MAX} messages ready",
        _backlog,
    ),
    Rule(
        "FintaskOldestMessageTooOld",
        "warning",
        "5m",
        f"the oldest ready message of a queue ({URGENT_QUEUE} aside) has waited more than "
        f"{OLDEST_AGE_MAX_S} s",
        _oldest_too_old,
    ),
    Rule(
        "FintaskUrgentMessagesWaiting",
        "critical",
        "2m",
        f"the oldest ready message of {URGENT_QUEUE} has waited more than {URGENT_AGE_MAX_S} s",
        _urgent_waiting,
    ),
    Rule(
        "FintaskNoConsumers",
        "critical",
        "2m",
        "no worker process has a broker heartbeat younger than HEARTBEAT_TIMEOUT_MS",
        _no_consumers,
    ),
    Rule(
        "FintaskQueueStalled",
        "critical",
        "10m",
        f"a queue's oldest ready message has waited {STALLED_WINDOW_MIN} minutes and none was "
        f"processed (done or failed) meanwhile",
        _stalled,
    ),
    Rule(
        "FintaskDeadLettersGrowing",
        "warning",
        "5m",
        f"a queue has dead letters that died in the last {DEAD_LETTERS_WINDOW_MIN} minutes "
        "(Prometheus: its count grew, which a purge meanwhile hides)",
        _dead_letters_growing,
    ),
    Rule(
        "FintaskOutboxMessagesFailed",
        "warning",
        "1m",
        f"an outbox message was marked failed in the last {OUTBOX_FAILED_WINDOW_MIN} minutes",
        _outbox_failed,
    ),
)

#: The rules of ``ops/alerts.yml`` about what only Prometheus sees.
NOT_EVALUABLE: tuple[NotEvaluable, ...] = (
    NotEvaluable(
        "FintaskMetricsSourceDown",
        "it watches /metrics reading Redis and the database; the console reads both itself, "
        "and while either is down it shows an error instead of this page",
    ),
    NotEvaluable(
        "FintaskTargetDown",
        "whether each process's metrics port answers scrapes is known to Prometheus only",
    ),
)
