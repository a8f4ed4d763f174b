"""The benchmark's scenarios, in the order of the report."""

from __future__ import annotations

from bench.harness import Scenario
from bench.scenarios import (
    batch,
    countdown,
    enqueue,
    fanout,
    latency,
    noop,
    priority,
    rate_limit,
    work,
)

SCENARIOS: tuple[Scenario, ...] = (
    noop.THROUGHPUT,
    enqueue.SCENARIO,
    latency.SCENARIO,
    fanout.SCENARIO,
    rate_limit.SCENARIO,
    priority.SCENARIO,
    countdown.SCENARIO,
    noop.MIDDLEWARE_TAX,
    work.SCENARIO,
    batch.SCENARIO,
)


def scenarios_named(keys: str) -> list[Scenario]:
    """The scenarios with these comma-separated keys (all default ones when empty)."""
    if not keys.strip():
        return list(SCENARIOS)
    known = {scenario.key: scenario for scenario in SCENARIOS}
    chosen: dict[str, Scenario] = {}
    for key in (k.strip() for k in keys.split(",") if k.strip()):
        if key not in known:
            raise KeyError(f"no scenario {key!r}; known: {', '.join(known)}")
        scenario = known[key]
        if scenario.measured_by:
            chosen.setdefault(scenario.measured_by, known[scenario.measured_by])
        chosen[key] = scenario
    return list(chosen.values())
