"""Scenario 10: a batch of N no-op members and its callback, fintask's batch beside Celery's chord.

issue 20's benchmark: "when all of these are done, do that" at 10^4 members (quick) and 10^6
(full), on the benchmark's private Redis, each system's workers started and answering before
the producer begins, so start-up is not in the times.

- **fintask**: ``chunking.Batches`` with fintask's prefix (``app.redis_access.BATCH_PREFIX``,
  the keys ``pipelines.batches.BATCHES`` uses), created with an ``on_complete`` callback, its
  members added page by page (``add``: one ``HINCRBY`` and one pipelined enqueue per 1,000)
  through fintask's producer broker, then sealed; run by the Procfile's ``worker`` shape (2
  processes x 8 threads, prefetch 16), whose ``BatchMembers`` middleware records each member.
- **Celery 5.7**: ``chord(group(member.s() ...), batch_done.s()).apply_async()`` with Redis as
  broker *and* result backend (a chord needs one: Celery's documented way), ``acks_late``; the
  worker setting swept at the quick size (prefork, threads, solo; concurrency; prefetch
  multiplier) and the fastest named. Its documented costs: every member stores its result
  (``celery-task-meta-<id>``, kept ``result_expires``, a day by default) and its part of the
  chord (the group's ordered set ``.j``, its counter ``.t``, its size ``.s``); the producer
  builds the whole group in memory, and the callback is given every member's result.

Not measured: bare Dramatiq's ``group(...).add_completion_callback`` (Results middleware): it
too builds every member in memory before it enqueues, and it is not what either team runs.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, cast

import redis
from celery import Celery, chord
from dramatiq import Message

from app.redis_access import BATCH_PREFIX
from bench.harness import Bench, Medians, Scenario, TimeSeries
from bench.systems import Producer, System, celery_app, wait_until_count
from chunking import Batches, Callback
from chunking import batch_scripts as scripts

KEY = "batch"
#: Members per batch: quick mode's 10^4, full mode's 10^6 (issue 20's size).
QUICK_MEMBERS = 10_000
FULL_MEMBERS = 1_000_000
#: The one queue members, callbacks and readiness probes share: the callback waits behind
#: nothing once the last member is done.
QUEUE = "bench_batch"
MEMBER = "batch_member"
CALLBACK = "batch_done"
READY = "batch_ready"
#: Each worker process adds its pid here when it runs a readiness probe.
READY_KEY = "bench:batch:ready"
#: The callback's record: ``started`` (its first start, epoch seconds), ``runs``, ``members``.
CALLBACK_KEY = "bench:batch:callback"
#: How often the harness samples Redis memory while a batch runs.
SAMPLE_S = 0.2

#: fintask as the Procfile's ``worker`` runs it.
FINTASK = System("fintask", "fintask", processes=2, threads=8, prefetch=16)
#: Celery's small sweep for no-op members (each run at the quick size): its prefork pool at the
#: cores' count, two thread workers of 8 (fintask's slots), two solo workers with a deep
#: prefetch (the full throughput sweep's best for no-ops).
CELERY_SWEEP = tuple(
    replace(system, name=f"Celery {system.setting()}")
    for system in (
        System("Celery", "celery", 2, prefetch_multiplier=4),
        System("Celery", "celery", 2, threads=8, pool="threads", prefetch_multiplier=4),
        System("Celery", "celery", 2, pool="solo", prefetch_multiplier=16),
    )
)
MODULES = {"fintask": "bench.apps.batch_dramatiq", "celery": "bench.apps.batch_celery"}
SWEEP_PREFIX = "sweep: "


def members_of(bench: Bench) -> int:
    """This run's batch size: ``--batch-members``, else the mode's."""
    return bench.batch_members or (FULL_MEMBERS if bench.full else QUICK_MEMBERS)


def case_name(members: int) -> str:
    return f"{members:,} members"


def record_callback(client: redis.Redis, members: int) -> None:
    """What every system's callback does first: keep its first start, count its runs and the
    members it was told of (fintask: succeeded + failed; Celery: its results' count)."""
    pipe = client.pipeline(transaction=False)
    pipe.hsetnx(CALLBACK_KEY, "started", repr(time.time()))
    pipe.hincrby(CALLBACK_KEY, "runs", 1)
    pipe.hset(CALLBACK_KEY, "members", members)
    pipe.execute()


def celery_batch_app(redis_url: str, client: redis.Redis | None = None) -> Celery:
    """Celery's app for the chord, the workers' and the producer's: :func:`celery_app` (JSON,
    ``acks_late``, remote control off) with Redis as the result backend a chord needs, results
    kept (a chord's members may not ignore theirs), ``result_expires`` at its default (1 day).
    ``client`` is where the workers' tasks record; the producer passes none. The tasks are the
    app's own (``shared=False``): the harness builds an app per chord."""
    app = celery_app(
        "bench_batch",
        redis_url,
        task_default_queue=QUEUE,
        result_backend=redis_url,
        task_ignore_result=False,
    )

    @app.task(name=MEMBER, shared=False)
    def member() -> None:
        return None

    @app.task(name=CALLBACK, shared=False)
    def batch_done(results: Sequence[Any]) -> None:
        assert client is not None
        record_callback(client, len(results))

    @app.task(name=READY, ignore_result=True, shared=False)
    def ready() -> None:
        assert client is not None
        client.sadd(READY_KEY, os.getpid())

    return app


@dataclass(frozen=True)
class Outcome:
    """One batch, measured. Times in seconds from the producer's start (epoch where named)."""

    members: int
    producer_s: float
    total_s: float
    #: From the batch's completion (its last member done, or its seal if later; Celery: the
    #: latest ``date_done`` of its members' results) to the callback's start.
    last_to_callback_ms: float
    #: ``MEMORY USAGE`` of the batch's (chord's) own keys at their sampled peak, per member.
    state_bytes: float
    #: What of it stays once the callback ran (fintask: 7 days; Celery: ``result_expires``).
    kept_bytes: float
    #: Redis ``used_memory`` at its peak above its value before the producer, per member
    #: (the queued messages included).
    peak_used_bytes: float
    peak_pss_mb: float
    callback_runs: int
    callback_members: int

    @property
    def members_per_s(self) -> float:
        """Members from the producer's start to the callback's start, per second."""
        return self.members / self.total_s if self.total_s > 0 else 0.0


def latest_done(metas: Iterable[bytes | None]) -> float:
    """The latest ``date_done`` (epoch seconds) of Celery result metas (JSON, ISO dates in
    UTC); 0 when none is there."""
    latest = 0.0
    for raw in metas:
        if raw is None:
            continue
        done = json.loads(raw).get("date_done")
        if done:
            stamp = dt.datetime.fromisoformat(done)
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=dt.UTC)
            latest = max(latest, stamp.timestamp())
    return latest


def memory_usage(client: redis.Redis, keys: Sequence[str], *, samples: int = 5) -> int:
    """Bytes Redis holds for ``keys`` (``MEMORY USAGE``, pipelined a thousand at a time;
    ``samples=0`` reads every element of a collection, the default estimates from five)."""
    total = 0
    for start in range(0, len(keys), 1000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 1000]:
            pipe.memory_usage(key, samples=samples)
        total += sum(int(size or 0) for size in pipe.execute())
    return total


def used_memory(client: redis.Redis) -> int:
    return int(cast(dict[str, Any], client.info("memory"))["used_memory"])


def fastest(outcomes: dict[str, Outcome]) -> str:
    """The setting whose batch reached its callback first."""
    return min(outcomes, key=lambda name: outcomes[name].total_s)


@contextmanager
def running(bench: Bench, system: System) -> Iterator[Any]:
    """``system``'s batch workers, started and answering (every consuming process ran a
    probe), on a flushed Redis."""
    bench.flush()
    with bench.workers(KEY, system, MODULES[system.kind], [QUEUE]) as started:
        producer = Producer(system.kind, bench.redis_url, scenario=KEY)
        deadline = time.monotonic() + 90
        with bench.client() as client:
            try:
                while int(cast(int, client.scard(READY_KEY))) < system.consumers:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{system.name}: workers did not answer in 90 s")
                    producer.send(QUEUE, READY)
                    time.sleep(0.1)
            finally:
                producer.close()
            time.sleep(0.5)  # the last probes drain
        yield started


@dataclass(frozen=True)
class Produced:
    """A batch (chord) sent: how long sending took, its own keys, its members' result keys
    (Celery's), and how to read when the library recorded its completion (epoch seconds, 0 if
    not recorded)."""

    producer_s: float
    state_keys: list[str]
    result_keys: list[str]
    completed_at: Callable[[], float]


def produce_fintask(bench: Bench, client: redis.Redis, members: int) -> Produced:
    """Create, fill page by page and seal one batch, as a fintask producer does."""
    producer = Producer("fintask", bench.redis_url, scenario=KEY)
    batches = Batches(client=client, broker=producer.broker, prefix=BATCH_PREFIX)
    began = time.monotonic()
    batch_id = batches.create(name="bench", on_complete=Callback(CALLBACK, QUEUE))
    batches.add(batch_id, (Message(QUEUE, MEMBER, (), {}, {}) for _ in range(members)))
    batches.seal(batch_id)
    producer_s = time.monotonic() - began
    producer.close()

    def completed_at() -> float:
        progress = batches.progress(batch_id)
        done = progress.completed_at if progress else None
        return done.timestamp() if done else 0.0

    keys = [
        scripts.meta_key(BATCH_PREFIX, batch_id),
        scripts.done_key(BATCH_PREFIX, batch_id),
        scripts.failures_key(BATCH_PREFIX, batch_id),
    ]
    return Produced(producer_s, keys, [], completed_at)


def produce_celery(bench: Bench, client: redis.Redis, members: int) -> Produced:
    """Apply one chord of ``members`` no-ops and its callback, as a Celery producer does
    (the group built in memory first: Celery has no other way). With a result backend, Celery's
    producer also subscribes to every member's result channel as it sends it (``on_task_call``):
    part of its time. Those subscriptions are dropped (the results collected) before the next
    run, while the benchmark's Redis still answers."""
    app = celery_batch_app(bench.redis_url)
    began = time.monotonic()
    header = [app.signature(MEMBER, queue=QUEUE) for _ in range(members)]
    result = chord(header, app.signature(CALLBACK, queue=QUEUE)).apply_async()
    producer_s = time.monotonic() - began
    group_id = result.parent.id
    backend = app.backend
    chord_keys = [_text(backend.get_key_for_group(group_id, s)) for s in (".j", ".t", ".s")]
    result_keys = [_text(backend.get_key_for_task(r.id)) for r in result.parent.results]
    del result, header
    gc.collect()
    app.close()

    def completed_at() -> float:
        latest = 0.0
        for start in range(0, len(result_keys), 1000):
            metas = cast(list[bytes | None], client.mget(result_keys[start : start + 1000]))
            latest = max(latest, latest_done(metas))
        return latest

    return Produced(producer_s, chord_keys, result_keys, completed_at)


def _text(key: str | bytes) -> str:
    return key.decode() if isinstance(key, bytes) else key


PRODUCERS = {"fintask": produce_fintask, "celery": produce_celery}


def measure(bench: Bench, system: System, members: int) -> Outcome:
    """One batch of ``members`` on ``system``'s running workers, from the producer's start to
    the callback's start, and what it left in Redis."""
    timeout_s = 7_200 if members > QUICK_MEMBERS else 300
    with running(bench, system) as started, bench.client() as client:
        idle = used_memory(client)
        state_keys: list[str] = []
        series = TimeSeries(interval_s=SAMPLE_S)
        probes: dict[str, Callable[[], float]] = {
            "used": lambda: used_memory(client) - idle,
            "state": lambda: memory_usage(client, state_keys) if state_keys else 0,
        }
        with series.sampling(probes):
            began = time.time()
            produced = PRODUCERS[system.kind](bench, client, members)
            state_keys = produced.state_keys
            if not wait_until_count(
                lambda: int(cast(bool, client.hexists(CALLBACK_KEY, "started"))),
                1, timeout_s=timeout_s, interval_s=0.01,
            ):  # fmt: skip
                raise RuntimeError(f"{system.name}: no callback within {timeout_s} s")
        record = {
            k.decode(): v.decode()
            for k, v in cast(dict[bytes, bytes], client.hgetall(CALLBACK_KEY)).items()
        }
        callback_at = float(record["started"])
        completed = produced.completed_at()
        results = memory_usage(client, produced.result_keys, samples=0)
        kept = memory_usage(client, state_keys, samples=0) + results
        peak_state = series.peak("state") + results
        time.sleep(0.5)  # a duplicate callback has time to show
        runs = int(cast(bytes, client.hget(CALLBACK_KEY, "runs")))
        peak_pss = started.peak_pss_mb
    return Outcome(
        members=members,
        producer_s=produced.producer_s,
        total_s=callback_at - began,
        last_to_callback_ms=(callback_at - completed) * 1000 if completed else float("nan"),
        state_bytes=peak_state / members,
        kept_bytes=kept / members,
        peak_used_bytes=series.peak("used") / members,
        peak_pss_mb=peak_pss,
        callback_runs=runs,
        callback_members=int(record["members"]),
    )


def record(bench: Bench, case: str, system: str, outcome: Outcome, setting: str) -> None:
    """Every figure of one batch under ``case``."""
    for metric, unit, value in (
        ("producer", "s", outcome.producer_s),
        ("total to callback start", "s", outcome.total_s),
        ("members/s", "members/s", outcome.members_per_s),
        ("last member -> callback", "ms", outcome.last_to_callback_ms),
        ("Redis bytes/member, batch state at peak", "B", outcome.state_bytes),
        ("Redis bytes/member, kept after the callback", "B", outcome.kept_bytes),
        ("Redis used_memory peak/member", "B", outcome.peak_used_bytes),
        ("peak worker PSS", "MiB", outcome.peak_pss_mb),
        ("callback runs", "", outcome.callback_runs),
        ("members the callback was told of", "", outcome.callback_members),
    ):
        bench.record(KEY, case, metric, unit, system, value, setting=setting)


def run(bench: Bench) -> None:
    """One repetition: fintask's batch and Celery's sweep (in rotated order), then Celery's
    fastest setting named; in full mode, or with a size past the quick one, the sweep runs at
    the quick size and the fastest setting runs again at the full size."""
    members = members_of(bench)
    sweep_size = min(members, QUICK_MEMBERS)
    outcomes: dict[str, Outcome] = {}
    for system in bench.order([FINTASK, *CELERY_SWEEP]):
        size = members if system is FINTASK else sweep_size
        outcomes[system.name] = measure(bench, system, size)
        if system is not FINTASK:
            record(
                bench, f"{SWEEP_PREFIX}{case_name(size)}", "Celery", outcomes[system.name],
                system.setting(),
            )  # fmt: skip
    record(bench, case_name(members), "fintask", outcomes["fintask"], FINTASK.setting())
    swept = {s.name: outcomes[s.name] for s in CELERY_SWEEP}
    best = next(s for s in CELERY_SWEEP if s.name == fastest(swept))
    outcome = swept[best.name]
    if members != sweep_size:
        outcome = measure(bench, best, members)
    record(bench, case_name(members), "Celery", outcome, best.setting())
    bench.flush()


def verdicts(medians: Medians) -> list[str]:
    """The callback's lag and the memory per member, side by side, for each batch size."""
    lines = []
    for case, metric in medians.rows():
        if case.startswith(SWEEP_PREFIX) or metric not in (
            "total to callback start",
            "last member -> callback",
            "Redis bytes/member, batch state at peak",
        ):
            continue
        mine, theirs = medians.get(case, metric, "fintask"), medians.get(case, metric, "Celery")
        if mine is None or theirs is None:
            continue
        unit = medians.units[(case, metric)]
        better = "fintask" if mine < theirs else "**Celery**"
        lines.append(
            f"{case}, {metric}: fintask {mine:,.4g} {unit}, Celery's chord {theirs:,.4g} {unit} "
            f"(less is better: {better})."
        )
    for (case, metric, system), values in medians.runs.items():
        if metric == "callback runs" and max(values) != 1:
            lines.append(f"{system} at {case}: its callback ran {max(values):.0f} times, not once.")
    return lines


ABOUT = f"""
One batch of *n* no-op members and one callback, *n* = {QUICK_MEMBERS:,} in quick mode and
{FULL_MEMBERS:,} in full mode (`--batch-members N` sets another), on one queue of the benchmark's
Redis, each system's workers started and answering first. **fintask**: `chunking.Batches` under
fintask's prefix (`{BATCH_PREFIX}`, `pipelines.batches.BATCHES`'s keys), `create(on_complete=...)`,
`add` page by page (1,000 a page) through fintask's producer broker, `seal`; the Procfile's
`worker` shape ({FINTASK.setting()}), its `BatchMembers` middleware recording each member.
**Celery 5.7**: `chord(group(member.s() ...), batch_done.s()).apply_async()`, Redis as broker and
as the result backend a chord needs (results kept, `result_expires` 1 day by default), `acks_late`,
the group built in memory by the producer; its worker setting swept at {QUICK_MEMBERS:,} members
({"; ".join(s.setting() for s in CELERY_SWEEP)}) and the fastest to its callback named (full
mode: run again at {FULL_MEMBERS:,}). *producer*: create + add + seal (Celery: the chord's
`apply_async`). *total*: from the producer's start to the callback's start; *members/s* is *n*
over it. *last member -> callback*: from the batch's completion as the library records it
(fintask: `completed_at`, the last member's record or the seal if later; Celery: the latest
`date_done` of its members' results) to the callback's start. *Redis bytes/member, batch state
at peak*: `MEMORY USAGE` of the batch's own keys (fintask: meta hash, done bitmap, failures hash;
Celery: the chord's `.j` ordered set, `.t` and `.s`, sampled every {SAMPLE_S} s, plus every
member's `celery-task-meta-*` result) at their peak, per member; *kept after the callback*: the
same once it ran (fintask keeps its batch 7 days; Celery deletes the chord's keys and keeps the
results `result_expires`); *used_memory peak*: Redis's `used_memory` above its value before the
producer, queued messages included. *callback runs* must be 1.
"""

SCENARIO = Scenario(
    number=10,
    key=KEY,
    title="Batch of no-op members and its callback: fintask's batch, Celery's chord",
    run=run,
    about=" ".join(ABOUT.split()),
    ratios=(("fintask", "Celery"),),
    verdicts=verdicts,
)
