"""No-op scenarios: throughput and worker memory (1), send-to-start latency (3), middleware tax (8).

All three use one no-op task (``bench.apps.noop_*``) that records its start time and the send
time it carries. One repetition:

- Throughput, system by system: the queue is pre-filled, then the system's workers start and
  drain it; the rate is (messages - 1) / (last start - first start), so start-up is not
  counted. Peak worker RSS is sampled (process and children) while they drain. With ``full``,
  the workers then idle for 5 s and Redis's command rate and CPU are read (a polling consumer
  costs Redis work while nothing happens).
- Latency: the workers of the compared systems run at once, each on a queue of its own. At
  2 msg/s ("quiet hours") every system gets its paced stream at the same time; at 500 msg/s
  each gets its burst in turn while the others sit idle.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import redis

from bench.harness import Bench, Medians, Scenario
from bench.latency_record import QUEUE_VARIABLE, starts_key
from bench.systems import (
    Producer,
    System,
    wait_until_count,
    workers,
)

FINTASK = System("fintask", "fintask", processes=2, threads=8, prefetch=16)
DRAMATIQ = System("Dramatiq", "dramatiq", processes=2, threads=8)
CELERY = System("Celery", "celery", processes=2, threads=8, pool="threads")
#: Celery as its documentation recommends: the prefork pool, one child per core.
CELERY_PREFORK = System("Celery prefork", "celery", processes=2)

#: fintask's ``worker_urgent`` Procfile process: the one whose latency a fraud alert meets.
FINTASK_URGENT = System("fintask worker_urgent", "fintask", processes=1, threads=4, prefetch=4)

THROUGHPUT_SYSTEMS = (FINTASK, DRAMATIQ, CELERY, CELERY_PREFORK)
LATENCY_SYSTEMS = (FINTASK, FINTASK_URGENT, DRAMATIQ, CELERY)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def module_of(system: System) -> str:
    """The worker module of ``system``'s no-op task."""
    return "bench.apps.noop_celery" if system.kind == "celery" else "bench.apps.noop_dramatiq"


def queue_of(system: System) -> str:
    """A queue name of ``system``'s own (Celery and Redis both accept these characters)."""
    return "noop-" + system.name.lower().replace(" ", "-")


class Sender:
    """Sends the no-op task to one system's queue as an application would."""

    def __init__(self, system: System, redis_url: str) -> None:
        self.queue = queue_of(system)
        self.producer = Producer(system.kind, redis_url)
        self.close = self.producer.close

    def send(self, sent_at: float) -> None:
        self.producer.send(self.queue, "noop", (sent_at,))


def starts(client: redis.Redis, queue: str) -> list[tuple[float, float]]:
    """(start, sent) of every run recorded on ``queue`` so far."""
    raw: list[bytes] = client.lrange(starts_key(queue), 0, -1)  # type: ignore[assignment]
    return [(float(r.split()[0]), float(r.split()[1])) for r in raw]


def recorded(client: redis.Redis, queue: str) -> Callable[[], int]:
    return lambda: int(client.llen(starts_key(queue)))  # type: ignore[arg-type]


@contextmanager
def running(bench: Bench, system: System, scenario: str) -> Iterator[Any]:
    """``system``'s no-op workers on its own queue."""
    with workers(
        system,
        module_of(system),
        [queue_of(system)],
        redis_url=bench.redis_url,
        log_path=bench.log_path(scenario, system.name),
        extra_env={QUEUE_VARIABLE: queue_of(system)},
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
    cpu = client.info("cpu")
    client.config_resetstat()
    time.sleep(seconds)
    stats = client.info("commandstats")
    cpu_after = client.info("cpu")
    # Commands a script runs count too (Dramatiq's fetch: LPOP, ZADD); ours (INFO) do not.
    total = sum(
        value["calls"]
        for name, value in stats.items()
        if not name.removeprefix("cmdstat_").startswith(("info", "config"))
    )
    used = sum(cpu_after[k] - cpu[k] for k in ("used_cpu_sys", "used_cpu_user"))
    return total / seconds, used * 1000 / seconds


def measure_throughput(
    bench: Bench, system: System, messages: int, scenario: str, also: Sequence[str] = ()
) -> None:
    """Pre-fill, start the workers, time the drain; record msg/s, peak RSS (and idle load),
    under ``scenario`` and the keys in ``also``."""
    bench.flush()
    client = bench.client()
    sender = Sender(system, bench.redis_url)
    queue = sender.queue
    now = time.time()
    sender.producer.send_batched(queue, "noop", ((now,) for _ in range(messages)))
    sender.close()
    case = f"{messages:,} messages"
    with running(bench, system, scenario) as started:
        done = wait_until_count(recorded(client, queue), messages, timeout_s=600)
        if done < messages:
            raise RuntimeError(f"{system.name}: only {done} of {messages} no-op messages ran")
        times = sorted(start for start, _ in starts(client, queue))
        rate = (len(times) - 1) / max(times[-1] - times[0], 1e-9)
        for key in (scenario, *also):
            bench.record(key, case, "throughput", "msg/s", system.name, rate)
            bench.record(key, case, "peak worker RSS", "MiB", system.name, started.peak_rss_mb)
        if bench.full:
            commands, cpu_ms = idle_load(client, seconds=5.0)
            bench.record(
                scenario, "idle, nothing sent", "Redis commands", "/s", system.name, commands
            )
            bench.record(scenario, "idle, nothing sent", "Redis CPU", "ms/s", system.name, cpu_ms)
    client.close()


def paced(
    senders: Sequence[Sender], client: redis.Redis, *, rate: float, seconds: float
) -> dict[str, list[float]]:
    """Send ``rate`` msg/s to each of ``senders`` for ``seconds``; latencies (ms) by queue."""
    count = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.05
    for i in range(count):
        for j, sender in enumerate(senders):
            # Each stream is offset within the interval, so the systems do not send together.
            pause = start + (i + j / len(senders)) / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sender.send(time.time())
    latencies = {}
    for sender in senders:
        wait_until_count(recorded(client, sender.queue), count, timeout_s=60)
        latencies[sender.queue] = [(s - sent) * 1000 for s, sent in starts(client, sender.queue)]
        client.delete(starts_key(sender.queue))
    return latencies


def record_latencies(bench: Bench, system: System, case: str, values: list[float]) -> None:
    for label, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
        bench.record("latency", case, label, "ms", system.name, percentile(values, q))


def run_latency(bench: Bench, systems: Sequence[System] = LATENCY_SYSTEMS) -> None:
    """Quiet-hours latency for every system at once, then 500 msg/s system by system."""
    bench.flush()
    quiet_s, busy_s = (30.0, 10.0) if bench.full else (3.0, 1.0)
    client = bench.client()
    ordered = bench.order(systems)
    senders = [Sender(system, bench.redis_url) for system in ordered]
    with ExitStack() as stack:
        for system in ordered:
            stack.enter_context(running(bench, system, "latency"))
        for system, sender in zip(ordered, senders, strict=True):
            await_ready(system, sender, client)
        quiet = paced(senders, client, rate=2, seconds=quiet_s)
        for system, sender in zip(ordered, senders, strict=True):
            record_latencies(bench, system, "2 msg/s", quiet[sender.queue])
        for system, sender in zip(ordered, senders, strict=True):
            busy = paced([sender], client, rate=500, seconds=busy_s)
            record_latencies(bench, system, "500 msg/s", busy[sender.queue])
    for sender in senders:
        sender.close()
    client.close()


def run_throughput(bench: Bench) -> None:
    """Scenario 1, and scenario 8 from the same runs of fintask and bare Dramatiq."""
    messages = 50_000 if bench.full else 3_000
    for system in bench.order(THROUGHPUT_SYSTEMS):
        tax = ("middleware_tax",) if system in (FINTASK, DRAMATIQ) else ()
        measure_throughput(bench, system, messages, "throughput", also=tax)


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def throughput_verdicts(medians: Medians) -> list[str]:
    lines = []
    for case, metric in medians.rows():
        if metric != "throughput":
            continue
        for other in ("Celery", "Celery prefork"):
            ratio = medians.ratio(case, metric, "fintask", other)
            if ratio is not None:
                lines.append(
                    f"fintask no-op throughput is {ratio:.1f}x {other}'s ({case}; target >= 4x "
                    f"at equal processes and threads): {_met(ratio >= 4)}"
                )
    return lines


def latency_verdicts(medians: Medians) -> list[str]:
    lines = []
    for system in (FINTASK.name, FINTASK_URGENT.name):
        for case in ("2 msg/s", "500 msg/s"):
            p50 = medians.get(case, "p50", system)
            p99 = medians.get(case, "p99", system)
            if p50 is not None and p99 is not None:
                ok = p50 <= 2 and p99 <= 10
                lines.append(
                    f"{system} at {case}: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                    f"(target p50 <= 2 ms, p99 <= 10 ms): {_met(ok)}"
                )
    return lines


def tax_verdicts(medians: Medians) -> list[str]:
    lines = []
    for case, metric in medians.rows():
        ratio = medians.ratio(case, metric, "fintask", "Dramatiq")
        if metric == "throughput" and ratio is not None:
            lines.append(
                f"fintask's full stack runs at {ratio:.0%} of bare Dramatiq's no-op throughput "
                f"({case}; target >= 80%, at most a 20% tax): {_met(ratio >= 0.8)}"
            )
    return lines


def _sweep_systems() -> list[System]:
    systems = []
    for processes, threads in ((1, 1), (1, 4), (2, 8)):
        for prefetch in sorted({1, threads, 2 * threads, 32}):
            for kind, label in (("fintask", "fintask"), ("dramatiq", "Dramatiq")):
                name = f"{label} {processes}x{threads} prefetch {prefetch}"
                systems.append(System(name, kind, processes, threads, prefetch))
    return systems


def run_prefetch_sweep(bench: Bench) -> None:
    """Throughput and 500 msg/s latency over processes x threads x prefetch (the Procfile's
    choices come from here)."""
    for system in bench.order(_sweep_systems()):
        measure_throughput(bench, system, 5_000, "prefetch")
        with running(bench, system, "prefetch"), bench.client() as client:
            sender = Sender(system, bench.redis_url)
            await_ready(system, sender, client)
            busy = paced([sender], client, rate=500, seconds=5)[sender.queue]
            for label, q in (("p50", 0.5), ("p99", 0.99)):
                bench.record("prefetch", "500 msg/s", label, "ms", system.name, percentile(busy, q))
            sender.close()


THROUGHPUT = Scenario(
    number=1,
    key="throughput",
    title="No-op throughput and worker memory",
    run=run_throughput,
    about=(
        "A queue pre-filled with no-op messages is drained by freshly started workers; the rate "
        "is from the first start to the last, so start-up time is not counted. `fintask`, "
        "`Dramatiq` and `Celery` run 2 processes x 8 threads (Celery: two `-P threads -c 8` "
        "workers); `Celery prefork` is Celery's recommended set-up, one prefork child per core. "
        "Peak worker RSS is the sum over the worker processes and their children. With `FULL=1`, "
        "the idle workers' Redis load (commands/s including those run by scripts, Redis CPU) is "
        "read for 5 s after the drain."
    ),
    ratios=(("fintask", "Celery"), ("fintask", "Celery prefork"), ("fintask", "Dramatiq")),
    verdicts=throughput_verdicts,
)

LATENCY = Scenario(
    number=3,
    key="latency",
    title="End-to-end latency, send to start",
    run=run_latency,
    about=(
        "Each message carries its send time; the task records its start time; latency is the "
        "difference on one clock, percentiles nearest-rank per repetition. The systems' workers "
        "(2 x 8 as in scenario 1, and fintask's `worker_urgent` shape, 1 x 4 with prefetch 4) "
        "run at once on queues of their own: at 2 msg/s each gets its paced stream at the same "
        "time, at 500 msg/s each gets its burst in turn while the others idle."
    ),
    verdicts=latency_verdicts,
)

MIDDLEWARE_TAX = Scenario(
    number=8,
    key="middleware_tax",
    title="Middleware tax: fintask's full stack against bare Dramatiq",
    run=None,
    measured_by=THROUGHPUT.key,
    about=(
        "Scenario 1's runs of fintask and bare Dramatiq, side by side: "
        "fintask's broker with every middleware a production worker runs (guardrails, unique "
        "enqueue, Prometheus, rate limits, mutex, message metrics, soft time limits, the "
        "wake-up consumer) against Dramatiq's `RedisBroker` with its default middleware."
    ),
    ratios=(("fintask", "Dramatiq"),),
    verdicts=tax_verdicts,
)

PREFETCH = Scenario(
    number=0,
    key="prefetch",
    title="Prefetch sweep (how the Procfile's worker settings were chosen)",
    run=run_prefetch_sweep,
    about=(
        "Not part of the default run (`python -m bench --only prefetch`): no-op throughput and "
        "500 msg/s latency of fintask's and bare Dramatiq's consumers over processes x threads "
        "x prefetch, one system at a time."
    ),
    ratios=(),
)
