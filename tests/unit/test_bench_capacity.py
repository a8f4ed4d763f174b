"""The capacity probe's arithmetic: INFO deltas per message, the harness left out, the model."""

from __future__ import annotations

import pytest

from bench.capacity import (
    Counters,
    Headroom,
    combined,
    parse_benchmark_csv,
    parse_counters,
    per_message,
    project,
    render,
)


def counters(calls: dict[str, int], *, reads: int, cpu_s: float, memory: int = 0) -> Counters:
    return Counters(calls, reads, cpu_s, memory, net_in=reads * 100, net_out=reads * 10)


def test_info_is_read_into_counters() -> None:
    info = {
        "cmdstat_evalsha": {"calls": 3, "usec": 10},
        "cmdstat_config|resetstat": {"calls": 1, "usec": 1},
        "total_reads_processed": 7,
        "used_cpu_sys": 0.5,
        "used_cpu_user": 0.25,
        "used_memory": 1024,
        "total_net_input_bytes": 300,
        "total_net_output_bytes": 40,
    }
    parsed = parse_counters(info)
    assert parsed.calls == {"evalsha": 3, "config|resetstat": 1}
    assert (parsed.reads, parsed.cpu_s, parsed.used_memory) == (7, 0.75, 1024)


def test_the_harness_is_left_out_of_every_count() -> None:
    before = counters({"evalsha": 10, "info": 4}, reads=20, cpu_s=1.0, memory=1000)
    after = counters(
        {"evalsha": 110, "rpush": 150, "llen": 7, "info": 9, "config|resetstat": 2},
        reads=20 + 100 + 50 + 7 + 1,  # sends, records, polls, the snapshot's own INFO
        cpu_s=1.02,
        memory=46_000,
    )
    cost = per_message(before, after, 50, harness={"rpush": 50, "llen": 7}, memory=True)
    assert cost.by_command == {"evalsha": 2.0, "rpush": 2.0}
    assert cost.commands == 4.0
    assert cost.round_trips == 2.0
    assert cost.cpu_us == pytest.approx(400.0)
    assert cost.memory_bytes == 900.0


def test_a_phase_needs_messages() -> None:
    same = counters({}, reads=1, cpu_s=0.0)
    with pytest.raises(ValueError):
        per_message(same, same, 0)


def test_send_and_drain_add_up_and_keep_the_memory_of_the_send() -> None:
    start = counters({}, reads=0, cpu_s=0.0, memory=0)
    send = per_message(
        start, counters({"evalsha": 10}, reads=11, cpu_s=0.001, memory=4000), 10, memory=True
    )
    drain = per_message(start, counters({"evalsha": 20, "lpop": 10}, reads=21, cpu_s=0.002), 10)
    both = combined(send, drain)
    assert both.by_command == {"evalsha": 3.0, "lpop": 1.0}
    assert (both.round_trips, both.memory_bytes) == (3.0, 400.0)
    assert both.cpu_us == pytest.approx(300.0)


def test_the_model_scales_a_day_to_its_average_and_its_busiest_hour() -> None:
    start = counters({}, reads=0, cpu_s=0.0, memory=0)
    cost = per_message(
        start, counters({"evalsha": 15}, reads=3, cpu_s=0.0003, memory=500), 1, memory=True
    )
    average = project(86_400_000, cost, peak=False, peak_factor=10)
    busiest = project(86_400_000, cost, peak=True, peak_factor=10)
    assert average.rate == 1000.0 and busiest.rate == 10_000.0
    assert average.commands_per_s == 15_000.0
    assert busiest.round_trips_per_s == 20_000.0  # 3 reads, less the snapshot's own
    assert busiest.redis_cores == pytest.approx(3.0)
    assert busiest.hour_backlog_gib == pytest.approx(10_000 * 3600 * 500 / 2**30)


def test_redis_benchmark_csv_is_parsed() -> None:
    text = (
        '"test","rps","avg_latency_ms"\n"RPUSH","25582.00","0.6"\n'
        '"evalsha abc 1 dramatiq","13301.50","1.1"\n'
    )
    assert parse_benchmark_csv(text) == [("RPUSH", 25582.0), ("evalsha abc 1 dramatiq", 13301.5)]


def test_the_report_names_each_phase_and_the_headroom() -> None:
    start = counters({}, reads=0, cpu_s=0.0)
    cost = per_message(start, counters({"evalsha": 2}, reads=3, cpu_s=0.0002), 2, memory=True)
    text = render(
        {"fintask": {"send: no-op": cost}},
        {"fintask": cost},
        [Headroom("rpush", 16, 25_000.0, 80_000.0, 80_000.0)],
        [project(10**7, cost, peak=True, peak_factor=10)],
        ["# Capacity probe"],
    )
    assert "| send: no-op | fintask | 1 | 1 | 100 | 0 |" in text
    assert "| rpush | 16 | 25,000 | 80,000 | 80,000 |" in text
    assert "busiest hour" in text
