"""The harness every scenario runs in: one private Redis, repetitions, samples and medians.

A scenario is a function that runs once per repetition and records samples: a value of one
metric (``throughput``, ``peak worker PSS``) of one case (``2 msg/s``, ``100,000 users``) for
one system.
Latencies are not samples of one repetition: each is pooled into its (scenario, case, system)
cell over every repetition (:mod:`bench.histograms`), and the report reads percentiles there.
Within a repetition a scenario visits its systems in the order :meth:`Bench.order` gives,
which rotates from one repetition to the next, so a slow spell of a shared machine hits every
system rather than whichever happened to run then. The report takes the median of the
repetitions and states the spread.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis

from bench.histograms import Cells
from bench.systems import System, Workers, workers

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


@dataclass(frozen=True)
class CommandLine:
    """A process the benchmark started, as ``commands.txt`` of a published run lists it."""

    scenario: str
    system: str
    setting: str
    argv: tuple[str, ...]
    #: Variables the benchmark set or changed for it, relative to its own environment.
    env: tuple[tuple[str, str], ...] = ()
    #: Variables it removed (names only: a removed value may be a secret).
    unset: tuple[str, ...] = ()


@dataclass
class Bench:
    """What a scenario gets: the private Redis, the mode, this repetition, and the recorder.

    ``cells`` and ``commands`` are the run's, shared by every scenario and repetition.
    """

    redis_url: str
    full: bool
    repeat: int
    logs: Path
    samples: list[Sample] = field(default_factory=list)
    #: Every sample the run's earlier scenarios recorded (this repetition's and earlier ones'),
    #: so a scenario can load each system at a fraction of its measured maximum.
    history: Sequence[Sample] = ()
    #: How many repetitions the run has, so a scenario can size a window to reach a pooled
    #: sample count (:data:`bench.histograms.QUOTABLE` latencies per cell in full mode).
    repeats: int = 1
    cells: Cells = field(default_factory=Cells)
    commands: list[CommandLine] = field(default_factory=list)
    #: ``--batch-members``: the batch scenario's size instead of its mode's (a smoke run).
    batch_members: int | None = None

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
        # Only characters every file system and checkout accepts: system names carry ", < ( /".
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{scenario}-{system}").strip("_")
        return self.logs / f"{name}.log"

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

    def record_latencies(
        self,
        scenario: str,
        case: str,
        system: str,
        latencies_ms: Iterable[float],
        *,
        setting: str = "",
    ) -> None:
        """Pool send-to-start latencies (ms) into their cell, over every repetition."""
        values = list(latencies_ms)
        cell = self.cells.add(scenario, case, system, values, setting)
        pooled = cell.percentiles_ms()
        print(
            f"    {scenario} | {case} | {system}: {len(values):,} latencies "
            f"({cell.count:,} pooled: p50 {pooled['p50']:.3g} ms, p99 {pooled['p99']:.3g} ms)",
            file=sys.stderr,
        )

    def note_command(
        self,
        scenario: str,
        system: str,
        argv: Sequence[str],
        *,
        setting: str = "",
        env: Mapping[str, str] | None = None,
    ) -> None:
        """Keep a command line the run started, once however many repetitions start it (the
        first one's environment: scratch paths and ports change from one start to the next).

        ``env`` is the process's full environment; only what differs from the benchmark's own
        is kept. :meth:`workers` notes its workers itself; a scenario that starts another
        process (a producer in a separate virtualenv) calls this.
        """
        key = (scenario, system, setting, tuple(argv))
        if any((c.scenario, c.system, c.setting, c.argv) == key for c in self.commands):
            return
        changed, unset = _environment_changes(env) if env is not None else ((), ())
        self.commands.append(CommandLine(*key, changed, unset))

    @contextmanager
    def workers(
        self,
        scenario: str,
        system: System,
        module: str,
        queues: Sequence[str],
        **options: Any,
    ) -> Iterator[Workers]:
        """:func:`bench.systems.workers` on this run's Redis and log directory, with every
        command line noted for a published run's ``commands.txt``."""
        with workers(
            system,
            module,
            queues,
            redis_url=self.redis_url,
            log_path=self.log_path(scenario, system.name),
            **options,
        ) as started:
            for process, argv in zip(started.processes, started.command_lines, strict=True):
                env = None
                with suppress(psutil.Error):
                    env = psutil.Process(process.pid).environ()
                self.note_command(scenario, system.name, argv, setting=system.describe(), env=env)
            yield started


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of ``pids`` and their live children so far."""
    total = 0.0
    for pid in pids:
        parent = psutil.Process(pid)
        for member in [parent, *parent.children(recursive=True)]:
            times = member.cpu_times()
            total += times.user + times.system
    return total


def _environment_changes(
    env: Mapping[str, str],
) -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """What ``env`` sets differently from this process's environment, and what it lacks."""
    changed = tuple(sorted((k, v) for k, v in env.items() if os.environ.get(k) != v))
    unset = tuple(sorted(k for k in os.environ if k not in env))
    return changed, unset


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
    queries per second. The peak of each probe is its maximum sample. A probe that fails (a
    Redis busy past the client's timeout with a system's big command) leaves a gap, NaN,
    counted in ``missed``: one late answer must not end the series for the rest of the run.
    """

    interval_s: float = 0.2
    times: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)

    def peak(self, name: str) -> float:
        """The largest sample of probe ``name`` (0 when never sampled), gaps left out."""
        return max((v for v in self.values.get(name, []) if not math.isnan(v)), default=0.0)

    @contextmanager
    def sampling(self, probes: dict[str, Callable[[], float]]) -> Iterator[TimeSeries]:
        """Sample ``probes`` in a thread until the block ends (and once more at its end)."""
        stop = threading.Event()
        started = time.monotonic()

        def sample() -> None:
            self.times.append(time.monotonic() - started)
            for name, probe in probes.items():
                try:
                    value = float(probe())
                except Exception as error:
                    value = math.nan
                    self.missed[name] = self.missed.get(name, 0) + 1
                    if self.missed[name] == 1:
                        print(f"    (probe {name!r} missed a sample: {error!r})", file=sys.stderr)
                self.values.setdefault(name, []).append(value)

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
