"""The no-op and real-work actors (``bench.work``), for fintask, bare Dramatiq and the two mixes.

Run as ``dramatiq bench.apps.noop_dramatiq``; ``BENCH_SYSTEM`` picks the broker and middleware
(fintask's wake-up consumer and full stack, Dramatiq's own ``RedisBroker`` with its defaults,
or a mix of the two).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dramatiq

from bench.systems import worker_broker
from bench.work import Blocking

broker = worker_broker()
work = Blocking()
OPTIONS: dict[str, Any] = {
    "queue_name": work.queue,
    "max_retries": 0,
    "time_limit": 60_000,
    "max_age": 3_600_000,
}


@dramatiq.actor(**OPTIONS)
def noop(sent_at: float, payload: Sequence[str] = (), **kwargs: Any) -> None:
    work.noop(sent_at, payload)


@dramatiq.actor(**OPTIONS)
def io(sent_at: float, payload: Sequence[str], n: int, **kwargs: Any) -> None:
    work.io(sent_at, payload, n)


@dramatiq.actor(**OPTIONS)
def cpu(sent_at: float, payload: Sequence[str], n: int, **kwargs: Any) -> None:
    work.cpu(sent_at, payload, n)
