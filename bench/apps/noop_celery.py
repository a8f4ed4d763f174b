"""The no-op and real-work tasks (``bench.work``), for Celery.

Run as ``celery -A bench.apps.noop_celery worker``; configured by :func:`bench.systems.celery_app`
(JSON, no result backend, ``acks_late``, remote control off).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.systems import celery_app
from bench.work import Blocking

work = Blocking()
app = celery_app("bench_noop", task_default_queue=work.queue)


@app.task(name="noop")
def noop(sent_at: float, payload: Sequence[str] = ()) -> None:
    work.noop(sent_at, payload)


@app.task(name="io")
def io(sent_at: float, payload: Sequence[str], n: int) -> None:
    work.io(sent_at, payload, n)


@app.task(name="cpu")
def cpu(sent_at: float, payload: Sequence[str], n: int) -> None:
    work.cpu(sent_at, payload, n)
