"""The one place where the periodic schedule lives (run by the Procfile's ``scheduler``)."""

from __future__ import annotations

from periodiq import PeriodiqMiddleware

from actors import maintenance
from app.broker import setup_broker

setup_broker().add_middleware(PeriodiqMiddleware(skip_delay=30))

__all__ = ["maintenance"]
