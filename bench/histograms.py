"""Latency cells: every send-to-start latency of a (scenario, case, system), pooled over the
repetitions in an HdrHistogram, so a quoted p99 comes from thousands of samples rather than
being the maximum of a few dozen.

Values are recorded in microseconds with 3 significant digits (a percentile is within 0.1 % of
the exact one) from 1 us to 1 hour. The exact maximum is kept beside the histogram, which would
round it up to its bucket. A cell with fewer than :data:`QUOTABLE` samples is marked as such
wherever it is shown: its p99.9 is then one of its last few values.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from hdrh.histogram import HdrHistogram

#: The fewest samples a cell needs before its upper percentiles are worth quoting.
QUOTABLE = 2_000
#: The percentiles the report shows, as (label, percent).
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
DIGITS = 3


def new_histogram() -> HdrHistogram:
    """An empty histogram of microseconds, 1 us to 1 hour, 3 significant digits."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


@dataclass
class Cell:
    """The pooled latencies of one (scenario, case, system) and the settings behind them."""

    histogram: HdrHistogram = field(default_factory=new_histogram)
    max_ms: float = 0.0
    settings: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.histogram.get_total_count())

    @property
    def quotable(self) -> bool:
        return self.count >= QUOTABLE

    def add(self, latencies_ms: Iterable[float], setting: str = "") -> int:
        """Record ``latencies_ms``; return how many. A value below 1 us (two clocks a tick
        apart) counts as 1 us, one above an hour as an hour: neither is lost from the count."""
        added = 0
        for value in latencies_ms:
            micros = min(max(round(value * 1000), LOWEST_US), HIGHEST_US)
            self.histogram.record_value(micros)
            self.max_ms = max(self.max_ms, value)
            added += 1
        if setting and setting not in self.settings:
            self.settings.append(setting)
        return added

    def percentiles_ms(self) -> dict[str, float]:
        """p50, p90, p99 and p99.9 in milliseconds (0 for an empty cell), each at most the
        exact maximum (the histogram answers with the top of a value's bucket)."""
        if not self.count:
            return {label: 0.0 for label, _ in PERCENTILES}
        values = self.histogram.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        return {label: min(values[p] / 1000, self.max_ms) for label, p in PERCENTILES}


Key = tuple[str, str, str]


@dataclass
class Cells:
    """Every latency cell of a run, by (scenario, case, system), in the order first recorded."""

    cells: dict[Key, Cell] = field(default_factory=dict)

    def add(
        self, scenario: str, case: str, system: str, latencies_ms: Iterable[float], setting: str
    ) -> Cell:
        """Pool ``latencies_ms`` into the cell; return it."""
        cell = self.cells.setdefault((scenario, case, system), Cell())
        cell.add(latencies_ms, setting)
        return cell

    def of(self, scenario: str) -> dict[tuple[str, str], Cell]:
        """One scenario's cells, by (case, system)."""
        return {(c, s): cell for (key, c, s), cell in self.cells.items() if key == scenario}

    def dump(self) -> list[dict[str, object]]:
        """Every cell as JSON: its key, count, percentiles, exact max and encoded histogram
        (``HdrHistogram.decode`` reads it back; :func:`load` does so for a whole file)."""
        return [
            {
                "scenario": scenario,
                "case": case,
                "system": system,
                "settings": cell.settings,
                "count": cell.count,
                **{f"{label} (ms)": value for label, value in cell.percentiles_ms().items()},
                "max (ms)": cell.max_ms,
                "histogram (us, HdrHistogram V2, base64)": cell.histogram.encode().decode(),
            }
            for (scenario, case, system), cell in self.cells.items()
        ]

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.dump(), indent=1) + "\n")


def load(path: Path) -> Cells:
    """Re-read a ``histograms.json`` written by :meth:`Cells.write`."""
    cells = Cells()
    for row in json.loads(path.read_text()):
        key = (str(row["scenario"]), str(row["case"]), str(row["system"]))
        cells.cells[key] = Cell(
            histogram=HdrHistogram.decode(row["histogram (us, HdrHistogram V2, base64)"]),
            max_ms=float(row["max (ms)"]),
            settings=list(row["settings"]),
        )
    return cells
