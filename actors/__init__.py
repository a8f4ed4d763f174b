"""fintask's actors: thin starters, one module per workload.

``dramatiq actors`` imports this package. The broker is configured here, before any actor
module is imported, so every actor is declared on the broker of this process.
"""

from app.broker import setup_broker

setup_broker()

from actors import digest, etl, fraud, insights, maintenance, notifications, reports, runs, sync  # noqa: E402

__all__ = [
    "digest",
    "etl",
    "fraud",
    "insights",
    "maintenance",
    "notifications",
    "reports",
    "runs",
    "sync",
]
