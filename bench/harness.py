"""The harness every scenario runs in: one private Redis, repetitions, samples and medians.

A scenario is a function that runs once per repetition and records samples: a value of one
metric (``throughput``, ``p99``) of one case (``2 msg/s``, ``100,000 users``) for one system.
Within a repetition a scenario visits its systems in the order :meth:`Bench.order` gives,
which rotates from one repetition to the next, so a slow spell of a shared machine hits every
system rather than whichever happened to run then. The report takes the median of the
repetitions and states the spread.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import redis

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One measured value; ``higher_is_better`` orders the systems in the verdicts."""

    scenario: str
    case: str
    metric: str
    unit: str
    system: str
    value: float
    #: The tuned knobs behind ``system``'s value (its best setting in a sweep), when named.
    setting: str = ""


@dataclass
class Bench:
    """What a scenario gets: the private Redis, the mode, this repetition, and the recorder."""

    redis_url: str
    full: bool
    repeat: int
    logs: Path
    samples: list[Sample] = field(default_factory=list)
    #: Every sample the run's earlier scenarios recorded (this repetition's and earlier ones'),
    #: so a scenario can load each system at a fraction of its measured maximum.
    history: Sequence[Sample] = ()

    def client(self) -> redis.Redis:
        """A new client of the benchmark's own Redis (the caller closes it)."""
        return redis.Redis.from_url(self.redis_url)

    def order(self, items: Sequence[T]) -> list[T]:
        """``items`` rotated by the repetition number: each goes first in turn."""
        shift = self.repeat % len(items) if items else 0
        return [*items[shift:], *items[:shift]]

    def flush(self) -> None:
        """Empty the benchmark's Redis (its own server, started by the harness) between runs."""
        with self.client() as client:
            client.flushall()

    def log_path(self, scenario: str, system: str) -> Path:
        """Where a scenario's worker output for ``system`` goes (kept on failure)."""
        return self.logs / f"{scenario}-{system.replace(' ', '_').replace('/', '_')}.log"

    def record(
        self,
        scenario: str,
        case: str,
        metric: str,
        unit: str,
        system: str,
        value: float,
        *,
        setting: str = "",
    ) -> None:
        """Keep one measured value, and say it on stderr so a long run shows its progress."""
        self.samples.append(Sample(scenario, case, metric, unit, system, value, setting))
        named = f" [{setting}]" if setting else ""
        print(
            f"    {scenario} | {case} | {system}{named}: {metric} {value:,.4g} {unit}",
            file=sys.stderr,
        )


@dataclass(frozen=True)
class Scenario:
    """A numbered scenario of the report.

    ``ratios`` lists (numerator, denominator) system pairs the table divides; ``verdicts``
    turns the medians into lines that state each target and whether it was met; ``measured_by``
    names the scenario whose runs record this one's samples, when it has no ``run`` of its own.
    """

    number: int
    key: str
    title: str
    #: None for a scenario whose samples another one records in the same runs.
    run: Callable[[Bench], None] | None
    about: str
    ratios: tuple[tuple[str, str], ...] = (("fintask", "Celery"), ("fintask", "Dramatiq"))
    verdicts: Callable[[Medians], list[str]] | None = None
    #: Time series worth a line plot (queue depth over time...), by label, after the runs.
    series: Callable[[], dict[str, TimeSeries]] | None = None
    measured_by: str | None = None


class Medians:
    """The median over repetitions of every (case, metric, system) of one scenario."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        grouped: dict[tuple[str, str, str], list[float]] = {}
        self.units: dict[tuple[str, str], str] = {}
        for sample in samples:
            grouped.setdefault((sample.case, sample.metric, sample.system), []).append(sample.value)
            self.units[(sample.case, sample.metric)] = sample.unit
        self.runs = grouped
        self.values = {key: statistics.median(values) for key, values in grouped.items()}

    def get(self, case: str, metric: str, system: str) -> float | None:
        """The median, or None when that combination was not measured."""
        return self.values.get((case, metric, system))

    def ratio(self, case: str, metric: str, top: str, bottom: str) -> float | None:
        """``top``'s median over ``bottom``'s; None unless both were measured and are positive
        (a ratio of an error or a zero count says nothing)."""
        a, b = self.get(case, metric, top), self.get(case, metric, bottom)
        return a / b if a is not None and b is not None and a > 0 and b > 0 else None

    def rows(self) -> list[tuple[str, str]]:
        """(case, metric) pairs in the order they were first measured."""
        return list(dict.fromkeys((case, metric) for case, metric, _ in self.runs))

    def systems(self) -> list[str]:
        """The systems measured, in the order they were first measured."""
        return list(dict.fromkeys(system for _, _, system in self.runs))


@dataclass
class TimeSeries:
    """Values of named probes sampled every ``interval_s`` while a block runs.

    Used for what only a series shows: a queue's depth over time, Redis memory, database
    queries per second. The peak of each probe is its maximum sample.
    """

    interval_s: float = 0.2
    times: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)

    def peak(self, name: str) -> float:
        """The largest sample of probe ``name`` (0 when never sampled)."""
        return max(self.values.get(name, [0.0]), default=0.0)

    @contextmanager
    def sampling(self, probes: dict[str, Callable[[], float]]) -> Iterator[TimeSeries]:
        """Sample ``probes`` in a thread until the block ends (and once more at its end)."""
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            self.times.append(time.monotonic() - started)
            for name, probe in probes.items():
                self.values.setdefault(name, []).append(float(probe()))

        def loop() -> None:
            while not stop.wait(self.interval_s):
                sample()

        sample()
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()
            sample()
