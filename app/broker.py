"""The broker factory: one place builds the broker and its middleware stack for every process.

Import order matters: Sentry is initialised first (its integration patches ``Broker.__init__``),
then the broker is built and made global, and only then are actors declared.
"""

from __future__ import annotations

import functools
import os

import dramatiq
from dramatiq import Broker, Middleware
from dramatiq.brokers.stub import StubBroker
from dramatiq.encoder import JSONEncoder
from dramatiq.middleware import CurrentMessage, default_middleware

from app.middleware.guardrails import Guardrails
from app.middleware.shutdown_signals import CoalesceShutdownSignals
from app.sentry import init_sentry
from app.settings import WORKER_PROCESS_TYPES, Settings, SettingsError, load_settings


def process_type() -> str:
    """The Procfile process type this process runs as (``cli`` outside the Procfile)."""
    return os.environ.get("FINTASK_PROCESS_TYPE", "cli")


def middleware_stack(settings: Settings, *, for_process_type: str) -> list[Middleware]:
    """Guardrails first (a bad message never reaches the rest), Dramatiq's defaults,
    ``CurrentMessage``, then Prometheus in worker processes."""
    stack: list[Middleware] = [Guardrails(max_message_bytes=settings.max_message_bytes)]
    stack += [middleware() for middleware in default_middleware]
    stack.append(CurrentMessage())
    if for_process_type in WORKER_PROCESS_TYPES:
        stack.append(CoalesceShutdownSignals())
        # Imported here: the module reads dramatiq_prom_db and dramatiq_prom_port at import,
        # which `fintask process` sets per process type before it starts the worker.
        from dramatiq.middleware.prometheus import Prometheus

        stack.append(Prometheus())
    return stack


def build_broker(settings: Settings, *, for_process_type: str = "cli") -> Broker:
    """A broker for ``settings``: Redis, or Dramatiq's in-process stub for unit tests."""
    middleware = middleware_stack(settings, for_process_type=for_process_type)
    if settings.uses_stub_broker:
        return StubBroker(middleware=middleware)
    if settings.redis_url is None:
        raise SettingsError(
            "REDIS_URL is not set: run through `fintask run`, which starts a private Redis, "
            "or point REDIS_URL at your Redis (redis://HOST:PORT/DB)"
        )
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(
        url=settings.redis_url,
        middleware=middleware,
        heartbeat_timeout=settings.heartbeat_timeout_ms,
        maintenance_chance=settings.maintenance_chance_per_million,
    )


@functools.cache
def setup_broker() -> Broker:
    """Configure this process once: Sentry, the JSON encoder and the global broker."""
    settings = load_settings()
    init_sentry(settings)
    dramatiq.set_encoder(JSONEncoder())
    broker = build_broker(settings, for_process_type=process_type())
    dramatiq.set_broker(broker)
    return broker
