"""The one place where the periodic schedule lives (run by the Procfile's ``scheduler``).

Cron specs are in UTC: ``fintask process scheduler`` runs periodiq with ``TZ=UTC``.
"""

from __future__ import annotations

from periodiq import cron

from actors import maintenance

SCHEDULE = {
    maintenance.relay_outbox: "* * * * *",
    maintenance.fail_stuck_jobs: "*/5 * * * *",
    maintenance.report_dead_letters: "*/5 * * * *",
    maintenance.purge_raw_blobs: "17 3 * * *",
}

for _actor, _spec in SCHEDULE.items():
    _actor.options["periodic"] = cron(_spec)
