"""The benchmark's report: Markdown tables of medians, ratios and pooled latency percentiles,
verdicts, and PNG plots, with the run's samples and histograms beside them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from bench.harness import Medians, Sample, Scenario
from bench.histograms import PERCENTILES, QUOTABLE, Cell, Cells
from bench.publish import cpu_model

#: The distributions whose versions the header names (arq's is in ``freeze.txt``: it has a
#: virtualenv of its own).
MEASURED = ("dramatiq", "celery", "taskiq", "taskiq-redis", "huey", "rq", "redis", "hdrhistogram")


@dataclass(frozen=True)
class RunInfo:
    """What a reader needs to judge and reproduce the numbers."""

    command: str
    full: bool
    repeats: int
    redis_version: str
    load_before: str
    seconds: float
    #: The commit measured, ``+changes`` when the work tree differed from it.
    commit: str = "unknown"
    #: Written by ``--publish`` (into ``bench/results/<name>/``), or a scratch run.
    published: bool = False
    load_after: str = ""


def machine() -> str:
    """CPU model, cores and memory of this machine (``machine.txt`` has the rest)."""
    model = cpu_model()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()}"


def versions() -> str:
    """Python, and each measured distribution installed here."""
    found = [f"Python {platform.python_version()}"]
    for name in MEASURED:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def _cell(runs: list[float], median: float) -> str:
    if len(runs) < 2 or min(runs) == max(runs):
        return _number(median)
    return f"{_number(median)} <sub>{_number(min(runs))}-{_number(max(runs))}</sub>"


def case_settings(samples: Sequence[Sample]) -> dict[tuple[str, str], list[str]]:
    """Each (case, system)'s settings over the repetitions, in the order first recorded, where
    the case's name does not already say them (a sweep's case names its setting)."""
    settings: dict[tuple[str, str], list[str]] = {}
    for sample in samples:
        if sample.setting and sample.setting not in sample.case:
            found = settings.setdefault((sample.case, sample.system), [])
            if sample.setting not in found:
                found.append(sample.setting)
    return settings


def scenario_table(
    scenario: Scenario,
    medians: Medians,
    settings: dict[tuple[str, str], list[str]] | None = None,
) -> list[str]:
    """One row per (case, metric): each system's median (range), then the ratios; above a
    case's first row, a ``setting`` row when ``settings`` (:func:`case_settings`) names any."""
    systems = medians.systems()
    settings = settings or {}
    ratios = [(a, b) for a, b in scenario.ratios if a in systems and b in systems]
    header = ["case", "metric", *systems, *(f"{a} / {b}" for a, b in ratios)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    named: set[str] = set()
    for case, metric in medians.rows():
        if case not in named and any((case, system) in settings for system in systems):
            named.add(case)
            cells = [case, "setting"]
            cells += ["; ".join(settings.get((case, system), [])) for system in systems]
            lines.append("| " + " | ".join(cells + [""] * len(ratios)) + " |")
        unit = medians.units[(case, metric)]
        cells = [case, f"{metric} ({unit})" if unit else metric]
        for system in systems:
            median = medians.get(case, metric, system)
            runs = medians.runs.get((case, metric, system), [])
            cells.append("" if median is None else _cell(runs, median))
        for a, b in ratios:
            ratio = medians.ratio(case, metric, a, b)
            cells.append("" if ratio is None else f"{_number(ratio)}x")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def save_figure(figure: Figure, title: str, path: Path, *, top: float = 0.97) -> None:
    """Title ``figure``, lay it out below the title (``top``: the share of the height left to
    the panels), write it to ``path`` and free it."""
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, top))
    figure.savefig(path, dpi=90)
    plt.close(figure)


def plot_scenario(scenario: Scenario, medians: Medians, path: Path) -> None:
    """Bars of each system's median per (case, metric), whiskers from min to max."""
    rows = medians.rows()
    columns = min(3, len(rows))
    lines = -(-len(rows) // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.2 * lines), squeeze=False)
    for ax, (case, metric) in zip(axes.flat, rows, strict=False):
        systems = [s for s in medians.systems() if medians.get(case, metric, s) is not None]
        values = [medians.get(case, metric, s) or 0.0 for s in systems]
        runs = [medians.runs[(case, metric, s)] for s in systems]
        low = [v - min(r) for v, r in zip(values, runs, strict=True)]
        high = [max(r) - v for v, r in zip(values, runs, strict=True)]
        bars = ax.bar(range(len(systems)), values, yerr=[low, high], capsize=3, color="#4c72b0")
        ax.bar_label(bars, labels=[_number(v) for v in values], fontsize=7)
        positive = [v for v in values if v > 0]
        if positive and max(positive) > 30 * min(positive):
            ax.set_yscale("log")  # a 1 ms bar next to a 500 ms one must still show
        ax.set_xticks(range(len(systems)), systems, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"{case}: {metric}", fontsize=9)
        ax.set_ylabel(medians.units[(case, metric)], fontsize=8)
    for ax in list(axes.flat)[len(rows) :]:
        ax.set_visible(False)
    save_figure(figure, f"{scenario.number}. {scenario.title}", path)


def plot_series(scenario: Scenario, path: Path) -> bool:
    """Line plots of the scenario's time series, one panel per probe; False if it has none."""
    series = scenario.series() if scenario.series else {}
    probes = list(dict.fromkeys(name for s in series.values() for name in s.values))
    if not probes:
        return False
    figure, axes = plt.subplots(len(probes), 1, figsize=(9, 2.8 * len(probes)), squeeze=False)
    for ax, probe in zip(axes.flat, probes, strict=True):
        for label, timeline in series.items():
            if probe in timeline.values:
                ax.plot(timeline.times, timeline.values[probe], label=label, linewidth=1.2)
        ax.set_title(probe, fontsize=9)
        ax.set_xlabel("seconds", fontsize=8)
        ax.legend(fontsize=7)
    save_figure(figure, f"{scenario.number}. {scenario.title}: over time", path)
    return True


def pooled_samples(scenario: str, cells: dict[tuple[str, str], Cell]) -> list[Sample]:
    """A scenario's latency cells as samples (one value each: pooled, not a median), so its
    verdicts read ``p99`` and ``samples`` of a cell as they read any metric."""
    pooled = []
    for (case, system), cell in cells.items():
        setting = "; ".join(cell.settings)
        values = {**cell.percentiles_ms(), "max": cell.max_ms}
        pooled += [Sample(scenario, case, k, "ms", system, v, setting) for k, v in values.items()]
        pooled.append(Sample(scenario, case, "samples", "", system, cell.count, setting))
    return pooled


def samples_cell(count: int) -> str:
    """A cell's sample count, marked when it is too thin to quote its upper percentiles."""
    return f"{count:,}" if count >= QUOTABLE else f"{count:,} (< {QUOTABLE:,})"


def latency_table(cells: dict[tuple[str, str], Cell]) -> list[str]:
    """One row per (case, system): the setting, the pooled count, percentiles, and the max."""
    labels = [label for label, _ in PERCENTILES]
    header = ["case", "system", "setting", "samples", *(f"{label} (ms)" for label in labels)]
    lines = [
        "| " + " | ".join([*header, "max (ms)"]) + " |",
        "|---|---|---|" + "---:|" * (len(header) - 2),
    ]
    for (case, system), cell in cells.items():
        values = cell.percentiles_ms()
        row = [case, system, "; ".join(cell.settings), samples_cell(cell.count)]
        row += [_number(values[label]) for label in labels] + [_number(cell.max_ms)]
        lines.append("| " + " | ".join(row) + " |")
    if any(not cell.quotable for cell in cells.values()):
        lines += [
            "",
            f"A count marked (< {QUOTABLE:,}) is too thin to quote: its p99.9 and even its p99 "
            "are among its last few values. Full mode sizes every window to reach "
            f"{QUOTABLE:,} per cell over the repetitions.",
        ]
    return lines


def plot_cells(scenario: Scenario, cells: dict[tuple[str, str], Cell], path: Path) -> None:
    """p50 and p99 of every system per case (log scale), one line per system."""
    cases = list(dict.fromkeys(case for case, _ in cells))
    systems = list(dict.fromkeys(system for _, system in cells))
    figure, axes = plt.subplots(1, 2, figsize=(12, 3.8), squeeze=False)
    for ax, label in zip(axes.flat, ("p50", "p99"), strict=True):
        for system in systems:
            points = [
                (i, cells[(case, system)].percentiles_ms()[label])
                for i, case in enumerate(cases)
                if (case, system) in cells and cells[(case, system)].count
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", linewidth=1.2, label=system)
        ax.set_yscale("log")
        ax.set_xticks(range(len(cases)), cases, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"{label}, pooled over the repetitions", fontsize=9)
        ax.set_ylabel("ms", fontsize=8)
        ax.legend(fontsize=7)
    save_figure(figure, f"{scenario.number}. {scenario.title}: percentiles", path, top=0.95)


def header(info: RunInfo, directory: Path) -> list[str]:
    """Where, when, on what, from which commit, and how to read the cells."""
    mode = "full (`FULL=1`)" if info.full else "quick"
    if info.published:
        origin = f"Published (`--publish`) from commit `{info.commit}`" + (
            ", **with uncommitted changes** (`--allow-dirty`; `changes.diff` has them)."
            if info.commit.endswith("+changes")
            else ", a clean work tree."
        )
    else:
        origin = (
            f"**Not published**: a scratch run of `{info.commit}`, written to "
            f"`{directory.name}/`, which git ignores. `--publish` (from a clean commit) writes "
            "the report that may be quoted."
        )
    after = f", {info.load_after} at the end" if info.load_after else ""
    return [
        "# fintask and the Python task queues, side by side",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}; load average "
        f"(1 / 5 / 15 min) {info.load_before} at the start{after}. {versions()}, "
        f"Redis {info.redis_version}. Mode: {mode}, {info.repeats} repetitions, the systems' "
        f"order rotated each time; {info.seconds / 60:.1f} minutes.",
        "",
        origin,
        "",
        f"Reproduce: `{info.command}`.",
        "",
        "How to read it: a table cell is the median over the repetitions of one measured value, "
        "with the range (lowest-highest repetition) below it when they differ; a ratio divides "
        "two medians. A `setting` row above a case's values names the tuned knobs behind each "
        "system's (every repetition's, when they differ). "
        "Latency tables are not medians: every send-to-start latency of a (case, system) is "
        "pooled over the repetitions into one HdrHistogram (microseconds, 3 significant "
        "digits), and p50 / p90 / p99 / p99.9 are read from it, with the exact maximum apart "
        "and the sample count beside them. Beside this file: `samples.json` (every value), "
        "`histograms.json` (every latency cell, encoded), `commands.txt`, `logs/`, "
        "`freeze.txt`, `redis-info.txt` and `machine.txt`.",
        "",
    ]


def write_report(
    scenarios: Sequence[Scenario],
    samples: Sequence[Sample],
    info: RunInfo,
    directory: Path,
    cells: Cells | None = None,
) -> str:
    """Write ``README.md``, the plots, ``samples.json`` and ``histograms.json`` into
    ``directory``; return the Markdown."""
    cells = cells or Cells()
    directory.mkdir(parents=True, exist_ok=True)
    verdicts: list[str] = []
    sections: list[str] = []
    for scenario in scenarios:
        mine = [s for s in samples if s.scenario == scenario.key]
        latencies = cells.of(scenario.key)
        if not mine and not latencies:
            continue
        sections += [f"## {scenario.number}. {scenario.title}", "", scenario.about, ""]
        if scenario.verdicts:
            medians = Medians([*mine, *pooled_samples(scenario.key, latencies)])
            verdicts += [f"- ({scenario.number}) {line}" for line in scenario.verdicts(medians)]
        if latencies:
            plot_cells(scenario, latencies, directory / f"{scenario.key}-latency.png")
            sections += [
                *latency_table(latencies),
                "",
                f"![{scenario.title}: percentiles]({scenario.key}-latency.png)",
                "",
            ]
        if mine:
            medians = Medians(mine)
            plot_scenario(scenario, medians, directory / f"{scenario.key}.png")
            sections += [
                *scenario_table(scenario, medians, case_settings(mine)),
                "",
                f"![{scenario.title}]({scenario.key}.png)",
                "",
            ]
        if plot_series(scenario, directory / f"{scenario.key}-series.png"):
            sections += [f"![{scenario.title} over time]({scenario.key}-series.png)", ""]
    lines = header(info, directory)
    if verdicts:
        lines += ["## Targets", "", *verdicts, ""]
    text = "\n".join(lines + sections)
    (directory / "README.md").write_text(text)
    # Every sample, so a report can be re-read or re-plotted without re-running the benchmark.
    kept = {
        "run": dataclasses.asdict(info),
        "samples": [dataclasses.asdict(sample) for sample in samples],
    }
    (directory / "samples.json").write_text(json.dumps(kept, indent=1) + "\n")
    cells.write(directory / "histograms.json")
    print(f"Report: {directory / 'README.md'}", file=sys.stderr)
    return text
