"""Prometheus updates gathered in memory and written to prometheus_client once a second.

In a worker process prometheus_client keeps every value in a memory-mapped file shared with the
exposition server (multiprocess mode), and each ``inc`` or ``observe`` takes the value's lock,
checks the process id and writes the file; ``labels()`` takes the metric's lock and looks its
child up. A message passes half a dozen such updates (counted, timed, in progress and back,
its wait): 62.5 µs of the 426 a no-op cost the worker, 18.5 once batched (the profile pair in
``docs/benchmarks.md``, section "Issue 17"). ``MetricBatch`` instead adds each update to a
plain sum under one lock, and a thread writes the sums every ``flush_every_s``: one write per
series and second, whatever the rate.

What that costs: a scrape sees counts up to ``flush_every_s`` late, and a process killed without
its shutdown (SIGKILL, the OOM killer) loses the updates of its last ``flush_every_s``; a
graceful stop writes everything (``close``). prometheus_client has no public way to add many
observations to a histogram at once, so ``flush`` adds to a child's sum and bucket values
(``_sum``, ``_buckets``, ``_upper_bounds``), which the lock pins to prometheus-client 0.26;
``tests/unit/test_metric_batch.py`` checks the result against ``observe``'s.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

logger = logging.getLogger(__name__)

#: How often a batch writes what it gathered, in seconds: well inside a scrape interval
#: (ops/prometheus.yml scrapes every 15 s).
FLUSH_EVERY_S = 1.0

Labels = tuple[str, ...]


@dataclass
class _Observations:
    """What a histogram child was given since the last write: a sum and a count per bucket."""

    upper_bounds: list[float]
    total: float = 0.0
    counts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.upper_bounds)

    def add(self, value: float) -> None:
        self.total += value
        # Histogram.observe counts a value in the first bucket whose bound is >= it.
        self.counts[bisect_left(self.upper_bounds, value)] += 1


class MetricBatch:
    """Counter, gauge and histogram updates of one process, written in one go.

    ``add`` and ``observe`` are safe from any thread. ``start`` runs the writer thread and
    ``close`` stops it after a last write; both may be called more than once (every middleware
    sharing a batch calls them from its worker boot and shutdown hooks).
    """

    def __init__(self, *, flush_every_s: float = FLUSH_EVERY_S) -> None:
        self.flush_every_s = flush_every_s
        self._lock = threading.Lock()
        self._children: dict[tuple[Any, Labels], Any] = {}
        self._amounts: dict[Any, float] = {}
        self._observations: dict[Any, _Observations] = {}
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    def add(self, metric: Counter | Gauge, labels: Labels, amount: float = 1.0) -> None:
        """Add ``amount`` to the series ``labels`` of a counter (>= 0) or gauge (any sign)."""
        with self._lock:
            child = self._child(metric, labels)
            self._amounts[child] = self._amounts.get(child, 0.0) + amount

    def observe(self, histogram: Histogram, labels: Labels, value: float) -> None:
        """Observe ``value`` in the series ``labels`` of ``histogram``."""
        with self._lock:
            child = self._child(histogram, labels)
            pending = self._observations.get(child)
            if pending is None:
                pending = self._observations[child] = _Observations(child._upper_bounds)
            pending.add(value)

    def flush(self) -> None:
        """Write what was gathered since the last write to prometheus_client's values."""
        with self._lock:
            amounts, self._amounts = self._amounts, {}
            observations, self._observations = self._observations, {}
        for child, amount in amounts.items():
            if amount:  # a gauge that went up and down again
                child.inc(amount)
        for child, pending in observations.items():
            child._sum.inc(pending.total)
            for bucket, count in zip(child._buckets, pending.counts, strict=True):
                if count:
                    bucket.inc(count)

    def start(self) -> None:
        """Write every ``flush_every_s`` from a daemon thread, unless one already does."""
        if self._writer is not None and self._writer.is_alive():
            return
        self._stop.clear()
        self._writer = threading.Thread(target=self._write_until_stopped, daemon=True)
        self._writer.name = "fintask-metrics"
        self._writer.start()

    def close(self) -> None:
        """Stop the writer thread, then write what is left."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join()
            self._writer = None
        self.flush()

    def _write_until_stopped(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            try:
                self.flush()
            except Exception:
                # A metric must not stop the worker: this second's updates are lost, the
                # next second's are written.
                logger.exception("Could not write the batched metrics")

    def _child(self, metric: Any, labels: Labels) -> Any:
        """The metric's child for ``labels``, looked up once (the caller holds the lock)."""
        child = self._children.get((metric, labels))
        if child is None:
            child = self._children[(metric, labels)] = metric.labels(*labels)
        return child
