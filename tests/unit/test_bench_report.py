"""The benchmark's arithmetic: what a reader of the report trusts without re-deriving it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import parse_args
from bench.harness import Bench, Medians, Sample, Scenario
from bench.report import RunInfo, scenario_table, write_report
from bench.scenarios import scenarios_named
from bench.scenarios.noop import percentile


def samples(*rows: tuple[str, float]) -> list[Sample]:
    return [Sample("s", "case", "throughput", "msg/s", system, value) for system, value in rows]


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7


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


def test_a_scenario_measured_by_another_brings_that_one_along() -> None:
    keys = [scenario.key for scenario in scenarios_named("middleware_tax")]
    assert keys == ["throughput", "middleware_tax"]


def test_the_report_states_each_verdict_and_keeps_every_sample(tmp_path: Path) -> None:
    scenario = Scenario(
        1, "s", "title", run=lambda bench: None, about="what and how",
        verdicts=lambda medians: [f"fintask {medians.get('case', 'throughput', 'fintask')}"],
    )  # fmt: skip
    measured = samples(("fintask", 400), ("fintask", 500), ("Celery", 100))
    info = RunInfo("make bench", False, 2, "7.0", "0.1 / 0.1 / 0.1", 60.0)

    text = write_report([scenario], measured, info, tmp_path)

    assert "- (1) fintask 450.0" in text
    assert (tmp_path / "s.png").stat().st_size > 0
    kept = json.loads((tmp_path / "samples.json").read_text())
    assert [sample["value"] for sample in kept] == [400, 500, 100]
