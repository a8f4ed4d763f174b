"""``GET /metrics``: the broker-wide gauges (queue depths, consumers, jobs, runs, batches) for
Prometheus.

Each worker type exports its own per-message metrics; these are the ones only a process that
reads Redis and the database as a whole can give.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import dramatiq
import redis
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.db.session import default_engine
from app.inspection import RunTotals, consumers_alive, job_counts, queue_stats, run_totals
from app.outbox import RELAY_GRACE, OutboxCounts, outbox_counts
from app.queues import canonical_queue_names
from app.redis_client import get_redis
from app.settings import load_settings
from chunking.models import RunStatus
from pipelines.batches import BATCHES

#: Runs whose items still count towards progress.
ACTIVE_RUN_STATUSES = (RunStatus.RUNNING, RunStatus.PAUSED)

#: The most recent batches a scrape reads (one pipelined HGETALL each): the library keeps no
#: index of the incomplete ones, so an older batch still open is not counted.
SCRAPED_BATCHES = 1_000
#: The states of a batch not yet complete, and ``firing``: complete, its callbacks not yet
#: confirmed enqueued (one that stays there is stuck).
UNFINISHED_BATCH_STATES = ("open", "sealed", "firing")

_logger = logging.getLogger(__name__)

router = APIRouter(tags=["metrics"])


class BrokerAndWorkCollector(Collector):
    """The broker-wide gauges, read from Redis and the database at scrape time.

    Every web process answers the same, so dashboards and alerts take ``max`` over instances,
    never ``sum``. A source that cannot be read is reported as ``fintask_metrics_source_up`` 0
    while the other's gauges are still served: alerts can tell "no data" from "all is well".
    """

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "fintask_metrics_source_up",
            "1 when /metrics could read its source (broker, database) at this scrape, else 0.",
            labels=["source"],
        )
        sources: tuple[tuple[str, Callable[[], list[GaugeMetricFamily]]], ...] = (
            ("broker", _broker_families),
            ("database", _work_state_families),
            ("batches", _batch_families),
        )
        for source, read in sources:
            try:
                families = read()
            except (redis.RedisError, SQLAlchemyError, OSError) as error:
                _logger.warning("%s metrics unavailable: %s", source, error)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from families
        yield up


def _broker_families() -> list[GaugeMetricFamily]:
    """Per declared queue: messages by state and the oldest ready one's age; consumers alive."""
    client = get_redis()
    names = canonical_queue_names(dramatiq.get_broker().get_declared_queues())
    stats = queue_stats(client, names)
    alive = consumers_alive(client, heartbeat_timeout_ms=load_settings().heartbeat_timeout_ms)
    depth = GaugeMetricFamily(
        "fintask_queue_messages",
        "Messages waiting in a queue, by state (ready, delayed, dead).",
        labels=["queue_name", "state"],
    )
    oldest = GaugeMetricFamily(
        "fintask_queue_oldest_message_age_seconds",
        "How long the oldest ready message of a queue has been due (0 when none is ready).",
        labels=["queue_name"],
    )
    for queue in stats:
        for state in ("ready", "delayed", "dead"):
            depth.add_metric([queue.queue_name, state], getattr(queue, state))
        if queue.oldest_age_s is not None:  # RabbitMQ does not tell it
            oldest.add_metric([queue.queue_name], queue.oldest_age_s)
    consumers = GaugeMetricFamily(
        "fintask_consumers_alive",
        "Worker processes whose broker heartbeat is younger than HEARTBEAT_TIMEOUT_MS.",
        value=alive,
    )
    return [depth, oldest, consumers]


def _batch_families() -> list[GaugeMetricFamily]:
    """Unfinished batches by state, and their members pending, as totals: a batch's id and
    name (``weekly-report:<run id>``) are new for every batch, so a series per batch would
    grow Prometheus without bound; ``fintask batches`` and the console show each one."""
    by_state = dict.fromkeys(UNFINISHED_BATCH_STATES, 0)
    pending = 0
    for progress in BATCHES.recent(limit=SCRAPED_BATCHES):
        if progress.state in by_state:
            by_state[progress.state] += 1
            pending += progress.pending
    batches = GaugeMetricFamily(
        "fintask_batches_unfinished",
        f"Batches among the {SCRAPED_BATCHES:,} most recent not yet fired, by state (open: "
        "taking members; sealed: waiting for its last ones; firing: its callbacks leaving).",
        labels=["state"],
    )
    for state, count in by_state.items():
        batches.add_metric([state], count)
    members = GaugeMetricFamily(
        "fintask_batch_members_pending",
        "Members added to the unfinished batches and not done yet, all batches together.",
        value=pending,
    )
    return [batches, members]


def _work_state_families() -> list[GaugeMetricFamily]:
    """Asynchronous API jobs by status, the outbox, and chunked runs once their table exists."""
    with Session(default_engine()) as session:
        jobs = job_counts(session)
        outbox = outbox_counts(session)
        runs = run_totals(session.connection())
    job_states = GaugeMetricFamily(
        "fintask_jobs", "Asynchronous API jobs by status.", labels=["status"]
    )
    for status, count in jobs.items():
        job_states.add_metric([status], count)
    families = [job_states, *_outbox_families(outbox)]
    return [*families, *_run_families(runs)] if runs is not None else families


def _outbox_families(counts: OutboxCounts) -> list[GaugeMetricFamily]:
    """Messages committed but not sent: waiting (for the send or the relay), and failed."""
    unsent = GaugeMetricFamily(
        "fintask_outbox_unsent_messages",
        "Outbox messages committed and not sent yet; the relay sends those older than "
        f"{RELAY_GRACE.total_seconds():.0f} s.",
        value=counts.unsent,
    )
    failed = GaugeMetricFamily(
        "fintask_outbox_failed_messages",
        "Outbox messages that can never be sent (fintask outbox lists them and why).",
        value=counts.failed,
    )
    return [unsent, failed]


def _run_families(runs: list[RunTotals]) -> list[GaugeMetricFamily]:
    """Runs by name and status, and the items of the unfinished ones: labels are run names,
    which the code declares, so they stay bounded however many runs there are."""
    by_status = GaugeMetricFamily(
        "fintask_runs", "Chunked runs by name and status.", labels=["name", "status"]
    )
    processed = GaugeMetricFamily(
        "fintask_run_items_processed",
        "Items processed so far by the running and paused runs of a name.",
        labels=["name"],
    )
    estimated = GaugeMetricFamily(
        "fintask_run_items_estimated",
        "Items the running and paused runs of a name are expected to process in all.",
        labels=["name"],
    )
    active: dict[str, tuple[int, int]] = {}
    for run in runs:
        by_status.add_metric([run.name, run.status], run.runs)
        done, total = active.get(run.name, (0, 0))
        if run.status in ACTIVE_RUN_STATUSES:
            done, total = done + run.processed, total + run.estimated_total
        active[run.name] = (done, total)
    for name, (done, total) in active.items():
        processed.add_metric([name], done)
        estimated.add_metric([name], total)
    return [by_status, processed, estimated]


_registry = CollectorRegistry()
_registry.register(BrokerAndWorkCollector())


@router.get("/metrics", response_class=Response)
def metrics() -> Response:
    """Prometheus exposition of the broker-wide gauges."""
    return Response(generate_latest(_registry), media_type=CONTENT_TYPE_LATEST)
