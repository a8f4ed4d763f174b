"""What each system's experts tune, as the settings the throughput sweep tries.

A family is one system (fintask, Dramatiq, Celery, taskiq, Huey, arq, RQ) and its grid of
settings: a small one for quick runs, the full one with ``--full``. The first quick setting is
the family's default, used when no sweep ran. Each setting is a :class:`System` named after its
family and its knobs, so every setting's samples stay apart in the report.

- fintask and Dramatiq: processes x threads x prefetch.
- Celery: pool (prefork, threads, solo) x concurrency x prefetch multiplier, remote control off.
- taskiq: worker processes x concurrent async tasks per process.
- Huey: worker count, in processes or threads.
- arq: worker processes x ``max_jobs``.
- RQ: ``worker-pool`` size, ``SimpleWorker`` (runs the job in the worker) or the forking
  ``Worker`` (a work horse per job, RQ's default).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace

from bench.systems.system import RABBITMQ_VARIABLE, System


@dataclass(frozen=True)
class Family:
    """One system and the settings its experts would try."""

    name: str
    quick: tuple[System, ...]
    full: tuple[System, ...]

    @property
    def default(self) -> System:
        """The setting measured when no sweep did, named as the family."""
        return replace(self.quick[0], name=self.name)

    def grid(self, full: bool) -> tuple[System, ...]:
        return self.full if full else self.quick


def _named(family: str, systems: Iterable[System]) -> tuple[System, ...]:
    return tuple(replace(system, name=f"{family} {system.setting()}") for system in systems)


def dramatiq_grid(
    family: str, kind: str, shapes: Iterable[tuple[int, int]], prefetches: Iterable[int]
) -> tuple[System, ...]:
    """Every ``processes x threads`` shape at every prefetch (Dramatiq's default, 2 x threads,
    is among them, set explicitly, so fintask and Dramatiq share each row of the table)."""
    chosen = list(prefetches)
    return _named(
        family,
        (
            System(family, kind, processes, threads, prefetch)
            for processes, threads in shapes
            for prefetch in chosen
        ),
    )


def _celery(full: bool) -> tuple[System, ...]:
    if not full:
        return _named(
            "Celery",
            (
                System("Celery", "celery", 2),
                System("Celery", "celery", 2, threads=8, pool="threads"),
            ),
        )
    multipliers = (1, 4, 16)
    return _named(
        "Celery",
        (
            *(
                System("Celery", "celery", c, prefetch_multiplier=m)
                for c in (2, 4)
                for m in multipliers
            ),
            *(
                System("Celery", "celery", 2, threads=t, pool="threads", prefetch_multiplier=m)
                for t in (8, 16)
                for m in multipliers
            ),
            *(
                System("Celery", "celery", 2, pool="solo", prefetch_multiplier=m)
                for m in multipliers
            ),
        ),
    )


FULL_SHAPES = ((1, 8), (2, 8), (2, 16))
FINTASK = Family(
    "fintask",
    dramatiq_grid("fintask", "fintask", [(2, 8)], (16, 32)),
    dramatiq_grid("fintask", "fintask", FULL_SHAPES, (8, 16, 32, 64)),
)
DRAMATIQ = Family(
    "Dramatiq",
    dramatiq_grid("Dramatiq", "dramatiq", [(2, 8)], (16, 32)),
    dramatiq_grid("Dramatiq", "dramatiq", FULL_SHAPES, (8, 16, 32, 64)),
)
CELERY = Family("Celery", _celery(False), _celery(True))
TASKIQ = Family(
    "taskiq",
    _named("taskiq", [System("taskiq", "taskiq", 2, threads=100)]),
    _named(
        "taskiq", (System("taskiq", "taskiq", p, threads=t) for p in (1, 2, 4) for t in (10, 100))
    ),
)
HUEY = Family(
    "Huey",
    _named(
        "Huey",
        (System("Huey", "huey", 2, pool="process"), System("Huey", "huey", 8, pool="thread")),
    ),
    _named(
        "Huey",
        (
            *(System("Huey", "huey", n, pool="process") for n in (2, 4, 8)),
            *(System("Huey", "huey", n, pool="thread") for n in (4, 8, 16)),
        ),
    ),
)
ARQ = Family(
    "arq",
    _named("arq", [System("arq", "arq", 2, threads=10)]),
    _named("arq", (System("arq", "arq", p, threads=j) for p in (1, 2, 4) for j in (10, 50))),
)
#: RQ's default forking ``Worker`` (a work horse per job) drains no-ops at about a fifth of
#: ``SimpleWorker``'s rate (bench/results/quick, 1b6275c); quick mode, short of time, runs only
#: the faster, the full sweep both.
RQ = Family(
    "RQ",
    _named("RQ", [System("RQ", "rq", 2, pool="simple")]),
    _named(
        "RQ", (System("RQ", "rq", n, pool=pool) for pool in ("simple", "fork") for n in (2, 4, 8))
    ),
)
#: fintask on RabbitMQ (``BENCH_RABBITMQ_URL``): the same grid as fintask's on Redis.
FINTASK_RABBITMQ = Family(
    "fintask on RabbitMQ",
    dramatiq_grid("fintask on RabbitMQ", "fintask-rabbitmq", [(2, 8)], (16, 32)),
    dramatiq_grid("fintask on RabbitMQ", "fintask-rabbitmq", FULL_SHAPES, (8, 16, 32, 64)),
)
#: Every family a run compares on Redis.
REDIS_FAMILIES = (FINTASK, DRAMATIQ, CELERY, TASKIQ, HUEY, ARQ, RQ)


def families() -> tuple[Family, ...]:
    """Every family this run compares: fintask on RabbitMQ too when the run has a node
    (``--rabbitmq``, or ``BENCH_RABBITMQ_URL`` naming one), which is known once it started."""
    if os.environ.get(RABBITMQ_VARIABLE):
        return (*REDIS_FAMILIES, FINTASK_RABBITMQ)
    return REDIS_FAMILIES


#: The middleware tax's four rows: (broker, middleware) by row name, the kinds that build them.
TAX_ROWS = {
    "Dramatiq": "dramatiq",
    "Dramatiq broker + fintask stack": "redis-fintask",
    "fintask broker + Dramatiq middleware": "wakeup-dramatiq",
    "fintask": "fintask",
}
#: Processes x threads of every tax row; only the prefetch is swept, per row.
TAX_SHAPE = (2, 8)


def tax_grid(full: bool) -> dict[str, tuple[System, ...]]:
    """Each tax row's settings: the same shape, prefetch swept."""
    prefetches = (8, 16, 32, 64) if full else (16, 32)
    return {
        row: dramatiq_grid(row, kind, [TAX_SHAPE], prefetches) for row, kind in TAX_ROWS.items()
    }
