"""A schedule with only the outbox relay, for tests that need it and nothing else firing."""

from __future__ import annotations

from actors import maintenance
from scheduler.jobs import Schedule, every

SCHEDULE = Schedule(every("* * * * *", run=maintenance.relay_outbox))
