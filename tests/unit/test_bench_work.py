"""Real work (scenario 9): which settings each family is tried at, and which one wins a case.

Nothing here starts a worker: the runs themselves are exercised by ``python -m bench``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bench.harness import Bench, Medians, Sample, Scenario
from bench.report import case_settings, scenario_table
from bench.scenarios.noop import Cost
from bench.scenarios.work import CASES, best_run, record_best, sweep_case, tried_settings
from bench.systems import System
from bench.systems.families import CELERY, FINTASK, HUEY, RQ

IO = "I/O 5-20 ms, 1 kB payload"


def test_slots_count_threads_only_where_a_process_runs_several_tasks() -> None:
    assert System("f", "fintask", 2, 8).slots == 16
    assert System("t", "taskiq", 2, threads=100).slots == 200
    assert System("a", "arq", 2, threads=10).slots == 20
    assert System("c", "celery", 2, threads=8, pool="threads").slots == 16
    # a process pool's children, Huey's workers and RQ's run one task each, whatever `threads`
    assert System("c", "celery", 4).slots == 4
    assert System("c", "celery", 2, pool="solo").slots == 2
    assert System("h", "huey", 2, pool="process").slots == 2
    assert System("h", "huey", 8, pool="thread").slots == 8
    assert System("r", "rq", 4, pool="fork").slots == 4


def _as_best(family_name: str, system: System) -> System:
    """A setting as :func:`bench.scenarios.noop.best_systems` returns it: named as its family."""
    return replace(system, name=family_name)


def test_a_family_is_tried_at_its_best_and_at_every_setting_running_more_at_once() -> None:
    # Given Huey's quick best no-op setting, 2 processes
    best = _as_best("Huey", HUEY.quick[0])

    # When the settings to try are chosen
    tried = tried_settings(best, HUEY.quick)

    # Then the best comes first, under its own name, and 8 threads joins it
    assert [system.name for system in tried] == ["Huey 2 processes", "Huey 8 threads"]


def test_a_setting_running_as_many_at_once_as_the_best_is_not_tried() -> None:
    # fintask's two quick settings differ by prefetch only; Celery's prefork runs 2, not 16
    assert tried_settings(_as_best("fintask", FINTASK.quick[1]), FINTASK.quick) == [
        FINTASK.quick[1]
    ]
    assert tried_settings(_as_best("Celery", CELERY.quick[1]), CELERY.quick) == [CELERY.quick[1]]
    # In the full grid, Huey at 4 processes: 8 processes, 8 and 16 threads, not 4 threads
    four = next(s for s in HUEY.full if s.setting() == "4 processes")
    names = [s.name for s in tried_settings(_as_best("Huey", four), HUEY.full)]
    assert names == ["Huey 4 processes", "Huey 8 processes", "Huey 8 threads", "Huey 16 threads"]


def test_a_best_setting_outside_the_grid_is_tried_as_it_is() -> None:
    # Given a default measured on the spot, named as its family, not among the grid's settings
    default = System("RQ", "rq", 3, pool="simple")

    # Then it is tried under that name, with the grid's settings that run more at once
    assert [s.name for s in tried_settings(default, RQ.full)] == [
        "RQ",
        "RQ worker-pool -n 4, SimpleWorker",
        "RQ worker-pool -n 8, SimpleWorker",
        "RQ worker-pool -n 4, forking Worker",
        "RQ worker-pool -n 8, forking Worker",
    ]


def test_the_best_run_is_the_fastest_and_a_tie_goes_to_the_no_op_best() -> None:
    processes, threads = HUEY.quick
    assert best_run(HUEY.quick, {processes.name: 120.0, threads.name: 560.0}) == threads
    assert best_run(HUEY.quick, {processes.name: 300.0, threads.name: 300.0}) == processes


def test_each_tried_setting_has_a_sweep_case_of_its_own_per_case() -> None:
    cases = {sweep_case(case, system) for case in CASES for system in HUEY.quick}
    assert len(cases) == len(CASES) * len(HUEY.quick)
    # fintask and Dramatiq at the same knobs share a row
    dramatiq = System("Dramatiq 2 x 8", "dramatiq", 2, 8, 32)
    assert sweep_case(CASES[0], FINTASK.quick[1]) == sweep_case(CASES[0], dramatiq)


def _cost(worker_cpu_ms: float) -> Cost:
    return Cost(worker_cpu_ms=worker_cpu_ms, redis_cpu_us=100, redis_commands=3, peak_pss_mb=80)


def test_each_case_records_the_familys_winner_with_its_setting_and_its_own_costs(
    tmp_path: Path,
) -> None:
    # Given Huey's two settings: 2 processes faster at every case but I/O, 8 threads at I/O
    processes, threads = HUEY.quick
    outcomes = {
        processes.name: {case.label: (900.0, _cost(0.6)) for case in CASES},
        threads.name: {case.label: (400.0, _cost(1.5)) for case in CASES},
    }
    outcomes[processes.name][IO] = (125.0, _cost(1.8))
    outcomes[threads.name][IO] = (480.0, _cost(2.5))
    bench = Bench("redis://unused", False, 0, tmp_path)

    # When the bests are recorded
    record_best(bench, {"Huey": HUEY.quick}, outcomes)

    # Then each case has Huey at its winner, named, with that same run's costs
    recorded = {(s.case, s.metric): s for s in bench.samples}
    assert {s.system for s in bench.samples} == {"Huey"}
    assert recorded[(IO, "throughput")].value == 480.0
    assert recorded[(IO, "worker CPU per message")].value == 2.5
    assert {recorded[(IO, m)].setting for m in ("throughput", "peak worker PSS")} == {"8 threads"}
    no_op = CASES[0].label
    assert recorded[(no_op, "throughput")].value == 900.0
    assert recorded[(no_op, "worker CPU per message")].setting == "2 processes"
    # ...and the report names each case's setting
    settings = case_settings(bench.samples)
    assert settings[(IO, "Huey")] == ["8 threads"]
    assert settings[(no_op, "Huey")] == ["2 processes"]


def test_the_table_names_each_systems_setting_above_a_cases_rows() -> None:
    # Given Huey's I/O winner differing between two repetitions, and a sweep row
    scenario = Scenario(9, "work", "title", run=lambda bench: None, about="")
    rows = [
        Sample("work", IO, "throughput", "msg/s", "Huey", 480.0, "8 threads"),
        Sample("work", IO, "throughput", "msg/s", "Huey", 130.0, "2 processes"),
        Sample("work", IO, "throughput", "msg/s", "fintask", 600.0, "2 x 8 threads"),
        Sample("work", "sweep: at 8 threads", "throughput", "msg/s", "Huey", 480.0, "8 threads"),
    ]

    # When the table is drawn
    _, _, setting, values, sweep = scenario_table(scenario, Medians(rows), case_settings(rows))

    # Then one setting row names both repetitions' winners; a sweep's case already names its own
    assert setting.startswith(f"| {IO} | setting | 8 threads; 2 processes | 2 x 8 threads |")
    assert "| throughput (msg/s) |" in values
    assert sweep.startswith("| sweep: at 8 threads | throughput")
