"""Dramatiq's ``Prometheus`` middleware with its per-message updates batched.

Dramatiq's middleware writes its multiprocess values on every message: in progress up and down,
the count, the duration's sum and bucket, each behind ``labels()``. ``BatchedPrometheus``
subclasses it and keeps everything else (the metric names, labels and buckets that
``ops/alerts.yml`` and the Grafana dashboard query, the exposition server it forks, the
multiprocess directory it reads, the process marked dead at shutdown), and hands each update
to an ``app.metric_batch.MetricBatch``, which writes it within a second. A scrape may see a
second-old count; a worker killed without its shutdown loses its last second of counts.
"""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, Message, Worker
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis
from dramatiq.middleware.prometheus import Prometheus

from app.metric_batch import MetricBatch


def _labels(message: Message[Any] | MessageProxy) -> tuple[str, str]:
    return (message.queue_name, message.actor_name)


class BatchedPrometheus(Prometheus):
    """Dramatiq's metrics, updated through ``batch``: share it with the stack's other metrics
    middleware (``MessageMetrics``), so that one thread writes them all."""

    def __init__(self, *, batch: MetricBatch) -> None:
        super().__init__()
        self.batch = batch

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.batch.start()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        # The last updates are written while the process's files are still its own.
        self.batch.close()
        super().after_worker_shutdown(broker, worker)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        self.batch.add(self.total_rejected_messages, _labels(message))

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        if "retries" in message.options:
            self.batch.add(self.total_retried_messages, _labels(message))

    def before_delay_message(self, broker: Broker, message: MessageProxy) -> None:
        self.delayed_messages.add(message.message_id)
        self.batch.add(self.inprogress_delayed_messages, _labels(message))

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        labels = _labels(message)
        if message.message_id in self.delayed_messages:
            self.delayed_messages.remove(message.message_id)
            self.batch.add(self.inprogress_delayed_messages, labels, -1)
        self.batch.add(self.inprogress_messages, labels)
        self.message_start_times[message.message_id] = current_millis()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        labels = _labels(message)
        started = self.message_start_times.pop(message.message_id, current_millis())
        self.batch.observe(self.message_durations, labels, current_millis() - started)
        self.batch.add(self.inprogress_messages, labels, -1)
        self.batch.add(self.total_messages, labels)
        if exception is not None:
            self.batch.add(self.total_errored_messages, labels)

    after_skip_message = after_process_message
