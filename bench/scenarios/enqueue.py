"""Scenario 2: enqueue throughput, one message per call and fintask's bulk enqueue.

No workers run: the harness process sends as an application would (``broker.enqueue`` through
each Dramatiq broker's enqueue-side middleware, Celery's ``send_task``), then batched:
:func:`chunking.enqueue_many`, which pipelines the broker's own dispatch script, a batch of
1,000 per round trip, against kombu's own batched publishing.
"""

from __future__ import annotations

import time

from bench.harness import Bench, Medians, Scenario
from bench.scenarios.noop import CELERY, DRAMATIQ, FINTASK
from bench.systems import Producer

BULK = "fintask bulk"
CELERY_BATCH = "Celery batch"
#: The batched producers: system kind by row name.
BATCHED = {BULK: FINTASK.kind, CELERY_BATCH: CELERY.kind}
SINGLE = (FINTASK, DRAMATIQ, CELERY)


def run(bench: Bench) -> None:
    messages = 50_000 if bench.full else 4_000
    case = f"{messages:,} messages"
    for name in bench.order([*(system.name for system in SINGLE), *BATCHED]):
        bench.flush()
        kind = BATCHED.get(name) or next(s.kind for s in SINGLE if s.name == name)
        producer = Producer(kind, bench.redis_url)
        producer.send("noop-enqueue", "noop", (time.time(),))  # connected, scripts loaded
        now = time.time()
        started = time.perf_counter()
        if name in BATCHED:
            producer.send_batched("noop-enqueue", "noop", ((now,) for _ in range(messages)))
        else:
            for _ in range(messages):
                producer.send("noop-enqueue", "noop", (time.time(),))
        elapsed = time.perf_counter() - started
        producer.close()
        bench.record("enqueue", case, "enqueue rate", "msg/s", name, messages / elapsed)


def verdicts(medians: Medians) -> list[str]:
    lines = []
    for case, metric in medians.rows():
        ratio = medians.ratio(case, metric, BULK, FINTASK.name)
        if ratio is not None:
            met = "met" if ratio >= 5 else "**missed**"
            lines.append(
                f"bulk enqueue is {ratio:.1f}x fintask's one-message-per-call ({case}; "
                f"target >= 5x): {met}"
            )
        over_bare = medians.ratio(case, metric, BULK, DRAMATIQ.name)
        if over_bare is not None:
            lines.append(f"bulk enqueue is {over_bare:.1f}x bare Dramatiq's `enqueue` per call")
    return lines


SCENARIO = Scenario(
    number=2,
    key="enqueue",
    title="Enqueue throughput",
    run=run,
    about=(
        "A producer in the harness sends no-op messages as fast as it can, no workers running: "
        "one message per call through each system's client (fintask's broker runs its "
        "enqueue-side middleware, guardrails included; Celery's `send_task`), and batched: "
        "fintask's `chunking.enqueue_many`, 1,000 messages per pipelined round trip, and "
        "kombu 5.7's `Producer.batch()` around Celery's `send_task`."
    ),
    ratios=(
        (BULK, "fintask"),
        (CELERY_BATCH, "Celery"),
        ("fintask", "Celery"),
        (BULK, CELERY_BATCH),
        ("fintask", "Dramatiq"),
    ),
    verdicts=verdicts,
)
