"""Scenario 5's arithmetic: the busiest second of a run's starts, and where it lies."""

from __future__ import annotations

from bench.scenarios.rate_limit import busiest_second, busiest_second_opens


def test_the_busiest_second_counts_the_most_starts_within_any_second_and_says_when_it_opens():
    # 20/s for three seconds, nothing for two (late returns), a bunch of 30 within 0.3 s,
    # then 20/s again from a second later
    steady = [i * 0.05 for i in range(60)]
    bunch = [5.0 + i * 0.01 for i in range(30)]
    after = [6.5 + i * 0.05 for i in range(40)]
    starts = sorted(steady + bunch + after)

    assert busiest_second(starts) == 30
    assert busiest_second_opens(starts) == 5.0


def test_no_starts_have_no_busiest_second():
    assert busiest_second([]) == 0
