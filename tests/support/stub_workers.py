"""Running a StubBroker queue to the end in a unit test, failures and retries included."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker


def run_until_idle(broker: StubBroker, queue_name: str) -> None:
    """Run ``queue_name`` on one worker thread until it is empty; failing messages retry."""
    worker = dramatiq.Worker(broker, queues={queue_name}, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        broker.join(queue_name, fail_fast=False)
        worker.join()
    finally:
        worker.stop()
