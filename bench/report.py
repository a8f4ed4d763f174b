"""The benchmark's report: Markdown tables of medians and ratios, verdicts, and PNG plots."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import celery
import dramatiq
import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI
import matplotlib.pyplot as plt

from app.settings import PROJECT_ROOT
from bench.harness import Medians, Sample, Scenario


@dataclass(frozen=True)
class RunInfo:
    """What a reader needs to judge and reproduce the numbers."""

    command: str
    full: bool
    repeats: int
    redis_version: str
    load_before: str
    seconds: float


def machine() -> str:
    """CPU model, cores and memory of this machine."""
    model = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, {platform.system()}"


def commit() -> str:
    """The fintask commit measured (with ``+changes`` when the work tree differs)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def _cell(runs: list[float], median: float) -> str:
    if len(runs) < 2 or min(runs) == max(runs):
        return _number(median)
    return f"{_number(median)} <sub>{_number(min(runs))}-{_number(max(runs))}</sub>"


def scenario_table(scenario: Scenario, medians: Medians) -> list[str]:
    """One row per (case, metric): each system's median (range), then the ratios."""
    systems = medians.systems()
    ratios = [(a, b) for a, b in scenario.ratios if a in systems and b in systems]
    header = ["case", "metric", *systems, *(f"{a} / {b}" for a, b in ratios)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    for case, metric in medians.rows():
        cells = [case, f"{metric} ({medians.units[(case, metric)]})"]
        for system in systems:
            median = medians.get(case, metric, system)
            runs = medians.runs.get((case, metric, system), [])
            cells.append("" if median is None else _cell(runs, median))
        for a, b in ratios:
            ratio = medians.ratio(case, metric, a, b)
            cells.append("" if ratio is None else f"{_number(ratio)}x")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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
    figure.suptitle(f"{scenario.number}. {scenario.title}", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    figure.savefig(path, dpi=90)
    plt.close(figure)


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
    figure.suptitle(f"{scenario.number}. {scenario.title}: over time", fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.97))  # room for the suptitle
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def write_report(
    scenarios: Sequence[Scenario], samples: Sequence[Sample], info: RunInfo, directory: Path
) -> str:
    """Write ``README.md`` and the plots into ``directory``; return the Markdown."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.png"):
        old.unlink()
    mode = "full (`FULL=1`)" if info.full else "quick"
    versions = (
        f"Python {platform.python_version()}, Redis {info.redis_version}, "
        f"Dramatiq {dramatiq.__version__}, Celery {celery.__version__}, fintask {commit()}"
    )
    lines = [
        "# fintask, Dramatiq and Celery side by side",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}; load average "
        f"{info.load_before} at the start. {versions}. Mode: {mode}, {info.repeats} "
        f"repetitions, the systems' order rotated each time; {info.seconds / 60:.1f} minutes.",
        "",
        f"Reproduce: `{info.command}`. Cells are medians over the repetitions, with the "
        "range below when they differ; ratios divide medians.",
        "",
    ]
    verdicts: list[str] = []
    sections: list[str] = []
    for scenario in scenarios:
        mine = [s for s in samples if s.scenario == scenario.key]
        if not mine:
            continue
        medians = Medians(mine)
        if scenario.verdicts:
            verdicts += [f"- ({scenario.number}) {line}" for line in scenario.verdicts(medians)]
        plot_scenario(scenario, medians, directory / f"{scenario.key}.png")
        sections += [
            f"## {scenario.number}. {scenario.title}",
            "",
            scenario.about,
            "",
            *scenario_table(scenario, medians),
            "",
            f"![{scenario.title}]({scenario.key}.png)",
            "",
        ]
        if plot_series(scenario, directory / f"{scenario.key}-series.png"):
            sections += [f"![{scenario.title} over time]({scenario.key}-series.png)", ""]
    if verdicts:
        lines += ["## Targets", "", *verdicts, ""]
    text = "\n".join(lines + sections)
    (directory / "README.md").write_text(text)
    # Every sample, so a report can be re-read or re-plotted without re-running the benchmark.
    (directory / "samples.json").write_text(
        json.dumps([dataclasses.asdict(sample) for sample in samples], indent=1) + "\n"
    )
    print(f"Report: {directory / 'README.md'}", file=sys.stderr)
    return text
