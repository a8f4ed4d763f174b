"""One SIGTERM, one graceful shutdown, however many times the platform delivers it.

Heroku (and honcho, and ``docker stop`` with an init) signal every process of a dyno, so each
Dramatiq worker process gets SIGTERM twice: once from the platform and once forwarded by the
Dramatiq master. Dramatiq takes a second SIGTERM as "kill now" and exits without finishing
its messages. This middleware, in each worker process, lets a repeat that arrives within a
short window count as the same request; a SIGTERM after the window still kills at once.
"""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Any

from dramatiq import Broker, Middleware
from dramatiq.logging import get_logger


class CoalesceShutdownSignals(Middleware):
    """Treat SIGTERMs that arrive within ``window_ms`` of the first as one."""

    def __init__(self, *, window_ms: int = 2_000) -> None:
        self.window_ms = window_ms
        self.logger = get_logger(__name__, type(self))

    def after_process_boot(self, broker: Broker) -> None:
        dramatiq_handler = signal.getsignal(signal.SIGTERM)
        if not callable(dramatiq_handler):
            return
        first_at: float | None = None

        def handler(signum: int, frame: FrameType | None) -> Any:
            nonlocal first_at
            now = time.monotonic()
            if first_at is not None and (now - first_at) * 1000 < self.window_ms:
                self.logger.info("Ignoring a repeated SIGTERM: already shutting down gracefully")
                return None
            first_at = first_at or now
            return dramatiq_handler(signum, frame)

        signal.signal(signal.SIGTERM, handler)
