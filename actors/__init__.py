"""fintask's actors: thin starters, one module per workload.

``dramatiq actors`` imports this package. The broker is configured here, before any actor
module is imported, so every actor is declared on the broker of this process.
"""

from app.broker import setup_broker

setup_broker()

from actors import fraud, maintenance, notifications  # noqa: E402

__all__ = ["fraud", "maintenance", "notifications"]
