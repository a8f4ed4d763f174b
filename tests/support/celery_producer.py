"""A real Celery 5.7 app, as a producer that moves off Celery has one: it only publishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery import Celery


def celery_producer(broker_url: str) -> Celery:
    """A Celery app publishing to ``broker_url`` with Celery's defaults (protocol 2, JSON)."""
    app = Celery("shop", broker=broker_url, set_as_current=False)
    app.conf.broker_connection_retry_on_startup = False

    @app.task(name="shop.tasks.record")
    def record(label: str) -> None:
        raise AssertionError("a bridged task runs on fintask, never in the producer")

    return app


class CreatesFileWhenUnpickled:
    """An argument whose unpickling creates ``path``: proof that a consumer unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))
