"""fintask's own Prometheus instruments, beside Dramatiq's.

In worker processes ``fintask process`` points ``PROMETHEUS_MULTIPROC_DIR`` at the process
type's directory before anything imports prometheus_client, so these land in the same files
Dramatiq's exposition server reads. Durations are in seconds, Prometheus's base unit (Dramatiq's
own ``dramatiq_message_duration_milliseconds`` says its unit in its name).

Labels are bounded: actor and queue names come from declared actors, exception names are capped
by ``app.middleware.metrics.MessageMetrics``, and lock policies are the three ``Mutex`` outcomes.
Other middleware count through the two ``count_*`` hooks, whose signatures match the
``on_defer`` of ``RateLimits`` and the ``on_contention`` of ``Mutex``.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Message
from dramatiq.broker import MessageProxy
from prometheus_client import Counter, Histogram

NOTIFICATIONS = Counter(
    "fintask_notifications",
    "Notifications handled by a worker, by channel and outcome (sent, expired, duplicate).",
    ["channel", "outcome"],
)

MESSAGE_FAILURES = Counter(
    "fintask_message_failures",
    "Message runs that raised, by actor, queue and exception class name (capped; the rest "
    "count as 'other'). Every failed attempt counts, retried or not.",
    ["actor_name", "queue_name", "exception"],
)

MESSAGE_WAIT = Histogram(
    "fintask_message_wait_seconds",
    "Time from when a message was due (sent, or the end of its delay or retry backoff) to when "
    "a worker started it.",
    ["queue_name"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600),
)

RATE_LIMIT_DEFERRALS = Counter(
    "fintask_rate_limit_deferrals",
    "Messages a rate limit deferred to a later slot instead of running them.",
    ["actor_name"],
)

LOCK_CONTENTION = Counter(
    "fintask_lock_contention",
    "Messages that found their lock held, by the actor's contention policy (skip, defer, fail).",
    ["actor_name", "policy"],
)


def count_rate_limit_deferral(message: Message[Any] | MessageProxy, delay_ms: int) -> None:
    """``RateLimits(on_defer=...)``: count one deferral of ``message``."""
    RATE_LIMIT_DEFERRALS.labels(message.actor_name).inc()


def count_lock_contention(message: Message[Any] | MessageProxy, policy: str) -> None:
    """``Mutex(on_contention=...)``: count one message that met a held lock."""
    LOCK_CONTENTION.labels(message.actor_name, policy).inc()
