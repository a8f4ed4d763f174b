"""A wall clock a test moves by hand, for code that takes ``now`` as a callable."""

from __future__ import annotations

import datetime as dt


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)
