"""The one place where the periodic schedule lives: cron specs in UTC.

``python -m scheduler`` runs it (see ``scheduler.__main__``); ``fintask schedule`` shows it.
Each line is checked when this module is imported (``scheduler.jobs.every``). A job with
``catch_up=True`` has its most recent missed tick sent when a scheduler starts after missing
it; the others run often enough that a missed tick is only logged.
"""

from __future__ import annotations

from actors import digest, maintenance, reports, sync
from scheduler.jobs import Schedule, every

SCHEDULE = Schedule(
    # Maintenance
    every("* * * * *", run=maintenance.relay_outbox),
    every("*/5 * * * *", run=maintenance.fail_stuck_jobs),
    every("17 3 * * *", run=maintenance.purge_raw_blobs),
    # Dead-letter watch: logs each queue's dead-letter count.
    every("*/5 * * * *", run=maintenance.report_dead_letters),
    # Users: yesterday's summary, early in Europe's morning.
    every("0 6 * * *", run=digest.send_daily_digests, catch_up=True),
    # Every active provider account, refreshed through a chunked run four times a day.
    every("0 */6 * * *", run=sync.start_account_sync),
    # The weekly report fan-out (a chunked run over active users), Monday mornings.
    every("0 7 * * 1", run=reports.start_weekly_report, catch_up=True),
)
