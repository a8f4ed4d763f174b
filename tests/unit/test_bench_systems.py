"""The benchmark's systems: settings, command lines, sweeps and the choice of each best setting.

Nothing here starts a worker: the drains themselves are exercised by ``python -m bench``.
"""

from __future__ import annotations

import json

import pytest

from bench.harness import Sample
from bench.scenarios import noop
from bench.scenarios.noop import BEST_CASE, best_systems, queue_of, sweep_case
from bench.systems import System
from bench.systems.families import TAX_ROWS, families, tax_grid
from bench.work import IO_DELAYS_MS, io_delay_ms, payload


def test_every_setting_of_every_sweep_has_a_name_and_a_queue_of_its_own() -> None:
    # Given every family's quick and full grid, and the tax's
    systems = [s for f in families() for s in (*f.quick, *f.full)]
    systems += [s for full in (False, True) for grid in tax_grid(full).values() for s in grid]

    # Then a name and queue name tell two different set-ups apart...
    by_name: dict[str, System] = {}
    for system in systems:
        assert by_name.setdefault(system.name, system) == system
    assert len({queue_of(s) for s in by_name.values()}) == len(by_name)
    # ...and Celery, whose -Q splits on commas, gets queue names without one
    assert all("," not in queue_of(s) for s in by_name.values())


def test_each_kind_starts_its_own_command_and_says_its_guarantee() -> None:
    cases = {
        System("f", "fintask", 2, 8, 16): ("dramatiq", "--processes"),
        System("c", "celery", 2, pool="solo"): ("celery", "solo"),
        System("t", "taskiq", 2, threads=100): ("taskiq", "--max-async-tasks"),
        System("h", "huey", 4, pool="process"): ("huey_consumer", "process"),
        System("a", "arq", 3, threads=10): ("arq", "--custom-log-dict"),
        System("r", "rq", 2, pool="fork"): ("rq", "rq.worker.Worker"),
    }
    for system, (program, flag) in cases.items():
        commands = system.commands("bench.apps.noop_x", ["q"])
        assert commands[0][0].endswith(program)
        assert flag in commands[0]
        assert system.guarantee() in system.describe()
    # arq runs one process per worker; Celery's solo pool one worker per process
    assert len(System("a", "arq", 3).commands("m", ["q"])) == 3
    assert len(System("c", "celery", 2, pool="solo").commands("m", ["q"])) == 2


def test_consumers_are_the_processes_that_answer_a_probe() -> None:
    assert System("c", "celery", 4).consumers == 1  # prefork: the master fetches
    assert System("h", "huey", 8, pool="thread").consumers == 1
    assert System("h", "huey", 4, pool="process").consumers == 4
    assert System("r", "rq", 3, pool="fork").consumers == 3


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        System("x", "sidekiq", 1)


def _sweep_sample(family: str, system: System, value: float) -> Sample:
    case = sweep_case(system)
    return Sample("throughput", case, "drain rate", "msg/s", family, value, system.setting())


def test_best_systems_takes_each_familys_best_median_setting_named_as_the_family() -> None:
    # Given two repetitions of every family's quick sweep, the second setting faster
    history = []
    for family in families():
        for rank, system in enumerate(family.quick):
            history += [_sweep_sample(family.name, system, 100.0 * (rank + 1) + r) for r in (0, 2)]
    history.append(Sample("throughput", BEST_CASE, "drain rate", "msg/s", "Huey", 1e9))

    # When the best settings are chosen
    best = best_systems(history)

    # Then each family's last quick setting wins, at its median rate, under the family's name
    assert [system.name for system, _ in best] == [family.name for family in families()]
    for (system, rate), family in zip(best, families(), strict=True):
        assert system.setting() == family.quick[-1].setting()
        assert rate == 100.0 * len(family.quick) + 1


def test_best_systems_needs_a_bench_to_measure_a_family_never_swept() -> None:
    with pytest.raises(RuntimeError, match="no throughput sweep"):
        best_systems([])


def test_the_tax_has_four_rows_of_one_shape() -> None:
    rows = tax_grid(False)
    assert set(rows) == set(TAX_ROWS)
    shapes = {(s.processes, s.threads) for grid in rows.values() for s in grid}
    assert shapes == {noop.TAX_SHAPE}


def test_payloads_and_delays_are_the_same_for_every_system() -> None:
    # Payloads: the size asked for, in strings fintask's guardrails accept, JSON-encodable
    for size in (1_000, 16_000):
        data = payload(size)
        assert sum(map(len, data)) == size
        assert max(map(len, data)) <= 1_000
        assert len(json.dumps(data)) < 16_384 - 300
    # Delays: 5-20 ms, every value used, the same per message number
    delays = [io_delay_ms(n) for n in range(160)]
    assert set(delays) == set(IO_DELAYS_MS)
    assert min(delays) == 5 and max(delays) == 20
    assert delays == [io_delay_ms(n) for n in range(160)]
