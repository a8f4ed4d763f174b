"""Scenario 4: fan-out to every user, three ways, to see whose producer memory and queue depth
stay flat as the user table grows tenfold.

Per repetition, strategy by strategy (the order rotates), the strategy's workers start once
(the naive loop and the run share fintask's) and serve both sizes, smaller first; per size a
producer process fans the e-mail out to the first ``n`` active users while the harness samples
the queue depth, Redis memory and the database's query count. See :data:`ABOUT` for what
each metric means.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from app.settings import PROJECT_ROOT
from bench.apps.fanout_database import FanoutDatabase, fanout_database
from bench.apps.fanout_users import (
    CELERY_QUEUE,
    CHUNK_QUEUE,
    CHUNK_SIZE,
    DB_VARIABLE,
    EMAIL_QUEUE,
    HIGH_WATER,
    HIGH_WATER_VARIABLE,
    READY_KEY,
    Mailbox,
    ProducerReport,
)
from bench.harness import Bench, Medians, Scenario, TimeSeries
from bench.systems import (
    SYSTEM_VARIABLE,
    Producer,
    System,
    queue_depth,
    wait_until_count,
    workers,
)
from chunking import RedisQueueDepth

KEY = "fanout"

#: Users per case: (smaller, larger). Full mode's 10^5 and 10^6 are production-sized tables, a
#: factor of ten apart, so whatever grows with the table shows clearly. Quick mode keeps
#: a repetition near half a minute on two cores (two thirds of it starting and stopping
#: processes) and still shows what grows with the table: each size is several chunks.
QUICK_SIZES = (2_500, 10_000)
FULL_SIZES = (100_000, 1_000_000)
#: fintask's high-water mark on the e-mail queue per mode: quick mode's is far below one
#: chunk, so that from its second chunk on, each size sits at the bound it sets (mark + one
#: chunk), as both full sizes do with the production mark.
QUICK_HIGH_WATER = 200

#: Every Dramatiq-kind strategy runs on fintask's production worker shape; Celery on the same
#: 2 x 8 threads, so neither side gets more concurrency or more processes.
FINTASK = System("fintask", "fintask", processes=2, threads=8, prefetch=16)
CELERY = System("Celery", "celery", processes=2, threads=8, pool="threads")

NAIVE = "naive loop"
CELERY_CHUNKS = "Celery chunks()"
FINTASK_RUN = "fintask run"

#: Where Kombu's Redis transport keeps delivered, unacknowledged messages.
CELERY_UNACKED = "unacked"

#: The producer's growth, larger size over smaller, that still counts as "does not grow": 20 %
#: absorbs run-to-run noise, while anything that grows with the table grows tenfold.
GROWTH_TARGET = 1.2

#: The sampling interval of queue depth, Redis memory and the query count.
SAMPLE_S = 0.1

#: Queue depth and DB queries/s of each strategy's last larger case, keyed "strategy, case",
#: for the report's plots. ``values``: ``queue_depth``, ``redis_mb``, ``db_queries`` (running
#: total) and ``db_qps`` (per sampling interval); ``times`` in seconds from producer start.
SERIES: dict[str, TimeSeries] = {}


@dataclass(frozen=True)
class Strategy:
    """One way to fan out: its workers, its producer's command, the queues it fills."""

    name: str
    system: System
    module: str
    producer: str
    queues: tuple[str, ...]

    def command(self, users: int) -> list[str]:
        """The producer process's command line for ``users`` users."""
        return [sys.executable, "-m", self.module, self.producer, str(users)]


DRAMATIQ_APP = "bench.apps.fanout_dramatiq"
STRATEGIES = (
    Strategy(NAIVE, FINTASK, DRAMATIQ_APP, "naive", (EMAIL_QUEUE, CHUNK_QUEUE)),
    Strategy(CELERY_CHUNKS, CELERY, "bench.apps.fanout_celery", "chunks", (CELERY_QUEUE,)),
    Strategy(FINTASK_RUN, FINTASK, DRAMATIQ_APP, "run", (EMAIL_QUEUE, CHUNK_QUEUE)),
)


def case_name(users: int) -> str:
    """The case of a size, as the tables show it: ``100,000 users``."""
    return f"{users:,} users"


def sizes(bench: Bench) -> tuple[int, int]:
    """The two sizes of this mode."""
    return FULL_SIZES if bench.full else QUICK_SIZES


def app_env(bench: Bench, database: FanoutDatabase) -> dict[str, str]:
    """What workers and producers learn from the environment: the database, the mark."""
    high_water = HIGH_WATER if bench.full else QUICK_HIGH_WATER
    return {DB_VARIABLE: database.url, HIGH_WATER_VARIABLE: str(high_water)}


def run(bench: Bench) -> None:
    """One repetition: every strategy, both sizes, on one seeded database."""
    database = fanout_database()
    database.seed(max(sizes(bench)))
    # Strategies that run on the same workers (the naive loop and the run) share one start.
    worker_sets = list(dict.fromkeys((s.system, s.module, s.queues) for s in STRATEGIES))
    for worker_set in bench.order(worker_sets):
        sharing = [s for s in STRATEGIES if (s.system, s.module, s.queues) == worker_set]
        bench.flush()
        try:
            with running(bench, sharing[0], database):
                for strategy in bench.order(sharing):
                    for users in sizes(bench):
                        measure(bench, strategy, database, users)
        finally:
            bench.flush()


@contextmanager
def running(bench: Bench, strategy: Strategy, database: FanoutDatabase) -> Iterator[None]:
    """The strategy's workers, started and answering before the block runs."""
    with workers(
        strategy.system,
        strategy.module,
        strategy.queues,
        redis_url=bench.redis_url,
        log_path=bench.log_path(KEY, strategy.name),
        extra_env=app_env(bench, database),
    ):
        await_ready(bench, strategy)
        yield


def await_ready(bench: Bench, strategy: Strategy, timeout_s: float = 90) -> None:
    """Send probes until every consuming worker process has run one (each adds its pid)."""
    system = strategy.system
    producer = Producer(system.kind, bench.redis_url)
    queue = CELERY_QUEUE if system.kind == "celery" else EMAIL_QUEUE
    deadline = time.monotonic() + timeout_s
    with bench.client() as client:
        try:
            while client.scard(READY_KEY) < system.consumers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{strategy.name}: workers did not answer in {timeout_s} s")
                producer.send(queue, "fanout_ready")
                time.sleep(0.1)
        finally:
            producer.close()
        wait_until_empty(backlog(client, strategy), timeout_s=10)  # the last probes drain


def backlog(client: redis.Redis, strategy: Strategy) -> Callable[[], int]:
    """Messages in the strategy's queues not yet acknowledged: waiting, delayed or prefetched.

    Prefetched messages count because they are still in Redis until acknowledged (Dramatiq's
    ``.msgs`` hashes, Kombu's ``unacked`` hash), and a worker's prefetch would otherwise hide a
    whole fan-out: Celery's 2 x 8 threads with multiplier 4 take 64 chunk messages at once.
    """
    if strategy.system.kind == "celery":
        return lambda: (
            int(client.hlen(CELERY_UNACKED))
            + sum(queue_depth(client, "celery", queue) for queue in strategy.queues)
        )
    depth = RedisQueueDepth(client=client, count_unacked=True)
    return lambda: sum(depth(queue) for queue in strategy.queues)


def wait_until_empty(depth: Callable[[], int], *, timeout_s: float) -> None:
    """Poll ``depth()`` until it reads 0 or ``timeout_s`` passes."""
    wait_until_count(lambda: -depth(), 0, timeout_s=timeout_s)


def redis_used_mb(client: redis.Redis) -> float:
    """Redis's ``used_memory`` now, in MiB."""
    return int(client.info("memory")["used_memory"]) / 2**20


def producer_env(
    bench: Bench, strategy: Strategy, database: FanoutDatabase, scratch: Path
) -> dict[str, str]:
    """An application process's environment: a worker's, minus the worker's identity."""
    env = strategy.system.env(bench.redis_url, scratch, app_env(bench, database))
    env.pop(SYSTEM_VARIABLE)
    env["FINTASK_PROCESS_TYPE"] = "cli"
    return env


def measure(bench: Bench, strategy: Strategy, database: FanoutDatabase, users: int) -> None:
    """Fan out to ``users`` users once and record every metric of the case."""
    timeout_s = 3_600 if bench.full else 120
    with bench.client() as client:
        mailbox = Mailbox(client)
        mailbox.clear()
        idle_mb = redis_used_mb(client)
        series = TimeSeries(interval_s=SAMPLE_S)
        probes = {
            "queue_depth": backlog(client, strategy),
            "redis_mb": lambda: redis_used_mb(client),
            "db_queries": database.queries,
        }
        with (
            tempfile.TemporaryDirectory(prefix="fintask-bench-") as scratch,
            bench.log_path(KEY, strategy.name).open("ab") as log,
            series.sampling(probes),
        ):
            started = time.monotonic()
            produced = subprocess.run(
                strategy.command(users),
                env=producer_env(bench, strategy, database, Path(scratch)),
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=timeout_s,
                check=True,
            )
            enqueue_s = time.monotonic() - started
            wait_until_count(mailbox.calls, users, timeout_s=timeout_s)
            finish_s = time.monotonic() - started
            wait_until_empty(backlog(client, strategy), timeout_s=10)  # a duplicate runs now
        delivered, duplicates = mailbox.counts()
    report = ProducerReport.parse(produced.stdout.decode())
    add_rates(series)
    case = case_name(users)
    if users == max(sizes(bench)):
        SERIES[f"{strategy.name}, {case}"] = series

    def record(metric: str, unit: str, value: float) -> None:
        bench.record(KEY, case, metric, unit, strategy.name, value)

    record("producer peak RSS", "MiB", report.peak_rss_mb)
    record("peak queue depth", "messages", series.peak("queue_depth"))
    record("Redis peak memory", "MiB", series.peak("redis_mb") - idle_mb)
    record("time to enqueue", "s", enqueue_s)
    record("time to finish", "s", finish_s)
    record("DB queries/s, mean", "queries/s", series.values["db_queries"][-1] / series.times[-1])
    record("DB queries/s, peak 1 s", "queries/s", peak_rate(series, window_s=1.0))
    record("emails delivered", "emails", delivered)
    record("duplicate emails", "emails", duplicates)


def add_rates(series: TimeSeries) -> None:
    """Turn the running query total into queries since the first sample and queries/s."""
    totals = series.values["db_queries"]
    first = totals[0]
    series.values["db_queries"] = [total - first for total in totals]
    rates = [0.0]
    for i in range(1, len(totals)):
        elapsed = series.times[i] - series.times[i - 1]
        rates.append((totals[i] - totals[i - 1]) / elapsed if elapsed > 0 else 0.0)
    series.values["db_qps"] = rates


def peak_rate(series: TimeSeries, *, window_s: float) -> float:
    """The highest queries/s over any ``window_s`` stretch of samples."""
    times, totals = series.times, series.values["db_queries"]
    best, start = 0.0, 0
    for end in range(len(times)):
        while times[end] - times[start] > window_s:
            start += 1
        elapsed = max(times[end] - times[start], window_s)
        best = max(best, (totals[end] - totals[start]) / elapsed)
    return best


def verdicts(medians: Medians) -> list[str]:
    """Growth of producer memory and queue depth from the smaller to the larger size, and
    whether every user got exactly one e-mail."""
    measured = {case for case, _ in medians.rows()}
    small, large = next(
        (pair for pair in (FULL_SIZES, QUICK_SIZES) if {case_name(n) for n in pair} <= measured),
        QUICK_SIZES,
    )
    lines = []
    for strategy in (FINTASK_RUN, NAIVE, CELERY_CHUNKS):
        for metric, unit in (("producer peak RSS", "MiB"), ("peak queue depth", "messages")):
            before = medians.get(case_name(small), metric, strategy)
            after = medians.get(case_name(large), metric, strategy)
            if before is None or after is None:
                continue
            ratio = after / before if before else float("inf")
            target = (
                f"target within {GROWTH_TARGET - 1:.0%}: "
                + ("met" if ratio <= GROWTH_TARGET else "missed")
                if strategy == FINTASK_RUN
                else "for contrast"
            )
            lines.append(
                f"{strategy}: {metric} at {large:,} vs {small:,} users: {before:,.4g} -> "
                f"{after:,.4g} {unit} (x{ratio:.2f}; {target})."
            )
    misses = []
    for (case, metric, strategy), values in medians.runs.items():
        users = int(case.split()[0].replace(",", ""))
        if metric == "emails delivered" and min(values) != users:
            misses.append(f"{strategy} at {case}: {min(values):,.0f} of {users:,} delivered")
        if metric == "duplicate emails" and max(values) != 0:
            misses.append(f"{strategy} at {case}: {max(values):,.0f} duplicates")
    lines.append(
        "Exactly one e-mail per user, every strategy, size and repetition: "
        + ("met." if not misses else "missed (" + "; ".join(misses) + ").")
    )
    return lines


ABOUT = f"""
Each strategy e-mails the first *n* active users of a PostgreSQL table `bench_users` (sparse
ids, one user in eleven inactive; seeded once per benchmark run), *n* = {QUICK_SIZES[0]:,} and
{QUICK_SIZES[1]:,} in quick mode, {FULL_SIZES[0]:,} and {FULL_SIZES[1]:,} in full mode. The
e-mail is a Redis script that sets the user's bit and counts a duplicate when the bit was
already set: *emails delivered* is the bitmap's population, *duplicate emails* must be 0.
**naive loop**: a producer loads every id into a list and sends one Dramatiq message per user
through fintask's broker. **Celery chunks()**: a producer loads every id and applies
`email.chunks(ids, {CHUNK_SIZE:,})`, one message per {CHUNK_SIZE:,} users, which Celery's
built-in `celery.starmap` task runs user by user. **fintask run**: a producer starts a
`chunking` run and exits; chunk actors read {CHUNK_SIZE:,} ids by keyset, bulk-enqueue their
e-mails after commit, and hold the next chunk while the e-mail queue is above {HIGH_WATER:,}
(quick mode: {QUICK_HIGH_WATER:,}). Workers: fintask's, 2 processes x 8 threads (prefetch
16), for the naive loop and the run; Celery 2 workers x 8 threads for `chunks()`; started
once per worker set and repetition (the naive loop and the run share fintask's), and
answering, before the first producer starts.
*Producer peak RSS* is the producer process's own peak (Linux `VmHWM`, imports included);
*time to enqueue* runs from the producer's start to its exit, *time to finish* to the last
e-mail. *Peak queue depth* is the most messages of the strategy's queues in Redis and not yet
acknowledged at once: waiting, delayed, or prefetched by a worker (Dramatiq's `.msgs` hashes,
Kombu's `unacked` hash), sampled every {SAMPLE_S} s; a Celery chunk message carries
{CHUNK_SIZE:,} e-mails. *Redis peak memory* is the peak `used_memory` above its value just
before the producer started. *DB queries/s* counts statements in the benchmark database
(`pg_stat_statements`, BEGIN/COMMIT not counted): the mean over the sampled time, and the
busiest 1 s.
"""

SCENARIO = Scenario(
    number=4,
    key=KEY,
    title="Fan-out to every user",
    run=run,
    about=" ".join(ABOUT.split()),
    ratios=((FINTASK_RUN, NAIVE), (FINTASK_RUN, CELERY_CHUNKS)),
    verdicts=verdicts,
    series=lambda: SERIES,
)
