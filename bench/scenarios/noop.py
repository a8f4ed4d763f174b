"""No-op scenarios: the throughput sweep (1), send-to-start latency (3), middleware tax (8).

All use one no-op task (``bench.apps.noop_*``, bodies in :mod:`bench.work`) that records its
start time and the send time it carries. One repetition:

- Throughput, setting by setting of every system's sweep (:mod:`bench.systems.families`): the
  queue is pre-filled, then the workers are spawned and drain it for at most a window. Two
  rates: the *drain rate*, (runs - 1) / (last start - first start), start-up not counted, and
  the rate *from spawn*, runs / (last start - spawn), start-up counted; and the first job's
  delay after the spawn. Each family's best setting (by drain rate) is recorded again with its
  costs: worker CPU per message (user + system of the worker tree, from the first start, so
  most of the start-up is left out), Redis CPU and commands per message (``INFO``, the
  pre-fill's enqueues included, the harness's own polls left out), peak worker PSS. With
  ``full``, the workers of a drained queue then idle for 5 s and Redis's command rate and CPU
  are read (a polling consumer costs Redis work while nothing happens).
- Middleware tax: the four {broker} x {middleware} rows, each at its best prefetch.
- Latency (the old scenario, kept until ``bench.scenarios.latency`` replaces it).
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import redis

from bench.harness import Bench, Medians, Sample, Scenario
from bench.latency_record import QUEUE_VARIABLE, starts_key
from bench.systems import (
    CountedReads,
    Producer,
    RedisCost,
    System,
    Workers,
    purge,
    wait_until_count,
)
from bench.systems.families import TAX_SHAPE, families, tax_grid

#: The throughput sweep's cases: one per setting (this prefix and the knobs), and each family
#: at its best.
SWEEP_PREFIX = "sweep: "
BEST_CASE = "best setting"


@dataclass(frozen=True)
class Sizes:
    """How many messages a drain pre-fills, and how long it may drain after the first start."""

    messages: int
    window_s: float


QUICK = Sizes(messages=2_000, window_s=1.5)
FULL = Sizes(messages=50_000, window_s=30.0)


def sizes(bench: Bench) -> Sizes:
    return FULL if bench.full else QUICK


def module_of(system: System) -> str:
    """The worker module of ``system``'s no-op and real-work tasks."""
    return f"bench.apps.noop_{'dramatiq' if system.dramatiq else system.kind}"


def queue_of(system: System) -> str:
    """A queue name of ``system``'s own, of the characters every system accepts."""
    return "noop-" + re.sub(r"[^a-z0-9]+", "-", system.name.lower()).strip("-")


class Sender:
    """Sends the no-op task to one system's queue as an application would."""

    def __init__(self, system: System, redis_url: str) -> None:
        self.queue = queue_of(system)
        self.producer = Producer(system.kind, redis_url)
        self.close = self.producer.close

    def send(self, sent_at: float) -> None:
        self.producer.send(self.queue, "noop", (sent_at,))


def note_producer(bench: Bench, scenario: str, system: System, sender: Sender) -> None:
    """Note the producer process a sender started (arq's, in its own venv), if any."""
    arq = sender.producer.arq
    if arq is not None:
        bench.note_command(scenario, system.name, arq.argv, setting="producer", env=arq.env)


def starts(client: redis.Redis, queue: str) -> list[tuple[float, float]]:
    """(start, sent) of every run recorded on ``queue`` so far."""
    raw: list[bytes] = client.lrange(starts_key(queue), 0, -1)  # type: ignore[assignment]
    return [(float(r.split()[0]), float(r.split()[1])) for r in raw]


def recorded(client: redis.Redis, queue: str) -> Callable[[], int]:
    return lambda: int(client.llen(starts_key(queue)))


@contextmanager
def running(
    bench: Bench, system: System, scenario: str, extra_env: dict[str, str] | None = None
) -> Iterator[Workers]:
    """``system``'s no-op workers on its own queue (their command lines noted by the bench)."""
    with bench.workers(
        scenario,
        system,
        module_of(system),
        [queue_of(system)],
        extra_env={QUEUE_VARIABLE: queue_of(system), **(extra_env or {})},
    ) as started:
        yield started


def await_ready(system: System, sender: Sender, client: redis.Redis, timeout_s: float = 90) -> None:
    """Send probes until every consuming process has run one (each record carries its pid)."""
    key = starts_key(sender.queue)
    client.delete(key)  # an earlier run's records carry other pids, of processes now gone
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sender.send(time.time())
        time.sleep(0.05)
        records: list[bytes] = client.lrange(key, 0, -1)  # type: ignore[assignment]
        if len({record.split()[2] for record in records}) >= system.consumers:
            break
    else:
        raise RuntimeError(f"{system.name}: not every worker process answered in {timeout_s} s")
    time.sleep(0.5)  # the last probes drain
    client.delete(key)


def idle_load(client: redis.Redis, seconds: float) -> tuple[float, float]:
    """Redis commands per second and Redis CPU ms per second while the workers sit idle."""
    time.sleep(2.0)  # pollers reach their longest backoff
    cost = RedisCost(client)
    cost.start()
    time.sleep(seconds)
    commands, cpu_s = cost.stop()
    return commands / seconds, cpu_s * 1000 / seconds


@dataclass(frozen=True)
class Cost:
    """What running a batch of messages cost, per message."""

    worker_cpu_ms: float
    redis_cpu_us: float
    redis_commands: float
    peak_pss_mb: float

    def record(self, bench: Bench, scenario: str, case: str, system: str, setting: str) -> None:
        for metric, unit, value in (
            ("worker CPU per message", "ms", self.worker_cpu_ms),
            ("Redis CPU per message", "µs", self.redis_cpu_us),
            ("Redis commands per message", "", self.redis_commands),
            ("peak worker PSS", "MiB", self.peak_pss_mb),
        ):
            bench.record(scenario, case, metric, unit, system, value, setting=setting)


@dataclass(frozen=True)
class Drain:
    """One drain of a pre-filled queue by freshly spawned workers."""

    runs: int
    drained: bool
    drain_rate: float
    from_spawn: float
    first_delay_s: float
    cost: Cost


def drain(bench: Bench, system: System, messages: int, scenario: str, window_s: float) -> Drain:
    """Pre-fill ``messages`` no-ops, spawn the workers, let them drain until the queue is empty
    or ``window_s`` after the first start; the rates, the delay and the costs. Redis is flushed
    before and after."""
    bench.flush()
    purge(system.kind, queue_of(system))
    client = bench.client()
    sender = Sender(system, bench.redis_url)
    note_producer(bench, scenario, system, sender)
    queue = sender.queue
    cost = RedisCost(client)
    cost.start()
    now = time.time()
    sender.producer.send_batched(queue, "noop", ((now,) for _ in range(messages)))
    enqueue_commands, enqueue_cpu_s = cost.stop()
    sender.close()
    count = CountedReads(recorded(client, queue))
    cost.start()
    with running(bench, system, scenario) as started:
        if wait_until_count(count, 1, timeout_s=120, interval_s=0.01) < 1:
            raise RuntimeError(f"{system.name}: no message ran within 120 s of the spawn")
        cpu_before, runs_before = started.cpu_seconds(), count()
        done = wait_until_count(count, messages, timeout_s=window_s)
        cpu_after = started.cpu_seconds()
        commands, redis_cpu_s = cost.stop()
        harness = count.calls
        runs = count()  # each run's record is one RPUSH of the harness's own
        peak_pss_mb = started.peak_pss_mb
        times = sorted(start for start, _ in starts(client, queue))
        if bench.full and done >= messages:
            idle_commands, idle_cpu_ms = idle_load(client, seconds=5.0)
            case = "idle, nothing sent"
            bench.record(scenario, case, "Redis commands", "/s", system.name, idle_commands)
            bench.record(scenario, case, "Redis CPU", "ms/s", system.name, idle_cpu_ms)
    # What the window left undrained must not reach the next workers on this queue (latency's,
    # after a drain at a default setting): they would run it and record its old stamps.
    bench.flush()
    purge(system.kind, queue)
    client.close()
    if len(times) < 2:
        raise RuntimeError(f"{system.name}: only {len(times)} of {messages} no-op messages ran")
    per_run = Cost(
        worker_cpu_ms=(cpu_after - cpu_before) * 1000 / max(1, done - runs_before),
        redis_cpu_us=(enqueue_cpu_s / messages + redis_cpu_s / runs) * 1e6,
        redis_commands=enqueue_commands / messages + (commands - harness - runs) / runs,
        peak_pss_mb=peak_pss_mb,
    )
    return Drain(
        runs=len(times),
        drained=done >= messages,
        drain_rate=(len(times) - 1) / max(times[-1] - times[0], 1e-9),
        from_spawn=len(times) / max(times[-1] - started.spawned_at, 1e-9),
        first_delay_s=times[0] - started.spawned_at,
        cost=per_run,
    )


def record_drain(
    bench: Bench, scenario: str, case: str, system: str, result: Drain, setting: str
) -> None:
    """Every figure of one drain: rates, first job's delay, costs."""
    for metric, unit, value in (
        ("drain rate", "msg/s", result.drain_rate),
        ("from spawn", "msg/s", result.from_spawn),
        ("first job after spawn", "s", result.first_delay_s),
    ):
        bench.record(scenario, case, metric, unit, system, value, setting=setting)
    result.cost.record(bench, scenario, case, system, setting)


def measure_throughput(
    bench: Bench, system: System, messages: int, scenario: str, also: Sequence[str] = ()
) -> None:
    """Pre-fill, spawn the workers, time the drain; record every figure under ``scenario`` and
    the keys in ``also``."""
    result = drain(bench, system, messages, scenario, sizes(bench).window_s)
    for key in (scenario, *also):
        record_drain(bench, key, f"{messages:,} messages", system.name, result, system.setting())


def sweep_case(system: System) -> str:
    """The case a sweep records one setting under: its knobs, so that the systems sharing a
    setting (fintask and Dramatiq at 2 x 8, prefetch 32) share a row of the table."""
    return f"{SWEEP_PREFIX}{system.setting()}"


def record_sweep(bench: Bench, scenario: str, family: str, system: System, result: Drain) -> None:
    for metric, value in (("drain rate", result.drain_rate), ("from spawn", result.from_spawn)):
        bench.record(
            scenario, sweep_case(system), metric, "msg/s", family, value,
            setting=system.setting(),
        )  # fmt: skip


def run_throughput(bench: Bench) -> None:
    """Scenario 1: every setting of every family's sweep, then each family at its best."""
    size = sizes(bench)
    results: dict[str, Drain] = {}
    grid = [(family, system) for family in families() for system in family.grid(bench.full)]
    for family, system in bench.order(grid):
        results[system.name] = drain(bench, system, size.messages, "throughput", size.window_s)
        record_sweep(bench, "throughput", family.name, system, results[system.name])
    for family in families():
        best = max(family.grid(bench.full), key=lambda s: results[s.name].drain_rate)
        record_drain(
            bench, "throughput", BEST_CASE, family.name, results[best.name], best.setting()
        )


def _sweep_rates(history: Sequence[Sample], scenario: str) -> dict[tuple[str, str], float]:
    """The median drain rate of every setting ``scenario``'s sweep measured so far, by
    (system, setting)."""
    rates: dict[tuple[str, str], list[float]] = {}
    for sample in history:
        swept = sample.case.startswith(SWEEP_PREFIX) and sample.metric == "drain rate"
        if sample.scenario == scenario and swept:
            rates.setdefault((sample.system, sample.setting), []).append(sample.value)
    return {key: statistics.median(values) for key, values in rates.items()}


def best_systems(
    history: Sequence[Sample], bench: Bench | None = None
) -> list[tuple[System, float]]:
    """Each family's best setting in the throughput sweep so far (median drain rate over the
    repetitions), named as the family, with that rate.

    A family the history has no sweep of is measured at its default setting on the spot (a
    short drain, recorded nowhere): that needs ``bench``.
    """
    rates = _sweep_rates(history, "throughput")
    chosen = []
    for family in families():
        measured = {
            system.setting(): system
            for system in (*family.quick, *family.full)
            if (family.name, system.setting()) in rates
        }
        if measured:
            setting = max(measured, key=lambda s: rates[(family.name, s)])
            best = replace(measured[setting], name=family.name)
            chosen.append((best, rates[(family.name, setting)]))
            continue
        if bench is None:
            raise RuntimeError(f"no throughput sweep of {family.name} to take its best from")
        size = sizes(bench)
        result = drain(bench, family.default, size.messages // 2, "best", size.window_s / 2)
        chosen.append((family.default, result.drain_rate))
    return chosen


def _equivalent(a: System, b: System) -> bool:
    """The same set-up under two names (a default prefetch equals its explicit value)."""
    return (a.kind, a.processes, a.threads, a.prefetch or 2 * a.threads) == (
        b.kind, b.processes, b.threads, b.prefetch or 2 * b.threads,
    )  # fmt: skip


def _swept_before(bench: Bench, system: System) -> float | None:
    """The throughput sweep's median drain rate of a set-up equivalent to ``system``, if any."""
    rates = _sweep_rates(bench.history, "throughput")
    for family in families():
        for earlier in family.grid(bench.full):
            key = (family.name, earlier.setting())
            if key in rates and _equivalent(earlier, system):
                return rates[key]
    return None


def run_middleware_tax(bench: Bench) -> None:
    """Scenario 8: {Dramatiq's RedisBroker, fintask's wake-up broker} x {Dramatiq's default
    middleware, fintask's full stack}, same processes x threads, each row at its best prefetch.

    A setting the throughput sweep already drained (fintask's and bare Dramatiq's) is taken
    from the run's samples rather than measured again.
    """
    size = sizes(bench)
    case = f"no-op, {TAX_SHAPE[0]} x {TAX_SHAPE[1]} threads"
    rows = tax_grid(bench.full)
    rates: dict[str, float] = {}
    for row, system in bench.order([(row, s) for row, grid in rows.items() for s in grid]):
        rate = _swept_before(bench, system)
        if rate is None:
            rate = drain(bench, system, size.messages, "middleware_tax", size.window_s).drain_rate
        rates[system.name] = rate
        bench.record(
            "middleware_tax", f"{SWEEP_PREFIX}prefetch {system.prefetch}", "drain rate",
            "msg/s", row, rate, setting=system.setting(),
        )  # fmt: skip
    for row, grid in rows.items():
        best = max(grid, key=lambda s: rates[s.name])
        bench.record(
            "middleware_tax", case, "drain rate", "msg/s", row, rates[best.name],
            setting=f"prefetch {best.prefetch}",
        )  # fmt: skip


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def throughput_verdicts(medians: Medians) -> list[str]:
    lines = []
    for other in ("Celery", "taskiq", "Huey", "arq", "RQ"):
        ratio = medians.ratio(BEST_CASE, "drain rate", "fintask", other)
        if ratio is not None:
            lines.append(
                f"fintask's no-op drain rate is {ratio:.1f}x {other}'s, each at its best "
                f"setting (target against Celery: >= 4x): "
                + (_met(ratio >= 4) if other == "Celery" else "no target")
            )
    return lines


def tax_verdicts(medians: Medians) -> list[str]:
    lines = []
    for case, metric in medians.rows():
        if metric != "drain rate" or case.startswith(SWEEP_PREFIX):
            continue
        full = medians.ratio(case, metric, "fintask", "Dramatiq")
        stack = medians.ratio(case, metric, "Dramatiq broker + fintask stack", "Dramatiq")
        broker = medians.ratio(case, metric, "fintask broker + Dramatiq middleware", "Dramatiq")
        if full is not None:
            lines.append(
                f"fintask (its broker and full stack) runs at {full:.0%} of bare Dramatiq's "
                f"no-op drain rate ({case}, each at its best prefetch; target >= 80%): "
                f"{_met(full >= 0.8)}"
            )
        if stack is not None:
            lines.append(
                f"fintask's stack alone, on Dramatiq's broker: {stack:.0%} of bare Dramatiq"
            )
        if broker is not None:
            lines.append(f"fintask's broker alone, with Dramatiq's middleware: {broker:.0%}")
    return lines


THROUGHPUT = Scenario(
    number=1,
    key="throughput",
    title="No-op throughput: every system at its best setting",
    run=run_throughput,
    about=(
        "Each system's sweep (fintask and Dramatiq: processes x threads x prefetch; Celery: "
        "prefork/threads/solo pool x concurrency x prefetch multiplier, remote control off; "
        "taskiq: workers x async tasks; Huey: process or thread workers; arq: workers x "
        "max_jobs; RQ: worker-pool size, SimpleWorker or forking Worker), a smaller grid in "
        "quick mode. For each setting a queue pre-filled with no-op messages is drained by "
        "freshly spawned workers for at most a window (1.5 s quick, 30 s full) after the first "
        "start. *Drain rate*: from the first start to the last, start-up not counted; *from "
        "spawn*: from the spawn to the last start. The best setting of each system (by drain "
        "rate, named beside it) is recorded again with its costs per message: worker CPU "
        "(user + system of the worker processes and their children, from the first start), "
        "Redis CPU and Redis commands (INFO after CONFIG RESETSTAT on the bench's own server; "
        "the pre-fill's enqueues and the workers' start-up counted, the harness's polls and "
        "records not), and the peak PSS of the worker processes (shared pages split, not "
        "summed). Delivery guarantees differ: Huey and RQ take a message off the queue before "
        "it runs; the others acknowledge after the task."
    ),
    ratios=(
        ("fintask", "Celery"),
        ("fintask", "Dramatiq"),
        ("fintask", "taskiq"),
        ("fintask", "Huey"),
        ("fintask", "arq"),
        ("fintask", "RQ"),
    ),
    verdicts=throughput_verdicts,
)


MIDDLEWARE_TAX = Scenario(
    number=8,
    key="middleware_tax",
    title="Middleware tax: broker and middleware stack, apart",
    run=run_middleware_tax,
    about=(
        "Four rows at the same 2 processes x 8 threads, each at its best prefetch (swept): "
        "Dramatiq's `RedisBroker` or fintask's wake-up broker, with Dramatiq's default "
        "middleware or fintask's full stack (guardrails, unique enqueue, Prometheus, rate "
        "limits, mutex, message metrics, soft time limits). `fintask` against `Dramatiq` is "
        "the whole difference; the mixed rows split it into the consumer's part and the "
        "stack's. Settings the throughput sweep already drained are taken from its samples."
    ),
    ratios=(
        ("fintask", "Dramatiq"),
        ("Dramatiq broker + fintask stack", "Dramatiq"),
        ("fintask broker + Dramatiq middleware", "Dramatiq"),
    ),
    verdicts=tax_verdicts,
)
