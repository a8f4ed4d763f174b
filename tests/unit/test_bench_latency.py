"""The latency scenario's open loop: a fixed schedule, latencies from it, and its loads."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.harness import Bench
from bench.histograms import QUOTABLE
from bench.scenarios import latency
from bench.scenarios.latency import Outcome, Schedule, drive, latencies_ms, windows
from bench.systems import System


class FakeClock:
    """A clock that moves only when the sender sleeps or sends."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds + 1e-9


def test_the_sender_keeps_the_schedule_however_slow_a_send_is() -> None:
    # Given 1,000 msg/s for 2 s, and a send that takes 3.5 ms whatever its batch size
    clock = FakeClock(100.0)
    schedule = Schedule.of(1000.0, 2.0, start=100.0)
    batches: list[list[float]] = []

    def slow_send(due: list[float]) -> None:
        batches.append(due)
        clock.now += 0.0035

    # When the sender drives the schedule
    lag = drive(schedule, slow_send, clock=clock, sleep=clock.sleep)

    # Then every scheduled message went out, each stamped with its scheduled time, in
    # batches of the messages that fell due while the last send took
    sent = [t for batch in batches for t in batch]
    assert len(sent) == 2000
    assert sent == [pytest.approx(100.0 + i / 1000) for i in range(2000)]
    assert max(len(batch) for batch in batches) == 4
    assert len(batches) < 2000 / 3
    assert lag == pytest.approx(0.0035, abs=1e-3)
    assert schedule.end == pytest.approx(102.0)


def test_a_fast_sender_sends_one_message_per_interval_and_never_early() -> None:
    clock = FakeClock(0.0)
    schedule = Schedule.of(50.0, 1.0, start=1.0)
    taken: list[tuple[float, list[float]]] = []

    drive(schedule, lambda due: taken.append((clock.now, due)), clock=clock, sleep=clock.sleep)

    assert [len(due) for _, due in taken] == [1] * 50
    assert all(now >= due[0] for now, due in taken)


def test_latency_is_from_the_schedule_and_unstarted_messages_count_at_a_lower_bound() -> None:
    # Given three messages scheduled at 10.0, 10.1, 10.2; two started, at 10.05 and 10.4
    stamps = [10.0, 10.1, 10.2]
    records = [(10.05, 10.0), (10.4, 10.1)]

    # When the window closes at 11.0
    found = latencies_ms(records, stamps, now=11.0)

    # Then the second one's latency includes its wait behind the first, and the third,
    # not started, counts as at least 800 ms rather than vanishing from the tail
    assert found == [pytest.approx(50.0), pytest.approx(300.0), pytest.approx(800.0)]


def test_full_windows_reach_2000_latencies_per_paced_cell_over_the_repetitions(
    tmp_path: Path,
) -> None:
    for repeats in (1, 3, 5):
        window = windows(Bench("redis://unused", True, 0, tmp_path, repeats=repeats))
        assert latency.QUIET_RATE * window.quiet_s * repeats >= QUOTABLE
        assert latency.BUSY_RATE * window.busy_s * repeats >= QUOTABLE
        assert window.load_s == 60
    quick = windows(Bench("redis://unused", False, 0, tmp_path))
    assert quick.load_s < 5 and quick.grace_s == 1.0


def test_loads_are_fractions_of_the_measured_maximum_and_stop_after_one_not_kept_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a system whose measured maximum (``noop.best_systems``) is 2,000 msg/s and which
    # falls behind at 75 %
    system, maximum = System("fintask", "fintask", processes=2), 2000.0
    offered: list[float] = []

    def fake_open_loop(
        sender: object, rate: float, seconds: float
    ) -> tuple[Schedule, list[float], float]:
        offered.append(rate)
        schedule = Schedule.of(rate, seconds, start=0.0)
        return schedule, [schedule.at(i) for i in range(schedule.count)], 0.001

    def fake_collect(client: object, queue: str, stamps: list[float], until: float) -> Outcome:
        behind = offered[-1] >= 0.75 * maximum
        return Outcome([1.0] * len(stamps), len(stamps) - (10 if behind else 0), len(stamps))

    monkeypatch.setattr(latency, "open_loop", fake_open_loop)
    monkeypatch.setattr(latency, "collect", fake_collect)
    monkeypatch.setattr(latency, "warm_up", lambda sender, client: None)
    bench = Bench("redis://unused", True, 0, tmp_path)  # full mode: all four loads

    # When the loads run
    sender = SimpleNamespace(queue="noop-fintask")
    latency.load(bench, system, sender, None, maximum, windows(bench))  # type: ignore[arg-type]

    # Then 25, 50 and 75 % ran, 90 % did not, and each recorded its share started in time
    assert offered == [500.0, 1000.0, 1500.0]
    shares = {s.case: s.value for s in bench.samples if s.metric == "started in time"}
    assert shares["open loop 25%"] == 100.0
    assert shares["open loop 75%"] < 100.0
    cells = bench.cells.of("latency")
    assert [case for case, _ in cells] == ["open loop 25%", "open loop 50%", "open loop 75%"]
