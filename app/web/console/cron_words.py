"""A cron spec in words, as the Schedule page shows it beside the spec itself.

"every day at 06:00 UTC" is read at a glance, ``0 6 * * *`` is decoded; but a wrong sentence
is worse than none, so the words are built from the spec as the scheduler parses it (the sets
of minutes, hours, days it fires on, ``scheduler.cron``), and a form this module does not put
into words (a day of the month *or* a weekday, which cron ORs) is shown as the spec.
Times are UTC, as the schedule's are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler.cron import parse_spec

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
#: The most clock times spelled out ("at 00:00, 06:00, 12:00 and 18:00 UTC").
_MAX_TIMES = 6


@dataclass(frozen=True)
class _Days:
    """The days a spec fires on, two ways: before clock times ("every Monday" at 07:00) and
    after a frequency (every 5 minutes "on Mondays"; empty for every day)."""

    every: str
    within: str


def cron_in_words(spec: str) -> str:
    """``spec`` (a cron spec in UTC, or an alias such as ``@daily``) in words; the spec
    itself, quoted, for a form this module does not put into words."""
    try:
        cron = parse_spec(spec, job="")
    except ValueError:  # not a spec the scheduler would take
        return _verbatim(spec)
    minutes, hours, dom, months, dow = cron.astuple()
    weekdays = sorted({(day - 1) % 7 for day in dow})  # Monday = 0 ... Sunday = 6
    days = _days(dom, months, weekdays)
    if days is None:
        return _verbatim(spec)
    if _is_full(hours, 0, 23):
        return _frequency(minutes, hours) + days.within
    step = _step(hours, 0, 23)
    times = [f"{hour:02d}:{minute:02d}" for hour in hours for minute in minutes]
    if step is not None and len(minutes) == 1:
        if len(times) > _MAX_TIMES:
            return f"every {step} hours at :{minutes[0]:02d} from 00:00 UTC{days.within}"
        return f"every {step} hours, at {_listed(times)} UTC{days.within}"
    if len(times) <= _MAX_TIMES:
        return f"{days.every} at {_listed(times)} UTC"
    return _frequency(minutes, hours) + days.within


def _frequency(minutes: Sequence[int], hours: Sequence[int]) -> str:
    """How often it fires within its hours: every 5 minutes, every hour at :17..."""
    step = _step(minutes, 0, 59)
    if step == 1:
        within_hour = "every minute"
    elif step is not None:
        within_hour = f"every {step} minutes"
    elif minutes == [0]:
        within_hour = "every hour, on the hour"
    else:
        within_hour = "every hour at " + _listed([f":{minute:02d}" for minute in minutes])
    if _is_full(hours, 0, 23):
        return within_hour
    if hours == list(range(hours[0], hours[-1] + 1)):
        return f"{within_hour} from {hours[0]:02d}:00 to {hours[-1]:02d}:59 UTC"
    return f"{within_hour} in the hours {_listed([f'{hour:02d}' for hour in hours])} UTC"


def _days(dom: Sequence[int], months: Sequence[int], weekdays: Sequence[int]) -> _Days | None:
    """The days part, or None when both the day of month and the weekday are restricted
    (cron then fires on either: no short sentence says that without misleading)."""
    by_month_day = not _is_full(dom, 1, 31)
    by_weekday = len(weekdays) < 7
    if by_month_day and by_weekday:
        return None
    in_months = "" if _is_full(months, 1, 12) else _listed([_MONTHS[m - 1] for m in months])
    if by_weekday:
        names = _weekday_names(weekdays)
        plural = _listed([f"{_WEEKDAYS[day]}s" for day in weekdays])
        within = f"from {names}" if " to " in names else f"on {plural}"
        suffix = f" in {in_months}" if in_months else ""
        return _Days(every=f"every {names}{suffix}", within=f" {within}{suffix}")
    if by_month_day:
        numbers = _listed([str(day) for day in dom])
        if in_months and len(dom) == 1:
            return _Days(
                every=f"every year on {numbers} {in_months}", within=f" on {numbers} {in_months}"
            )
        label = "day" if len(dom) == 1 else "days"
        if in_months:
            return _Days(
                every=f"on {label} {numbers} of {in_months}",
                within=f" on {label} {numbers} of {in_months}",
            )
        return _Days(
            every=f"on {label} {numbers} of every month",
            within=f" on {label} {numbers} of the month",
        )
    if in_months:
        return _Days(every=f"every day in {in_months}", within=f" in {in_months}")
    return _Days(every="every day", within="")


def _weekday_names(weekdays: Sequence[int]) -> str:
    """The weekdays named: Monday; Monday and Thursday; Monday to Friday (three or more days
    in a row)."""
    if len(weekdays) >= 3 and list(weekdays) == list(range(weekdays[0], weekdays[-1] + 1)):
        return f"{_WEEKDAYS[weekdays[0]]} to {_WEEKDAYS[weekdays[-1]]}"
    return _listed([_WEEKDAYS[day] for day in weekdays])


def _step(values: Sequence[int], low: int, high: int) -> int | None:
    """The step of ``values`` if they are every n-th value from ``low`` (``*/n``), else None."""
    if len(values) < 2:
        return None
    step = values[1] - values[0]
    return step if list(values) == list(range(low, high + 1, step)) else None


def _is_full(values: Sequence[int], low: int, high: int) -> bool:
    return list(values) == list(range(low, high + 1))


def _listed(items: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _verbatim(spec: str) -> str:
    return f"cron “{spec.strip()}” (UTC)"
