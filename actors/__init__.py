"""fintask's actors: thin starters, one module per workload.

Importing this package declares the actors; it does not build the broker. A worker runs
``dramatiq app.broker:setup_broker actors``: Dramatiq calls ``setup_broker`` first, then
imports this package, so every actor is declared on the broker of this process.
"""

from actors import (
    digest,
    etl,
    fraud,
    from_celery,
    insights,
    maintenance,
    notifications,
    reports,
    runs,
    sync,
)

__all__ = [
    "digest",
    "etl",
    "fraud",
    "from_celery",
    "insights",
    "maintenance",
    "notifications",
    "reports",
    "runs",
    "sync",
]
