"""The benchmark's arithmetic: what a reader of the report trusts without re-deriving it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench import scenarios as scenario_registry
from bench.__main__ import parse_args
from bench.harness import Bench, Medians, Sample, Scenario
from bench.histograms import QUOTABLE, Cells, load
from bench.report import RunInfo, latency_table, scenario_table, write_report
from bench.scenarios import scenarios_named

INFO = RunInfo("make bench", False, 3, "7.0", "0.1 / 0.1 / 0.1", 60.0, commit="abc")


def samples(*rows: tuple[str, float]) -> list[Sample]:
    return [Sample("s", "case", "throughput", "msg/s", system, value) for system, value in rows]


def benches(tmp_path: Path, repeats: int = 3) -> list[Bench]:
    """One Bench per repetition sharing the run's cells, as ``python -m bench`` builds them."""
    cells = Cells()
    return [
        Bench("redis://unused", False, repeat, tmp_path, repeats=repeats, cells=cells)
        for repeat in range(repeats)
    ]


def test_pooled_percentiles_are_the_whole_distributions_not_a_median_of_repetitions(
    tmp_path: Path,
) -> None:
    # Given 1..30,000 us shuffled over three repetitions of very different shapes: the first
    # gets the fast third, the last the slow third
    values = [v / 1000 for v in range(1, 30_001)]
    runs = benches(tmp_path)
    thirds = (values[:10_000], values[10_000:20_000], values[20_000:])
    for bench, part in zip(runs, thirds, strict=True):
        shuffled = random.Random(bench.repeat).sample(part, len(part))
        bench.record_latencies("latency", "2 msg/s", "fintask", shuffled, setting="2 x 8")

    # When the report reads the pooled cell
    [cell] = runs[0].cells.of("latency").values()
    pooled = cell.percentiles_ms()

    # Then each percentile is the distribution's own, within HdrHistogram's 3 digits (0.1 %)
    for label, exact in (("p50", 15.0), ("p90", 27.0), ("p99", 29.7), ("p99.9", 29.97)):
        assert pooled[label] == pytest.approx(exact, rel=1e-3), label
    assert cell.count == 30_000
    assert cell.max_ms == 30.0  # exact, not rounded up to its bucket
    assert cell.settings == ["2 x 8"]


def test_a_cell_under_2000_samples_is_marked_and_one_at_2000_is_not(tmp_path: Path) -> None:
    cells = Cells()
    cells.add("latency", "2 msg/s", "thin", [1.0] * (QUOTABLE - 1), "")
    cells.add("latency", "2 msg/s", "enough", [1.0] * QUOTABLE, "")

    table = latency_table(cells.of("latency"))

    [thin] = [row for row in table if "| thin |" in row]
    [enough] = [row for row in table if "| enough |" in row]
    assert "| 1,999 (< 2,000) |" in thin
    assert "| 2,000 |" in enough
    assert any("too thin to quote" in line for line in table)


def test_the_encoded_histograms_read_back_to_the_same_cells(tmp_path: Path) -> None:
    cells = Cells()
    cells.add("latency", "open loop 50%", "Celery", [0.5, 1.25, 3.0, 40.0, 900.0], "prefork -c 2")
    cells.write(tmp_path / "histograms.json")

    [again] = load(tmp_path / "histograms.json").cells.values()

    [cell] = cells.cells.values()
    assert again.count == 5
    assert again.percentiles_ms() == cell.percentiles_ms()
    assert again.max_ms == 900.0
    assert again.settings == ["prefork -c 2"]


def test_a_latency_below_one_microsecond_or_above_an_hour_still_counts(tmp_path: Path) -> None:
    cells = Cells()
    cell = cells.add("latency", "case", "x", [-0.0001, 0.0, 4_000_000_000.0], "")
    assert cell.count == 3


def test_medians_take_the_middle_repetition_not_the_mean() -> None:
    medians = Medians(samples(("fintask", 100), ("fintask", 400), ("fintask", 110)))

    assert medians.get("case", "throughput", "fintask") == 110
    assert medians.get("case", "throughput", "Celery") is None


def test_table_divides_medians_and_shows_the_range() -> None:
    scenario = Scenario(1, "s", "title", run=lambda bench: None, about="")
    medians = Medians(
        samples(("fintask", 400), ("fintask", 500), ("fintask", 450), ("Celery", 100))
    )

    header, _, row = scenario_table(scenario, medians)

    assert header.split(" | ")[-1] == "fintask / Celery |"
    assert "450 <sub>400-500</sub>" in row
    assert row.endswith("| 4.5x |")


def test_order_rotates_so_each_system_goes_first_in_turn(tmp_path: Path) -> None:
    firsts = [
        Bench("redis://unused", False, repeat, tmp_path).order(["a", "b", "c"])[0]
        for repeat in range(3)
    ]
    assert firsts == ["a", "b", "c"]


def test_an_unknown_scenario_is_named_in_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--only", "throughput,fanuot"])
    assert "no scenario 'fanuot'" in capsys.readouterr().err


def test_a_scenario_measured_by_another_brings_that_one_along(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = Scenario(1, "runs", "runs", run=lambda bench: None, about="")
    reads = Scenario(2, "reads", "reads", run=None, about="", measured_by="runs")
    monkeypatch.setattr(scenario_registry, "SCENARIOS", (runs, reads))

    keys = [scenario.key for scenario in scenarios_named("reads")]

    assert keys == ["runs", "reads"]


def test_the_report_states_each_verdict_and_keeps_every_sample(tmp_path: Path) -> None:
    scenario = Scenario(
        1, "s", "title", run=lambda bench: None, about="what and how",
        verdicts=lambda medians: [f"fintask {medians.get('case', 'throughput', 'fintask')}"],
    )  # fmt: skip
    measured = samples(("fintask", 400), ("fintask", 500), ("Celery", 100))

    text = write_report([scenario], measured, INFO, tmp_path)

    assert "- (1) fintask 450.0" in text
    assert (tmp_path / "s.png").stat().st_size > 0
    kept = json.loads((tmp_path / "samples.json").read_text())
    assert [sample["value"] for sample in kept["samples"]] == [400, 500, 100]
    assert kept["run"]["repeats"] == 3 and kept["run"]["commit"] == "abc"


def test_verdicts_read_the_pooled_cells_and_the_report_shows_them(tmp_path: Path) -> None:
    # Given a latency scenario whose verdict reads p99 and the sample count of a cell
    scenario = Scenario(
        3, "latency", "Latency", run=lambda bench: None, about="",
        verdicts=lambda m: [f"p99 {m.get('2 msg/s', 'p99', 'fintask')} over "
                            f"{m.get('2 msg/s', 'samples', 'fintask'):.0f}"],
    )  # fmt: skip
    cells = Cells()
    cells.add("latency", "2 msg/s", "fintask", [v / 100 for v in range(1, 101)], "2 x 8")

    # When the report is written
    text = write_report([scenario], [], INFO, tmp_path, cells)

    # Then the verdict saw the pooled p99 and count, the table and the histograms are there
    assert "- (3) p99 0.99 over 100" in text
    assert "| 2 msg/s | fintask | 2 x 8 | 100 (< 2,000) |" in text
    assert (tmp_path / "latency-latency.png").stat().st_size > 0
    assert load(tmp_path / "histograms.json").cells[("latency", "2 msg/s", "fintask")].count == 100


def test_a_scratch_report_says_it_is_not_published(tmp_path: Path) -> None:
    text = write_report([], [], INFO, tmp_path / "local-quick")
    assert "**Not published**" in text and "`local-quick/`, which git ignores" in text

    published = RunInfo("make bench", True, 3, "7.0", "0", 1.0, commit="abc", published=True)
    assert "commit `abc`, a clean work tree" in write_report([], [], published, tmp_path / "q")
