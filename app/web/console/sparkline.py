"""Sparklines drawn on the server: one polyline per series, in an inline SVG.

The console's Content-Security-Policy allows no inline style and no charting script, so a line
is computed here as the ``points`` of an SVG ``<polyline>`` and the template draws it with
attributes only; its colour comes from its CSS class (``svg.sparkline .done``, ``.failed`` in
``console.css``). The series of one sparkline share one scale, so that failures are seen
against what was done, not each stretched to the full height. A count's x is its index (the
SVG stretches ``view_width`` over ``width`` pixels), which keeps an hour's points short.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

#: Room kept above and below the line, so that a stroke at 0 or at the peak is not clipped.
_MARGIN = 1.5


@dataclass(frozen=True)
class Line:
    """One series: its CSS class, its SVG points, and the sum of its counts."""

    css_class: str
    points: str
    total: int


@dataclass(frozen=True)
class Sparkline:
    """What a template needs to draw the series: its size, its lines and the scale's top."""

    #: Its size on the page, in pixels.
    width: int
    height: int
    #: The x of its last point: one unit per count.
    view_width: int
    lines: tuple[Line, ...]
    #: The largest count of any series at any point (the top of the scale).
    peak: int


def sparkline(
    series: Mapping[str, Sequence[int]], *, width: int = 120, height: int = 24
) -> Sparkline:
    """The lines of ``series`` (CSS class -> counts, oldest first, all of one length), every
    series on the scale of the largest count. A series of zeros is left out, so that an idle
    queue shows no failure line, but the first is kept: it draws the baseline."""
    peak = max((max(counts, default=0) for counts in series.values()), default=0)
    lines = tuple(
        Line(css_class, points(counts, height=height, peak=peak), sum(counts))
        for index, (css_class, counts) in enumerate(series.items())
        if index == 0 or any(counts)
    )
    longest = max((len(counts) for counts in series.values()), default=0)
    return Sparkline(
        width=width, height=height, view_width=max(longest - 1, 1), lines=lines, peak=peak
    )


def points(counts: Sequence[int], *, height: int, peak: int) -> str:
    """SVG polyline points for ``counts``, one x unit apart: 0 at the bottom, ``peak`` at the
    top (a peak of 0 draws a flat line at the bottom)."""
    scale = (height - 2 * _MARGIN) / peak if peak > 0 else 0.0
    return " ".join(
        f"{index},{_number(height - _MARGIN - count * scale)}" for index, count in enumerate(counts)
    )


def _number(value: float) -> str:
    """A height to a tenth of a pixel, without a trailing ``.0``."""
    return f"{round(value, 1):g}"
