"""Scenario 4: fan-out to every user, per user and per page: fintask, Dramatiq, Celery, and in
full mode taskiq, Huey, arq and RQ.

Per repetition, system by system (the order rotates), the system's workers start and serve its
strategies (full mode: each strategy starts its own, so its memory is its own), both sizes,
smaller first (some strategies one size only: :func:`sizes_of`); per size a producer process
fans the e-mail out to the first ``n`` active users while the harness samples the queue depth,
Redis memory and the database's query count, and reads the workers' CPU time before and after.
See :data:`ABOUT` for what each metric means.
"""

from __future__ import annotations

import subprocess
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
    BACKPRESSURE_MS,
    CHUNK_SIZE,
    DB_VARIABLE,
    HIGH_WATER,
    HIGH_WATER_VARIABLE,
    PEER_QUEUE,
    QUEUES,
    READY_KEY,
    Mailbox,
    ProducerReport,
)
from bench.harness import Bench, Medians, Scenario, TimeSeries
from bench.systems import (
    SYSTEM_VARIABLE,
    Producer,
    System,
    Workers,
    queue_depth,
    wait_until_count,
)
from chunking import RedisQueueDepth

KEY = "fanout"

#: Users per case: (smaller, larger). Full mode's 10^5 and 10^6 are production-sized tables, a
#: factor of ten apart, so whatever grows with the table shows clearly. Quick mode's are half a
#: page and two pages, and only fintask's runs run both (see :func:`sizes_of`), to keep to its
#: budget.
QUICK_SIZES = (500, 2_000)
FULL_SIZES = (100_000, 1_000_000)
#: The walkers' high-water mark per mode: quick mode's is below one page, so that from its
#: second page on a size sits at the bound it sets (mark + one page), as both full sizes do
#: with the production mark. Quick mode's smaller size has no second page, so its queue depth
#: is no baseline for growth (:func:`has_target`).
QUICK_HIGH_WATER = 200

#: Every system with 16 task slots: fintask's production worker shape, 2 processes x 8
#: threads (Celery: two ``-P threads -c 8`` workers; taskiq: 2 workers x 8 async tasks, its
#: default read-ahead; arq: 2 workers x ``max_jobs`` 8), so none gets more concurrency or
#: processes; Huey and RQ, which have no processes x threads, 16 threads (one consumer) and 16
#: ``SimpleWorker`` processes.
FINTASK = System("fintask", "fintask", processes=2, threads=8, prefetch=16)
DRAMATIQ = System("Dramatiq", "dramatiq", processes=2, threads=8, prefetch=16)
CELERY = System("Celery", "celery", processes=2, threads=8, pool="threads")
TASKIQ = System("taskiq", "taskiq", processes=2, threads=8)
HUEY = System("Huey", "huey", processes=16, pool="thread")
ARQ = System("arq", "arq", processes=2, threads=8)
RQ = System("RQ", "rq", processes=16, pool="simple")
#: The peers run in full mode only, and there at the smaller size only: their worker starts
#: (16 RQ processes, arq's own venv) do not fit quick mode's minute, and RQ's per-user walker,
#: at about 13 ms of worker CPU per e-mail job on 2 cores, would take hours at 10^6.
PEERS = (TASKIQ, HUEY, ARQ, RQ)


def module_of(system: System) -> str:
    """The fan-out worker module of ``system``'s kind (fintask and Dramatiq share one)."""
    return f"bench.apps.fanout_{'dramatiq' if system.dramatiq else system.kind}"


def queues_of(system: System) -> tuple[str, ...]:
    """The queues ``system``'s workers consume: three, or the peers' one."""
    return (PEER_QUEUE,) if system in PEERS else QUEUES


#: Where Kombu's Redis transport keeps delivered, unacknowledged messages (eta ones included).
CELERY_UNACKED = "unacked"
#: taskiq-redis's consumer group on its stream (``RedisStreamBroker``'s default name).
TASKIQ_GROUP = "taskiq"

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
    """One way to fan out: its system's workers, its producer, and its granularity."""

    name: str
    system: System
    producer: str
    #: One message (and one retry, one ack) per page of ``CHUNK_SIZE`` e-mails, not per e-mail.
    per_page: bool

    def command(self, users: int) -> list[str]:
        """The producer process's command line for ``users`` users (arq's in arq's venv)."""
        command = [self.system.python, "-m", module_of(self.system), self.producer, str(users)]
        return command if self.system.kind != "dramatiq" else [*command, "--kind", "dramatiq"]


NAIVE = "naive loop"
FINTASK_RUN = "fintask run, per user"
FINTASK_PAGES = "fintask run, per page"
CELERY_CHUNKS = "Celery chunks()"
STRATEGIES = (
    Strategy(NAIVE, FINTASK, "naive", per_page=False),
    Strategy(FINTASK_RUN, FINTASK, "run", per_page=False),
    Strategy(FINTASK_PAGES, FINTASK, "run-pages", per_page=True),
    Strategy("Dramatiq walker, per user", DRAMATIQ, "walk", per_page=False),
    Strategy("Dramatiq walker, per page", DRAMATIQ, "walk-pages", per_page=True),
    Strategy(CELERY_CHUNKS, CELERY, "chunks", per_page=True),
    Strategy("Celery walker, per user", CELERY, "walk", per_page=False),
    Strategy("Celery walker, per page", CELERY, "walk-pages", per_page=True),
    Strategy("taskiq walker, per user", TASKIQ, "walk", per_page=False),
    Strategy("taskiq walker, per page", TASKIQ, "walk-pages", per_page=True),
    Strategy("Huey walker, per user", HUEY, "walk", per_page=False),
    Strategy("Huey walker, per page", HUEY, "walk-pages", per_page=True),
    Strategy("arq walker, per user", ARQ, "walk", per_page=False),
    Strategy("arq walker, per page", ARQ, "walk-pages", per_page=True),
    Strategy("RQ walker, per user", RQ, "walk", per_page=False),
    Strategy("RQ walker, per page", RQ, "walk-pages", per_page=True),
)
FINTASK_RUNS = (FINTASK_RUN, FINTASK_PAGES)


def case_name(users: int) -> str:
    """The case of a size, as the tables show it: ``100,000 users``."""
    return f"{users:,} users"


def sizes(bench: Bench) -> tuple[int, int]:
    """The two sizes of this mode."""
    return FULL_SIZES if bench.full else QUICK_SIZES


def sizes_of(bench: Bench, strategy: Strategy) -> tuple[int, ...]:
    """The sizes ``strategy`` runs: both, but the peers only the smaller (full mode), and in
    quick mode only fintask's runs both (their flat-growth target), the others the larger."""
    small, large = sizes(bench)
    if strategy.system in PEERS:
        return (small,)
    if bench.full or strategy.name in FINTASK_RUNS:
        return (small, large)
    return (large,)


def app_env(bench: Bench, database: FanoutDatabase) -> dict[str, str]:
    """What workers and producers learn from the environment: the database, the mark."""
    high_water = HIGH_WATER if bench.full else QUICK_HIGH_WATER
    return {DB_VARIABLE: database.url, HIGH_WATER_VARIABLE: str(high_water)}


def strategies(bench: Bench) -> list[Strategy]:
    """This mode's strategies: the peers' in full mode only."""
    return [s for s in STRATEGIES if bench.full or s.system not in PEERS]


def worker_sets(bench: Bench) -> list[list[Strategy]]:
    """The strategies that share one start of workers: a system's, or in full mode each alone
    (a start per strategy is noise at 10^6 users and keeps its worker memory its own)."""
    if bench.full:
        return [[strategy] for strategy in strategies(bench)]
    systems = dict.fromkeys(strategy.system for strategy in strategies(bench))
    return [[s for s in strategies(bench) if s.system == system] for system in systems]


def run(bench: Bench) -> None:
    """One repetition: every strategy, both sizes, on one seeded database."""
    database = fanout_database()
    database.seed(max(sizes(bench)))
    for sharing in bench.order(worker_sets(bench)):
        bench.flush()
        try:
            with running(bench, sharing[0].system, database) as started:
                for strategy in bench.order(sharing):
                    for users in sizes_of(bench, strategy):
                        measure(bench, strategy, database, users, started)
        finally:
            bench.flush()


@contextmanager
def running(bench: Bench, system: System, database: FanoutDatabase) -> Iterator[Workers]:
    """``system``'s fan-out workers on every fan-out queue, started and answering."""
    env = app_env(bench, database)
    with bench.workers(KEY, system, module_of(system), queues_of(system), extra_env=env) as started:
        await_ready(bench, system)
        yield started


def await_ready(bench: Bench, system: System, timeout_s: float = 90) -> None:
    """Send probes until every consuming worker process has run one (each adds its pid)."""
    producer = Producer(system.kind, bench.redis_url, scenario=KEY)
    queue = queues_of(system)[0]
    deadline = time.monotonic() + timeout_s
    with bench.client() as client:
        try:
            while client.scard(READY_KEY) < system.consumers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system.name}: workers did not answer in {timeout_s} s")
                producer.send(queue, "fanout_ready")
                time.sleep(0.1)
        finally:
            producer.close()
        wait_until_empty(backlog(client, system), timeout_s=10)  # the last probes drain


def backlog(client: redis.Redis, system: System) -> Callable[[], int]:
    """Messages in the fan-out queues not yet acknowledged: waiting, delayed or prefetched.

    Prefetched messages count because they are still in Redis until acknowledged (Dramatiq's
    ``.msgs`` hashes, Kombu's ``unacked`` hash), and a worker's prefetch would otherwise hide a
    whole fan-out: Celery's 2 x 8 threads with multiplier 4 take 64 page messages at once.
    Huey takes a message off its list when it starts it (nothing of it stays in Redis); RQ
    keeps a started job in its started registry until it ends; taskiq keeps a message its
    workers have read in its group's pending entries until acknowledged; arq keeps a job in its
    sorted set until it ends.
    """
    if system.kind in ("huey", "arq"):
        return lambda: queue_depth(client, system.kind, PEER_QUEUE)
    if system.kind == "taskiq":
        return lambda: queue_depth(client, "taskiq", PEER_QUEUE) + taskiq_pending(client)
    if system.kind == "rq":
        return lambda: (
            queue_depth(client, "rq", PEER_QUEUE) + int(client.zcard(f"rq:wip:{PEER_QUEUE}"))
        )
    if system.kind == "celery":
        return lambda: (
            int(client.hlen(CELERY_UNACKED))
            + sum(queue_depth(client, "celery", queue) for queue in QUEUES)
        )
    depth = RedisQueueDepth(client=client, count_unacked=True)
    return lambda: sum(depth(queue) for queue in QUEUES)


def taskiq_pending(client: redis.Redis) -> int:
    """taskiq's messages of the fan-out stream read by a worker and not yet acknowledged."""
    if not client.exists(PEER_QUEUE) or not client.xinfo_groups(PEER_QUEUE):
        return 0
    return int(client.xpending(PEER_QUEUE, TASKIQ_GROUP)["pending"])


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


def measure(
    bench: Bench, strategy: Strategy, database: FanoutDatabase, users: int, started: Workers
) -> None:
    """Fan out to ``users`` users once and record every metric of the case."""
    timeout_s = 3_600 if bench.full else 120
    with bench.client() as client:
        mailbox = Mailbox(client)
        mailbox.clear()
        idle_mb = redis_used_mb(client)
        series = TimeSeries(interval_s=SAMPLE_S)
        probes = {
            "queue_depth": backlog(client, strategy.system),
            "redis_mb": lambda: redis_used_mb(client),
            "db_queries": database.queries,
        }
        cpu_before = started.cpu_seconds()
        with (
            tempfile.TemporaryDirectory(prefix="fintask-bench-") as scratch,
            bench.log_path(KEY, strategy.name).open("ab") as log,
            series.sampling(probes),
        ):
            env = producer_env(bench, strategy, database, Path(scratch))
            command = strategy.command(users)
            bench.note_command(KEY, strategy.name, command, env=env)
            begun = time.monotonic()
            produced = subprocess.run(
                command,
                env=env,
                cwd=PROJECT_ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=timeout_s,
                check=True,
            )
            enqueue_s = time.monotonic() - begun
            wait_until_count(mailbox.calls, users, timeout_s=timeout_s)
            finish_s = time.monotonic() - begun
            wait_until_empty(backlog(client, strategy.system), timeout_s=10)  # a duplicate runs
        worker_cpu_s = started.cpu_seconds() - cpu_before
        delivered, duplicates = mailbox.counts()
    report = ProducerReport.parse(produced.stdout.decode())
    add_rates(series)
    case = case_name(users)
    if users == max(sizes(bench)):
        SERIES[f"{strategy.name}, {case}"] = series

    setting = strategy.system.setting()

    def record(metric: str, unit: str, value: float) -> None:
        bench.record(KEY, case, metric, unit, strategy.name, value, setting=setting)

    record("time to enqueue", "s", enqueue_s)
    record("time to finish", "s", finish_s)
    record("producer peak RSS", "MiB", report.peak_rss_mb)
    record("producer CPU", "s", report.cpu_s)
    record("worker CPU per e-mail", "ms", 1000 * worker_cpu_s / users)
    record("worker peak PSS", "MiB", started.peak_pss_mb)
    record("peak queue depth", "messages", series.peak("queue_depth"))
    record("Redis peak memory", "MiB", series.peak("redis_mb") - idle_mb)
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


def measured_sizes(medians: Medians) -> tuple[int, int]:
    """The pair of sizes these medians hold (full mode's when both are there)."""
    measured = {case for case, _ in medians.rows()}
    return next(
        (pair for pair in (FULL_SIZES, QUICK_SIZES) if {case_name(n) for n in pair} <= measured),
        QUICK_SIZES,
    )


def ranked(medians: Medians, case: str, metric: str, names: list[str]) -> list[tuple[str, float]]:
    """``names`` with their median of ``metric`` in ``case``, smallest first."""
    values = [(name, medians.get(case, metric, name)) for name in names]
    return sorted(((n, v) for n, v in values if v is not None), key=lambda item: item[1])


def speed_verdicts(medians: Medians, users: int) -> list[str]:
    """Which strategy finishes first, overall and within each granularity, and where
    fintask's runs stand: the fastest is named as measured, not assumed."""
    case = case_name(users)
    lines = []
    for per_page, label in ((False, "one message per e-mail"), (True, "one message per page")):
        names = [s.name for s in STRATEGIES if s.per_page == per_page]
        order = ranked(medians, case, "time to finish", names)
        if len(order) < 2:
            continue
        listing = ", ".join(f"{name} {value:,.3g} s" for name, value in order)
        lines.append(f"time to finish {case}, {label}, fastest first: {listing}.")
        best_name, best = order[0]
        for name, value in order:
            if name in FINTASK_RUNS and name != best_name:
                lines.append(
                    f"fintask loses here: {name} takes {value / best:.2f}x the time of "
                    f"{best_name} ({value:,.3g} s against {best:,.3g} s)."
                )
    overall = ranked(medians, case, "time to finish", [s.name for s in STRATEGIES])
    if len(overall) > len(FINTASK_RUNS):
        name, value = overall[0]
        lines.append(f"fastest strategy at {case}: {name}, {value:,.3g} s.")
    cpu = ranked(medians, case, "worker CPU per e-mail", [s.name for s in STRATEGIES])
    if len(cpu) > len(FINTASK_RUNS):
        listing = ", ".join(f"{name} {value:.3g}" for name, value in cpu)
        lines.append(f"worker CPU per e-mail at {case} (ms), least first: {listing}.")
    return lines


def has_target(strategy: str, metric: str, *, smaller: int) -> bool:
    """Whether fintask's flat-growth target applies from the ``smaller`` size on: to its runs'
    producer memory, and to the per-user run's queue depth when ``smaller`` fills a page (under
    one page a size never reaches the bound, mark + one page, that the larger one sits at). A
    per-page queue holds a few page messages plus what the workers prefetch (16 per process),
    more than a quick size's pages, so it grows with them there."""
    if metric == "producer peak RSS":
        return strategy in FINTASK_RUNS
    return strategy == FINTASK_RUN and smaller >= CHUNK_SIZE


def verdicts(medians: Medians) -> list[str]:
    """Growth of producer memory and queue depth from the smaller to the larger size, the
    fastest strategies, and whether every user got exactly one e-mail."""
    small, large = measured_sizes(medians)
    lines = []
    for strategy in STRATEGIES:
        for metric, unit in (("producer peak RSS", "MiB"), ("peak queue depth", "messages")):
            before = medians.get(case_name(small), metric, strategy.name)
            after = medians.get(case_name(large), metric, strategy.name)
            if before is None or after is None:
                continue
            ratio = after / before if before else float("inf")
            target = (
                f"target within {GROWTH_TARGET - 1:.0%}: "
                + ("met" if ratio <= GROWTH_TARGET else "missed")
                if has_target(strategy.name, metric, smaller=small)
                else "for contrast"
            )
            lines.append(
                f"{strategy.name}: {metric} at {large:,} vs {small:,} users: {before:,.4g} -> "
                f"{after:,.4g} {unit} (x{ratio:.2f}; {target})."
            )
    lines += speed_verdicts(medians, small) + speed_verdicts(medians, large)
    misses = []
    for (case, metric, name), values in medians.runs.items():
        users = int(case.split()[0].replace(",", ""))
        if metric == "emails delivered" and min(values) != users:
            misses.append(f"{name} at {case}: {min(values):,.0f} of {users:,} delivered")
        if metric == "duplicate emails" and max(values) != 0:
            misses.append(f"{name} at {case}: {max(values):,.0f} duplicates")
    lines.append(
        "Exactly one e-mail per user, every strategy, size and repetition: "
        + ("met." if not misses else "missed (" + "; ".join(misses) + ").")
    )
    return lines


ABOUT = f"""
Each strategy e-mails the first *n* active users of a PostgreSQL table `bench_users` (sparse ids,
one user in eleven inactive; seeded once per benchmark run), *n* = {QUICK_SIZES[0]:,} and
{QUICK_SIZES[1]:,} in quick mode (where only fintask's runs, whose flat growth is a target, run
both; the others run the larger; the smaller is under one page, so there only the runs' producer
memory is held to it), {FULL_SIZES[0]:,} and {FULL_SIZES[1]:,} in full mode. The e-mail is a Redis
script that sets the user's bit and counts a duplicate when the bit was already set: *emails
delivered* is the bitmap's population, *duplicate emails* must be 0. Two granularities, which are
two guarantees: **per user** sends one message per e-mail, so each e-mail is retried, acknowledged
and redelivered on its own; **per page** sends one message per page of {CHUNK_SIZE:,} users whose
task sends the page's e-mails in one loop, so a failure or a killed worker retries or redelivers
the whole page (e-mails already sent go out again) and one acknowledgement covers {CHUNK_SIZE:,}
e-mails. Compare within a granularity. **naive loop** (per user): a producer loads every id into a
list and sends one message per user through fintask's broker. **Celery chunks()** (per page): a
producer loads every id and applies `email.chunks(ids, {CHUNK_SIZE:,})`, which Celery's built-in
`celery.starmap` task runs user by user. **Walkers**, what a careful team writes at 10^6 users, in
bare Dramatiq and in Celery: the producer sends one walker message and exits; the walker task reads
the next {CHUNK_SIZE:,} active ids by keyset, and while the queue it feeds holds more than the
high-water mark ({HIGH_WATER:,} e-mails, quick mode {QUICK_HIGH_WATER:,}; a per-page walker counts
pages, the mark divided by {CHUNK_SIZE:,}, at least 1) it sends itself again after
{BACKPRESSURE_MS} ms (Dramatiq's `delay`, Celery's `countdown`) and stops; otherwise it sends the
page and then itself for the next one, its cursor in the message. A per-user walker sends its
page's e-mails together: `chunking.enqueue_many` on Dramatiq's own `RedisBroker` (Dramatiq has no
batch send of its own), kombu's `Producer.batch()` in Celery; a per-page walker sends one message
carrying the page's ids. Full mode adds **taskiq, Huey, arq and RQ walkers** (one queue each for
e-mails, pages and the walker), at the smaller size only (RQ spends about 13 ms of CPU per e-mail
job, hours at {FULL_SIZES[1]:,}). arq defers a job by itself (`_defer_by`), so its walker sends
itself again after {BACKPRESSURE_MS} ms as the Dramatiq and Celery walkers do; its queue is a
sorted set that keeps a job until it ends, so the count it holds to the mark includes the running
jobs (its own left out). The others wait in the task, {BACKPRESSURE_MS} ms at a time, while their
queue is above the mark (taskiq and RQ defer a message only through a scheduler process, Huey's
scheduler ticks once a second); taskiq's unread stream entries count, not those its workers have
read ahead. taskiq's and arq's tasks are coroutines on asyncio clients (their walkers read the
page, and taskiq's waits, on a thread). taskiq, Huey and arq send a page's e-mails one call each
(none has a bulk enqueue; taskiq's and arq's awaited in turn), RQ with its own `Queue.enqueue_many`
in one pipeline. taskiq-redis trims no stream by default, so taskiq's Redis memory keeps every
message of the case. **fintask runs** (`chunking`): the producer starts a run (a row) and exits;
each chunk reads {CHUNK_SIZE:,} ids by keyset, checkpoints its cursor in the database, and after
commit bulk-enqueues the page's e-mails (per user) or one page message (per page), held back on the
same mark, queue-depth probe and {BACKPRESSURE_MS} ms pause as the walkers. A fintask page message
carries the page's first and last id, and its task reads the page's ids again (one more query per
page), because fintask's guardrails refuse a list of more than 100 items in a message. What the run
adds over a walker is its row: progress, pause, cancel and resume after a crash; it costs its
queries. Workers: every system on 2 processes x 8 threads (Celery: two `-P threads -c 8` workers,
prefetch multiplier 4, `acks_late`; Dramatiq and fintask prefetch 16), consuming the e-mail, page
and walker queues; taskiq 2 workers x 8 async tasks (`--workers 2 --max-async-tasks 8`,
acknowledging after the task), arq 2 workers x `max_jobs` 8; Huey 16 threads (`-w 16 -k thread`),
RQ 16 `SimpleWorker`s (`rq worker-pool -n 16`), neither of which acknowledges a message after its
task (see each system's delivery guarantee). Quick mode starts a system's workers once for all its
strategies; full mode starts them anew for each strategy. *Time to enqueue* runs from the
producer's start to its exit, *time to finish* to the last e-mail. *Producer peak RSS* is the
producer process's own peak (Linux `VmHWM`, imports included) and *producer CPU* its user+system
time; a walker or a run does its reading and sending in the workers, which *worker CPU per e-mail*
(user+system time of every worker process and child over the case, divided by *n*) and *worker peak
PSS* (proportional set size, so pages forked children share are not counted twice; in quick mode
the peak since the system's workers started) include. *Peak queue depth* is the most messages of
the fan-out queues in Redis and not yet acknowledged at once: waiting, delayed, or prefetched by a
worker (Dramatiq's `.msgs` hashes, Kombu's `unacked` hash, RQ's started registry, taskiq's pending
entries, arq's sorted set; Huey keeps nothing of a task it started), sampled every {SAMPLE_S} s; a
page message carries {CHUNK_SIZE:,} e-mails. *Redis peak memory* is the peak `used_memory` above
its value just before the producer started. *DB queries/s* counts statements in the benchmark
database (`pg_stat_statements`, BEGIN/COMMIT not counted): the mean over the sampled time, and the
busiest 1 s.
"""

SCENARIO = Scenario(
    number=4,
    key=KEY,
    title="Fan-out to every user",
    run=run,
    about=" ".join(ABOUT.split()),
    # Strategies of two granularities: the verdicts compare within a granularity.
    ratios=(),
    verdicts=verdicts,
    series=lambda: SERIES,
)
