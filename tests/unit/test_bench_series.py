"""The harness's sampled series: a probe that fails once leaves a gap, not the end of it."""

from __future__ import annotations

import math
import time

import redis

from bench.harness import TimeSeries


def test_a_probe_that_times_out_leaves_a_counted_gap_and_the_series_goes_on():
    answers = iter([1.0, redis.TimeoutError("Timeout reading from socket"), 5.0, 3.0])

    def probe() -> float:
        answer = next(answers, 2.0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    series = TimeSeries(interval_s=0.001)
    with series.sampling({"used": probe}):
        while len(series.values.get("used", [])) < 4:
            time.sleep(0.001)

    values = series.values["used"]
    assert values[0] == 1.0 and math.isnan(values[1])
    assert values[2:4] == [5.0, 3.0]
    assert series.missed == {"used": 1}
    assert series.peak("used") == 5.0
