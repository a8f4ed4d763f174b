"""fintask's own Prometheus instruments, beside Dramatiq's.

In worker processes ``fintask process`` points ``PROMETHEUS_MULTIPROC_DIR`` at the process
type's directory before anything imports prometheus_client, so these land in the same files
Dramatiq's exposition server reads.
"""

from __future__ import annotations

from prometheus_client import Counter

NOTIFICATIONS = Counter(
    "fintask_notifications",
    "Notifications handled by a worker, by channel and outcome (sent, expired, duplicate).",
    ["channel", "outcome"],
)
