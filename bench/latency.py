"""Send-to-start latency of a no-op task: fintask, bare Dramatiq and Celery on one Redis.

``python -m bench.latency`` starts a private redis-server, then, for each repeat and each
system in turn (the order rotates, so machine drift hits every system), starts the system's
workers and measures:

- idle Redis load: commands per second and Redis CPU while the workers wait for 5 s;
- latency at 2 msg/s and at 500 msg/s, paced by the harness: each message carries its send
  time, the task records its start time in Redis, latency is the difference;
- no-op throughput: a pre-filled queue drained by freshly started workers, first to last start.

``--prefetch-sweep`` measures throughput and 500 msg/s latency of fintask's and Dramatiq's
consumers over processes x threads x prefetch instead. Results are printed as Markdown and
written to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import celery
import dramatiq
import redis

from app.redis_server import RedisServer
from bench.latency_record import STARTS_KEY
from bench.latency_workers import System, await_ready, producer_for, workers

RESULTS = Path(__file__).resolve().parent / "results"

NOTES = """
## Reading these numbers

- Latency is the task's ``time.time()`` at start minus the send time carried in the message,
  on one machine's clock. Percentiles are nearest-rank over the pooled samples; at 2 msg/s
  there are 60 per repeat, so p99 is the second-largest of 180 and a single descheduled
  process on this shared 2-core machine moves it.
- Bare Dramatiq's tail at 500 msg/s depends on what came before: after an idle spell its
  consumers sleep up to ``worker_timeout`` (1 s) before the first fetch of a burst
  (``latency_prefetch.md`` sends its burst right after start-up and shows that tail).
- "all commands /s" counts the commands Dramatiq's fetch script runs inside Redis (LPOP, ZADD)
  as well; EVALSHA is one fetch.
"""

SYSTEMS = (
    System("fintask worker", "wakeup", processes=2, threads=8, prefetch=16),
    System("fintask worker_urgent", "wakeup", processes=1, threads=4, prefetch=4),
    System("bare Dramatiq", "plain", processes=2, threads=8),
    System("Celery", "celery", processes=2),
)


@dataclass
class Results:
    """Samples pooled over repeats, by (system name, rate); throughput and idle load by system."""

    latency_ms: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    send_rates: dict[tuple[str, int], list[float]] = field(default_factory=dict)
    throughput: dict[str, list[float]] = field(default_factory=dict)
    idle: dict[str, list[tuple[float, float, float, float]]] = field(default_factory=dict)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of ``values``."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def records(client: redis.Redis) -> list[tuple[float, float]]:
    """(start, sent) of every run recorded so far."""
    raw: list[bytes] = client.lrange(STARTS_KEY, 0, -1)  # type: ignore[assignment]
    return [(float(r.split()[0]), float(r.split()[1])) for r in raw]


def wait_for_records(client: redis.Redis, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while client.llen(STARTS_KEY) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def paced(
    send: Callable[[float], None], client: redis.Redis, *, rate: float, seconds: float
) -> tuple[list[float], float]:
    """Send ``rate`` msg/s for ``seconds``; return the latencies (ms) and the rate achieved."""
    client.delete(STARTS_KEY)
    count = max(1, int(rate * seconds))
    start = time.perf_counter() + 0.05
    for i in range(count):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        send(time.time())
    achieved = count / max(time.perf_counter() - start, 1e-9)
    wait_for_records(client, count, timeout_s=60)
    latencies = [(started - sent) * 1000 for started, sent in records(client)]
    client.delete(STARTS_KEY)
    return latencies, achieved


def idle_load(client: redis.Redis, seconds: float = 5.0) -> tuple[float, float, float, float]:
    """Per second while the workers sit idle: script calls, blocking pops, all commands, and
    Redis CPU ms."""
    time.sleep(2.0)  # let pollers reach their longest backoff
    cpu = client.info("cpu")
    client.config_resetstat()
    time.sleep(seconds)
    stats = client.info("commandstats")
    cpu_after = client.info("cpu")
    calls = {k.removeprefix("cmdstat_"): v["calls"] for k, v in stats.items()}
    scripts = calls.get("evalsha", 0)
    pops = calls.get("blpop", 0) + calls.get("brpop", 0)
    # Commands a script runs count too (Dramatiq's fetch: LPOP, ZADD); ours (INFO) do not.
    total = sum(n for name, n in calls.items() if not name.startswith(("info", "config")))
    used = sum(cpu_after[k] - cpu[k] for k in ("used_cpu_sys", "used_cpu_user"))
    return scripts / seconds, pops / seconds, total / seconds, used * 1000 / seconds


def throughput(
    system: System, redis_url: str, client: redis.Redis, log: Path, messages: int
) -> float:
    """No-op msg/s of freshly started workers draining a pre-filled queue."""
    producer = producer_for(system, redis_url)
    client.delete(STARTS_KEY)
    for _ in range(messages):
        producer.send(time.time())
    producer.close()
    with workers(system, redis_url, log):
        wait_for_records(client, messages, timeout_s=300)
    starts = sorted(started for started, _ in records(client))
    client.delete(STARTS_KEY)
    return (len(starts) - 1) / max(starts[-1] - starts[0], 1e-9)


def measure(system: System, args: argparse.Namespace, redis_url: str, results: Results) -> None:
    client = redis.Redis.from_url(redis_url)
    log = args.logs / f"{system.name.replace(' ', '_')}.log"
    producer = producer_for(system, redis_url)
    with workers(system, redis_url, log):
        await_ready(system, producer, client)
        if not args.prefetch_sweep:
            results.idle.setdefault(system.name, []).append(idle_load(client))
        for rate, seconds in args.rates:
            latencies, achieved = paced(producer.send, client, rate=rate, seconds=seconds)
            results.latency_ms.setdefault((system.name, rate), []).extend(latencies)
            results.send_rates.setdefault((system.name, rate), []).append(achieved)
    producer.close()
    rate = throughput(system, redis_url, client, log, args.messages)
    results.throughput.setdefault(system.name, []).append(rate)
    client.close()
    print(f"  {system.name}: {rate:,.0f} msg/s", file=sys.stderr, flush=True)


def sweep_systems() -> list[System]:
    systems = []
    for processes, threads in ((1, 1), (1, 4), (2, 8)):
        for prefetch in sorted({1, threads, 2 * threads, 32}):
            for broker, label in (("wakeup", "fintask"), ("plain", "bare Dramatiq")):
                name = f"{label} {processes}x{threads} prefetch {prefetch}"
                systems.append(System(name, broker, processes, threads, prefetch))
    return systems


def report(args: argparse.Namespace, systems: list[System], results: Results) -> str:
    versions = (
        f"Redis {args.redis_version}, Dramatiq {dramatiq.__version__}, Celery {celery.__version__}"
    )
    lines = [
        "# Send-to-start latency and no-op throughput",
        "",
        f"Measured {dt.date.today()} on {os.cpu_count()} cores ({platform.machine()}), "
        f"load average {args.load_before} at the start; {versions}. The machine was shared with "
        "other engineers' test suites running at the same time: the numbers are as measured.",
        "",
        f"Reproduce: `{shlex.join(['.venv/bin/python', '-m', 'bench.latency', *sys.argv[1:]])}`",
        "",
        "| system | set-up |",
        "|---|---|",
        *(f"| {s.name} | {s.describe()} |" for s in systems),
        "",
        f"## Latency, send to start (ms), pooled over {args.repeats} repeat(s)",
        "",
        "| system | rate (msg/s) | slowest send rate | messages | p50 | p95 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate, _ in args.rates:
        for s in systems:
            values = results.latency_ms.get((s.name, rate), [])
            if not values:
                continue
            achieved = min(results.send_rates[(s.name, rate)])
            cells = " | ".join(f"{percentile(values, q):.1f}" for q in (0.5, 0.95, 0.99, 1.0))
            lines.append(f"| {s.name} | {rate:g} | {achieved:.0f} | {len(values)} | {cells} |")
    lines += [
        "",
        f"## No-op throughput (msg/s): {args.messages:,} pre-filled messages, first to last start",
        "",
        "| system | median | runs |",
        "|---|---:|---|",
    ]
    for s in systems:
        runs = sorted(results.throughput.get(s.name, []))
        if runs:
            listed = ", ".join(f"{r:,.0f}" for r in runs)
            lines.append(f"| {s.name} | {runs[len(runs) // 2]:,.0f} | {listed} |")
    if results.idle:
        lines += [
            "",
            "## Idle Redis load (5 s, workers running, nothing sent)",
            "",
            "| system | EVALSHA /s | BLPOP or BRPOP /s | all commands /s | Redis CPU ms/s |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in systems:
            idle = results.idle.get(s.name, [])
            if idle:
                means = " | ".join(f"{sum(v) / len(v):.1f}" for v in zip(*idle, strict=True))
                lines.append(f"| {s.name} | {means} |")
    return "\n".join(lines) + "\n" + NOTES


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slow-seconds", type=float, default=30.0, help="at 2 msg/s")
    parser.add_argument("--fast-seconds", type=float, default=10.0, help="at 500 msg/s")
    parser.add_argument("--messages", type=int, default=20_000, help="for throughput")
    parser.add_argument("--prefetch-sweep", action="store_true")
    args = parser.parse_args()
    if args.prefetch_sweep:
        args.rates = [(500, args.fast_seconds / 2)]
        args.messages = min(args.messages, 5_000)
    else:
        args.rates = [(2, args.slow_seconds), (500, args.fast_seconds)]
    return args


def main() -> None:
    args = parse_args()
    systems = sweep_systems() if args.prefetch_sweep else list(SYSTEMS)
    repeats = 1 if args.prefetch_sweep else args.repeats
    args.repeats = repeats
    args.load_before = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    results = Results()
    with (
        tempfile.TemporaryDirectory() as tmp,
        RedisServer(data_dir=Path(tmp), persistent=False) as server,
    ):
        args.logs = Path(tmp)
        args.redis_version = redis.Redis.from_url(server.url).info("server")["redis_version"]
        for repeat in range(repeats):
            shift = repeat % len(systems)
            for system in systems[shift:] + systems[:shift]:
                print(f"repeat {repeat + 1}/{repeats}: {system.name}", file=sys.stderr, flush=True)
                measure(system, args, server.url, results)
    text = report(args, systems, results)
    RESULTS.mkdir(exist_ok=True)
    name = "latency_prefetch.md" if args.prefetch_sweep else "latency.md"
    (RESULTS / name).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
