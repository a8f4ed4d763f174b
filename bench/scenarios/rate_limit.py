"""Scenario 5: how closely a 20/s rate limit holds with a backlog, each system's own way.

A backlog larger than the measured window can drain is queued before the workers start; the
task records its start time, and the scenario counts the starts in a steady window after the
first second. fintask's ``rate_limit="20/s"`` is one limiter in Redis for every process; bare
Dramatiq's is its ``BucketRateLimiter`` in the actor, a miss retried; Celery's
``rate_limit="20/s"`` is a token bucket in each worker instance, so the recipe is one
dedicated worker for the limited queue.

The systems run side by side, each on its own queue and keys: the work is a no-op at 20 to
40 starts a second, so they hardly compete, and one repetition takes one window, not four.
"""

from __future__ import annotations

import bisect
import statistics
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import cast

import redis

from bench.harness import Bench, Medians, Scenario
from bench.systems import Producer, System, wait_until_count
from chunking.redis_keys import dead_letters_key

KEY = "rate_limit"
RATE = 20
#: Environment variables carrying the limit (``"20/s"``) and the run's tag to the workers.
RATE_VARIABLE = "BENCH_RATE_LIMIT"
TAG_VARIABLE = "BENCH_RATE_LIMIT_TAG"
#: The task's name, the same in every system's worker module.
TASK = "rate_limited"
#: fintask's worker keeps a deferred message's reserved slot (µs, Redis's clock) under this
#: option for the task, which records how long after its slot it started.
SLOT_COPY = "bench_rate_limit_slot"
WARM_UP_S = 1.0
#: The steady window's length per mode: quick mode's 60 starts at the limit show the trend.
QUICK_WINDOW_S = 3.0
FULL_WINDOW_S = 30.0
#: The backlog is this many times what the limit lets through while workers run, so that
#: even a limit enforced per worker (2 x 20/s) cannot drain it before the window closes.
BACKLOG_FACTOR = 2.5
CASE = f"{RATE}/s limit, backlog queued"

FINTASK = "fintask"
DRAMATIQ = "Dramatiq BucketRateLimiter"
CELERY_DEDICATED = "Celery dedicated worker"
CELERY_STALL = "Celery 2 workers (celery#5927 stall)"
#: Each system's set-up by its tag, which names its queue and keys.
SYSTEMS = {
    "fintask": System(FINTASK, "fintask", processes=2, threads=8),
    "dramatiq": System(DRAMATIQ, "dramatiq", processes=2, threads=8),
    # What a Celery team runs for a rate-limited task: its own queue and one worker instance
    # (one bucket), one slot, prefetching one message.
    "celery_dedicated": System(CELERY_DEDICATED, "celery", processes=1, prefetch_multiplier=1),
    # The limit on ordinary workers: two instances (two buckets, ~40/s allowed), prefetch
    # multiplier 4, which stall on a backlog (celery/celery#5927).
    "celery_stall": System(CELERY_STALL, "celery", processes=2, threads=8, pool="threads"),
}
MODULES = {"fintask": "bench.apps.rate_limit_dramatiq", "celery": "bench.apps.rate_limit_celery"}
MODULES["dramatiq"] = MODULES["fintask"]


def queue_name(tag: str) -> str:
    """The queue of one system's run."""
    return f"bench_rate_limit_{tag}"


def starts_key(tag: str) -> str:
    """The list of the task's start times (``time.time()``) in one system's run."""
    return f"bench:rate_limit:{tag}:starts"


def retries_key(tag: str) -> str:
    """Retries spent: fintask's started messages' (Dramatiq's ``retries`` option), or each of
    bare Dramatiq's misses, every one of which is a retry."""
    return f"bench:rate_limit:{tag}:retries"


def lateness_key(tag: str) -> str:
    """The list of ``start,seconds after its slot`` of fintask's deferred messages."""
    return f"bench:rate_limit:{tag}:late"


def record_start(
    client: redis.Redis, tag: str, *, retries: int = 0, slot_us: int | None = None
) -> None:
    """What the task does: note its start time (and any retries its message spent, and how
    long after the slot it reserved a deferred message started)."""
    started = time.time()
    pipeline = client.pipeline(transaction=False)
    pipeline.rpush(starts_key(tag), repr(started))
    if retries:
        pipeline.incrby(retries_key(tag), retries)
    if slot_us is not None:
        pipeline.rpush(lateness_key(tag), f"{started!r},{started - slot_us / 1e6!r}")
    pipeline.execute()


def fill(bench: Bench, system: System, tag: str, count: int) -> None:
    """Queue ``count`` argument-less messages for ``system``'s workers, batched."""
    producer = Producer(system.kind, bench.redis_url)
    producer.send_batched(queue_name(tag), TASK, (() for _ in range(count)))
    producer.close()


def starts_in_the_second_from(starts: list[float]) -> list[int]:
    """For each of the sorted ``starts``, how many starts the second it opens holds."""
    return [bisect.bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts)]


def busiest_second(starts: list[float]) -> int:
    """The most starts within any one second of the sorted ``starts``."""
    return max(starts_in_the_second_from(starts), default=0)


@dataclass
class Run:
    """One system's part of a repetition: its tag and its steady window (``time.time()``)."""

    system: System
    tag: str
    opens: float = 0.0
    closes: float = 0.0


def run(bench: Bench) -> None:
    window_s = FULL_WINDOW_S if bench.full else QUICK_WINDOW_S
    count = int(BACKLOG_FACTOR * RATE * (WARM_UP_S + window_s + 2))
    runs = [Run(SYSTEMS[tag], tag) for tag in bench.order(list(SYSTEMS))]
    bench.flush()
    for one in runs:
        fill(bench, one.system, one.tag, count)
    with bench.client() as client, ExitStack() as stack:
        for one in runs:
            stack.enter_context(
                bench.workers(
                    KEY,
                    one.system,
                    MODULES[one.system.kind],
                    [queue_name(one.tag)],
                    extra_env={RATE_VARIABLE: f"{RATE}/s", TAG_VARIABLE: one.tag},
                )
            )
        for one in runs:
            key = starts_key(one.tag)
            if not wait_until_count(partial(client.llen, key), 1, timeout_s=60):
                raise RuntimeError(f"{one.system.name}: no task started within 60 s")
            one.opens = float(client.lindex(key, 0)) + WARM_UP_S
            one.closes = one.opens + window_s
        # A start is recorded as it happens; a little slack lets the last RPUSH land.
        time.sleep(max(0.0, max(one.closes for one in runs) + 0.2 - time.time()))
        for one in runs:
            measure(bench, client, one, count, window_s)
    bench.flush()


def measure(bench: Bench, client: redis.Redis, one: Run, count: int, window_s: float) -> None:
    """Record one system's observed rate over its window, and what the limit cost."""
    name = one.system.name
    starts = sorted(float(start) for start in client.lrange(starts_key(one.tag), 0, -1))
    if len(starts) >= count:
        raise RuntimeError(f"{name} drained the backlog before its window closed")
    steady = starts[bisect.bisect_left(starts, one.opens) : bisect.bisect_left(starts, one.closes)]
    observed = len(steady) / window_s
    bench.record(KEY, CASE, "observed rate", "msg/s", name, observed)
    bench.record(KEY, CASE, "configured rate", "msg/s", name, RATE)
    bench.record(KEY, CASE, "error vs configured", "%", name, 100 * (observed - RATE) / RATE)
    bench.record(KEY, CASE, "busiest second", "starts", name, busiest_second(steady))
    entries = cast(list[bytes], client.lrange(lateness_key(one.tag), 0, -1))
    pairs = (entry.decode().split(",") for entry in entries)
    late = [
        (float(start), float(after))
        for start, after in pairs
        if one.opens <= float(start) < one.closes
    ]
    if late:
        record_lateness(bench, name, steady, late)
    if one.system.kind != "celery":
        dead = client.zcard(dead_letters_key(queue_name(one.tag)))
        retries = int(client.get(retries_key(one.tag)) or 0)
        bench.record(KEY, CASE, "dead-lettered", "messages", name, dead)
        bench.record(KEY, CASE, "retries spent", "retries", name, retries)


def busiest_second_opens(starts: list[float]) -> float:
    """When the one second with the most of the sorted ``starts`` begins (its first start)."""
    counts = starts_in_the_second_from(starts)
    return starts[counts.index(max(counts))]


def record_lateness(
    bench: Bench, name: str, steady: list[float], late: list[tuple[float, float]]
) -> None:
    """How long after their reserved slots deferred messages started: over the window, and
    within its busiest second (where the bunch comes from)."""
    after_ms = [1000 * after for _, after in late]
    opens = busiest_second_opens(steady)
    in_busiest = [1000 * after for start, after in late if opens <= start < opens + 1.0]
    median = statistics.median_high(after_ms)
    bench.record(KEY, CASE, "start after slot, median", "ms", name, median)
    bench.record(KEY, CASE, "start after slot, max", "ms", name, max(after_ms))
    if in_busiest:
        median = statistics.median_high(in_busiest)
        bench.record(KEY, CASE, "start after slot, busiest second's median", "ms", name, median)
    bench.record(KEY, CASE, "busiest second, from the window's start", "s", name, opens - steady[0])


def verdicts(medians: Medians) -> list[str]:
    """Each system's observed rate against the limit; fintask's is the target."""
    lines = []
    for name in (FINTASK, DRAMATIQ, CELERY_DEDICATED, CELERY_STALL):
        observed = medians.get(CASE, "observed rate", name)
        if observed is None:
            continue
        error = abs(observed - RATE) / RATE
        line = f"{name} observed {observed:.2f}/s against {RATE}/s (error {100 * error:.1f}%"
        line += (
            f", target within 10%: {'met' if error <= 0.10 else 'missed'})"
            if name == FINTASK
            else ")"
        )
        retries = medians.get(CASE, "retries spent", name)
        if name == DRAMATIQ and retries is not None:
            line += f"; its misses spent {retries:,.0f} retries over the run"
        if name == CELERY_STALL:
            line += (
                ": the known stall of a limited task on ordinary workers with a backlog "
                "(celery/celery#5927), not Celery's recipe, which is the dedicated worker"
            )
        lines.append(line)
    return lines


ABOUT = f"""
A task limited to {RATE}/s gets a backlog of {BACKLOG_FACTOR} times what the limit lets through,
queued before the workers start, so it outlasts the window even at twice the limit; the task
records its start time (`time.time()`, RPUSH to a Redis list), and the observed rate is the
count of starts in a steady window that opens {WARM_UP_S:.0f} s after the system's first start
({QUICK_WINDOW_S:g} s quick, {FULL_WINDOW_S:g} s full), divided by the window; *busiest second*
is the most starts in any one second of it. The systems run side by side, each on its own queue
(no-op tasks at 20 to 40 a second hardly compete for the machine). Each uses its own way to
limit a task. **fintask**, 2 processes x 8 threads: the actor option `rate_limit="20/s"`, one
GCRA limiter in Redis for every process; a message over the limit is deferred to a reserved slot
without spending a retry. **Dramatiq BucketRateLimiter**, bare Dramatiq 2 x 8: Dramatiq's own
recipe, `BucketRateLimiter(RedisBackend(), key, limit=20, bucket=1000)` acquired in the actor,
shared by every process through Redis; a miss raises `RateLimitExceeded`, which the `Retries`
middleware retries (here after 100 ms, doubling to 1 s, up to 1,000 times, so no message dies
waiting); *retries spent* counts the misses, *dead-lettered* the messages in
`dramatiq:<queue>.XQ`. A bucket is a fixed 1 s window, so two windows' worth can start within
one second. **Celery dedicated worker**: `@app.task(rate_limit="20/s")` on its own queue,
consumed by one worker instance, `-c 1 --prefetch-multiplier 1` (prefork, `acks_late`): Celery's
limit is a token bucket in each worker instance, so one instance is one limit, and what a Celery
team runs for a rate-limited task. **Celery 2 workers (celery#5927 stall)**: the same task on
two ordinary worker instances (`-P threads -c 8`, prefetch multiplier 4), which together may run
~40/s; shown as the known stall it is: with a backlog each instance holds every prefetched
limited request with one timer each, and kombu's event loop fires at most 10 timers per turn,
then polls for up to 1 s.
"""

SCENARIO = Scenario(
    number=5,
    key=KEY,
    title="Rate-limit accuracy: a 20/s limit with a backlog",
    run=run,
    about=" ".join(ABOUT.split()),
    ratios=(),
    verdicts=verdicts,
)
