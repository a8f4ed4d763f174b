"""The no-op and real-work tasks (``bench.work``), for Huey.

Run as ``huey_consumer bench.apps.noop_huey.huey``; a ``RedisHuey`` with no result store
(:func:`bench.systems.huey_app`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bench.systems import huey_app
from bench.work import REDIS_VARIABLE, Blocking

work = Blocking()
huey = huey_app(os.environ[REDIS_VARIABLE], work.queue)


@huey.task(name="noop")
def noop(sent_at: float, payload: Sequence[str] = ()) -> None:
    work.noop(sent_at, payload)


@huey.task(name="io")
def io(sent_at: float, payload: Sequence[str], n: int) -> None:
    work.io(sent_at, payload, n)


@huey.task(name="cpu")
def cpu(sent_at: float, payload: Sequence[str], n: int) -> None:
    work.cpu(sent_at, payload, n)
