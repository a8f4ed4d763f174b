"""The batch scenario's pure parts: Celery's completion time, the fastest setting, the rate."""

from __future__ import annotations

import json
from pathlib import Path

from bench.harness import Bench
from bench.scenarios.batch import (
    FULL_MEMBERS,
    QUICK_MEMBERS,
    Outcome,
    fastest,
    latest_done,
    members_of,
)


def outcome(total_s: float, members: int = 1_000) -> Outcome:
    return Outcome(members, 0.5, total_s, 10.0, 1.0, 1.0, 100.0, 150.0, 1, members)


def test_the_latest_date_done_of_celery_results_is_read_as_utc_epoch_seconds() -> None:
    metas = [
        json.dumps({"status": "SUCCESS", "date_done": "2026-12-02T10:00:01.250000+00:00"}).encode(),
        json.dumps({"status": "SUCCESS", "date_done": "2026-12-02T10:00:00"}).encode(),
        None,
        json.dumps({"status": "PENDING"}).encode(),
    ]
    assert latest_done(metas) == 1796205601.25
    assert latest_done([None]) == 0.0


def test_the_fastest_setting_is_first_to_its_callback_and_the_rate_is_over_the_total() -> None:
    outcomes = {"prefork": outcome(15.0), "solo": outcome(9.5), "threads": outcome(11.0)}
    assert fastest(outcomes) == "solo"
    assert outcome(4.0).members_per_s == 250.0
    assert outcome(0.0).members_per_s == 0.0


def test_the_batch_size_is_the_modes_unless_given() -> None:
    def bench(full: bool, members: int | None = None) -> Bench:
        return Bench("redis://unused", full=full, repeat=0, logs=Path("."), batch_members=members)

    assert members_of(bench(False)) == QUICK_MEMBERS
    assert members_of(bench(True)) == FULL_MEMBERS
    assert members_of(bench(True, 3_000)) == 3_000
