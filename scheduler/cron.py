"""Cron specs on periodiq's parser, with periodiq 0.14's traps closed.

periodiq reads the day of week two ways: ``validate`` (does the job run this minute?) compares
ISO weekdays, Sunday = 7, while ``next_valid_date`` counts Sunday as 0. So ``0``, ``sun`` and
``@weekly`` never fire, and ``7`` fires but makes ``next_valid_date`` skip a Sunday. periodiq
also accepts specs that can never match (minute 61, 31 February), and its ``next_valid_date``
is wrong for some valid ones (``*/15 9-17 * * *`` at 08:59 answers 09:15, ``0 12 * 6 *`` in
May answers 4 June). So fintask:

- parses with :class:`CronSpec`: periodiq's own, with Sunday as both 0 and 7;
- rejects a spec periodiq would take but never fire, with an error naming the job and spec;
- finds ticks with :func:`next_tick`, which trusts only ``validate``, never ``next_valid_date``.

Times here are aware UTC datetimes, whatever the process's ``TZ``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import periodiq

ONE_MINUTE = dt.timedelta(minutes=1)
#: How far ahead a spec must fire to be accepted (covers 29 February).
FIRES_WITHIN = dt.timedelta(days=8 * 366)
_REFERENCE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_SUNDAY = {0, 7}


class ScheduleError(ValueError):
    """A job of the schedule is declared wrongly; the message names the job and why."""


class CronSpec(periodiq.CronSpec):
    """periodiq's cron spec with Sunday as both 0 and 7, so both of its readings see it."""

    def setup(self, m: Any, h: Any, dom: Any, month: Any, dow: list[int] | None) -> None:
        if dow is not None and _SUNDAY & set(dow):
            dow = sorted({*dow, *_SUNDAY})
        super().setup(m, h, dom, month, dow)
        if dow is not None:
            # periodiq counts entries (len < 7); with Sunday twice, count distinct days.
            self.is_dow_restricted = len({day % 7 for day in dow}) < 7


def parse_spec(spec: str, *, job: str) -> CronSpec:
    """``spec`` parsed, or ``ScheduleError`` naming ``job`` if periodiq could never fire it."""

    def error(reason: str) -> ScheduleError:
        return ScheduleError(f"job {job!r}: cron spec {spec!r} {reason}")

    text = spec.strip()
    if text.startswith("@") and text not in CronSpec._named_spec:
        known = ", ".join(sorted(CronSpec._named_spec))
        raise error(f"is not a known alias ({known})")
    fields = CronSpec._named_spec.get(text, text).split()
    if len(fields) != len(_FIELDS):
        names = " ".join(name.replace(" ", "-") for name, _, _ in _FIELDS)
        raise error(f"has {len(fields)} fields; expected {len(_FIELDS)} ({names})")
    try:
        cron = CronSpec.parse(text)
    except IndexError:
        raise error("has a range that selects nothing") from None
    except ValueError as failure:
        raise error(f"does not parse: {failure}") from None
    for (name, low, high), values in zip(_FIELDS, cron.astuple(), strict=True):
        outside = [value for value in values if not low <= value <= high]
        if outside:
            raise error(f"has {name} {outside[0]}, outside {low}-{high}")
    if next_tick(cron, _REFERENCE, horizon=FIRES_WITHIN) is None:
        raise error("never fires (no date matches it)")
    cron.parsed_from = spec
    return cron


def floor_minute(moment: dt.datetime) -> dt.datetime:
    """``moment`` in UTC, cut to its minute: the tick it belongs to."""
    return moment.astimezone(dt.UTC).replace(second=0, microsecond=0)


def next_tick(
    cron: periodiq.CronSpec, after: dt.datetime, *, horizon: dt.timedelta = FIRES_WITHIN
) -> dt.datetime | None:
    """The first minute strictly after ``after`` at which ``cron`` fires; ``None`` if none
    within ``horizon``. Skips whole months, days and hours that ``validate`` rules out."""
    moment = floor_minute(after) + ONE_MINUTE
    end = moment + horizon
    while moment <= end:
        if moment.month not in cron.month:
            moment = _start_of_next_month(moment)
        elif not cron.validate(moment.replace(hour=cron.hour[0], minute=cron.minute[0])):
            moment = moment.replace(hour=0, minute=0) + dt.timedelta(days=1)
        elif moment.hour not in cron.hour:
            moment = moment.replace(minute=0) + dt.timedelta(hours=1)
        elif cron.validate(moment):
            return moment
        else:
            moment += ONE_MINUTE
    return None


def ticks_between(
    cron: periodiq.CronSpec, after: dt.datetime, until: dt.datetime
) -> list[dt.datetime]:
    """Every tick of ``cron`` later than ``after`` and no later than ``until``, oldest first."""
    ticks = []
    moment = next_tick(cron, after, horizon=until - after)
    while moment is not None and moment <= until:
        ticks.append(moment)
        moment = next_tick(cron, moment, horizon=until - moment)
    return ticks


def _start_of_next_month(moment: dt.datetime) -> dt.datetime:
    first = moment.replace(day=1, hour=0, minute=0)
    return (first + dt.timedelta(days=32)).replace(day=1)
