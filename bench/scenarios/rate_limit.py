"""Scenario 5: how closely a 20/s rate limit holds when two worker processes share it.

A backlog larger than the measured window can drain is queued before the workers start; the
task records its start time, and the scenario counts the starts in a steady window after the
first second. fintask's ``rate_limit="20/s"`` is one limiter in Redis for every process;
Celery's ``rate_limit="20/s"`` is a token bucket in each worker instance's consumer.

The systems run side by side, each on its own queue and keys: the work is a no-op at 20 to
40 starts a second, so they hardly compete, and one repetition takes one window, not three.
"""

from __future__ import annotations

import bisect
import time
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial

import redis

from bench.harness import Bench, Medians, Scenario
from bench.systems import (
    Producer,
    System,
    wait_until_count,
    workers,
)
from chunking.redis_keys import dead_letters_key

KEY = "rate_limit"
RATE = 20
#: Environment variables carrying the limit (``"20/s"``) and the run's tag to the workers.
RATE_VARIABLE = "BENCH_RATE_LIMIT"
TAG_VARIABLE = "BENCH_RATE_LIMIT_TAG"
#: The task's name, the same in every system's worker module.
TASK = "rate_limited"
WARM_UP_S = 1.0
#: The backlog is this many times what the limit lets through while workers run, so that
#: even a limit enforced per worker (2 x 20/s) cannot drain it before the window closes.
BACKLOG_FACTOR = 2.5
CASE = f"{RATE}/s, 2 worker processes"

SYSTEMS = (
    System("fintask", "fintask", processes=2, threads=8),
    # Celery's bucket lives in each worker instance's consumer (prefork children share their
    # parent's): two processes that each enforce the limit are two worker instances.
    System("Celery", "celery", processes=2, threads=8, pool="threads"),
    # Celery's usual deployment: one worker instance with two prefork children, one bucket.
    System("Celery prefork", "celery", processes=2),
)
MODULES = {"fintask": "bench.apps.rate_limit_dramatiq", "celery": "bench.apps.rate_limit_celery"}


def queue_name(tag: str) -> str:
    """The queue of one system's run."""
    return f"bench_rate_limit_{tag}"


def starts_key(tag: str) -> str:
    """The list of the task's start times (``time.time()``) in one system's run."""
    return f"bench:rate_limit:{tag}:starts"


def retries_key(tag: str) -> str:
    """The retries the started messages had spent (fintask: Dramatiq's ``retries`` option)."""
    return f"bench:rate_limit:{tag}:retries"


def record_start(client: redis.Redis, tag: str, *, retries: int = 0) -> None:
    """What the task does: note its start time (and any retries its message spent)."""
    pipeline = client.pipeline(transaction=False)
    pipeline.rpush(starts_key(tag), repr(time.time()))
    if retries:
        pipeline.incrby(retries_key(tag), retries)
    pipeline.execute()


def fill(bench: Bench, system: System, tag: str, count: int) -> None:
    """Queue ``count`` argument-less messages for ``system``'s workers, batched."""
    producer = Producer(system.kind, bench.redis_url)
    producer.send_batched(queue_name(tag), TASK, (() for _ in range(count)))
    producer.close()


def busiest_second(starts: list[float]) -> int:
    """The most starts within any one second of the sorted ``starts``."""
    return max((bisect.bisect_left(starts, t + 1.0) - i for i, t in enumerate(starts)), default=0)


@dataclass
class Run:
    """One system's part of a repetition: its tag and its steady window (``time.time()``)."""

    system: System
    tag: str
    opens: float = 0.0
    closes: float = 0.0


def run(bench: Bench) -> None:
    window_s = 30.0 if bench.full else 4.0
    count = int(BACKLOG_FACTOR * RATE * (WARM_UP_S + window_s + 2))
    runs = [Run(system, system.name.lower().replace(" ", "_")) for system in bench.order(SYSTEMS)]
    bench.flush()
    for one in runs:
        fill(bench, one.system, one.tag, count)
    starts = [
        partial(
            workers,
            one.system,
            MODULES[one.system.kind],
            [queue_name(one.tag)],
            redis_url=bench.redis_url,
            log_path=bench.log_path(KEY, one.system.name),
            extra_env={RATE_VARIABLE: f"{RATE}/s", TAG_VARIABLE: one.tag},
        )
        for one in runs
    ]
    with bench.client() as client, ExitStack() as stack:
        for start in starts:
            stack.enter_context(start())
        for one in runs:
            key = starts_key(one.tag)
            if not wait_until_count(lambda key=key: client.llen(key), 1, timeout_s=60):
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
    if one.system.kind != "celery":
        dead = client.zcard(dead_letters_key(queue_name(one.tag)))
        retries = int(client.get(retries_key(one.tag)) or 0)
        bench.record(KEY, CASE, "dead-lettered", "messages", name, dead)
        bench.record(KEY, CASE, "retries spent", "retries", name, retries)


def verdicts(medians: Medians) -> list[str]:
    """The target for fintask, and what Celery's per-worker limit does with a backlog."""
    lines = []
    fintask = medians.get(CASE, "observed rate", "fintask")
    if fintask is not None:
        error = abs(fintask - RATE) / RATE
        met = "met" if error <= 0.10 else "NOT met"
        lines.append(
            f"fintask observed {fintask:.2f}/s vs {RATE}/s configured "
            f"(error {100 * error:.1f}%, target within 10%: {met})"
        )
    celery = medians.get(CASE, "observed rate", "Celery")
    if celery is not None:
        line = (
            f"Celery observed {celery:.2f}/s: its limit is per worker, "
            f"so 2 workers allow ~{2 * RATE}/s"
        )
        if celery < 0.9 * RATE:
            line += (
                "; with a backlog they did far less, because each worker's event loop fires at "
                "most 10 of the rate-limit timers it piles up, then sleeps 1 s"
            )
        lines.append(line)
    prefork = medians.get(CASE, "observed rate", "Celery prefork")
    if prefork is not None:
        busiest = medians.get(CASE, "busiest second", "Celery prefork") or 0
        lines.append(
            f"Celery prefork -c 2 (one worker instance, one bucket) observed {prefork:.2f}/s, "
            f"in bursts of up to {busiest:.0f} starts a second"
        )
    return lines


SCENARIO = Scenario(
    number=5,
    key=KEY,
    title="Rate-limit accuracy: 20/s shared by two worker processes",
    run=run,
    about=(
        f"A task limited to {RATE}/s is worked by two worker processes. A backlog of "
        f"{BACKLOG_FACTOR} times what the limit lets through is queued before the workers "
        "start, so it outlasts the window even at twice the limit; the task records its start "
        "time (`time.time()`, RPUSH to a Redis list), and the observed rate is the count of "
        f"starts in a steady window that opens {WARM_UP_S:.0f} s after the system's first start "
        "(4 s quick, 30 s full), divided by the window; *busiest second* is the most starts in "
        "any one second of it. The systems run side by side, each on its own queue (no-op "
        "tasks at 20 to 40 a second hardly compete for the machine). fintask runs 2 processes "
        'x 8 threads with the actor option `rate_limit="20/s"`: one GCRA limiter in Redis for '
        "every process; a message over the limit is deferred to a reserved slot without "
        "spending a retry (retries spent and dead letters in `dramatiq:<queue>.XQ` are "
        'counted). Celery runs `@app.task(rate_limit="20/s")` (prefetch multiplier 4, '
        "`acks_late`). Its limit is a token bucket in each worker instance's consumer, shared "
        "by that instance's prefork children: *Celery* is two worker instances (`-P threads "
        "-c 8` each), two processes that each enforce the limit as fintask's two processes "
        "do, allowed ~40/s together; *Celery prefork* is the usual `-P prefork -c 2`, one "
        "instance and one bucket. With a backlog, Celery 5.7 holds every prefetched "
        "rate-limited request in the consumer and keeps one timer per request it received; "
        "kombu's event loop fires at most 10 timers per turn and then polls for up to 1 s, so "
        "the threads worker starts about one such task a second and the prefork worker, "
        "woken by its pool's pipes, starts them in bursts (with that cap lifted, a worker "
        "holds 20/s). Bare Dramatiq is left out: it has no rate-limit option, and its "
        "`RateLimiter`s raise inside the actor, spending a retry per miss and dead-lettering "
        "a backlog's tail."
    ),
    ratios=(("fintask", "Celery"),),
    verdicts=verdicts,
)
