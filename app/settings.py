"""Settings read from the environment, validated once, with errors that name the variable.

Every process type (web, workers, scheduler, CLI) reads the same variables, so a value that is
wrong fails the same way everywhere and before any work starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Process types of the Procfile that run Dramatiq workers, and so export Dramatiq's metrics.
WORKER_PROCESS_TYPES = ("worker", "worker_urgent")


class SettingsError(ValueError):
    """An environment variable is missing or malformed; the message names it and says why."""


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one fintask process."""

    redis_url: str | None
    broker_url: str | None
    database_url: str
    var_dir: Path
    sentry_dsn: str | None
    sentry_environment: str
    smtp_url: str
    provider_url: str
    push_url: str
    metrics_ports: Mapping[str, int] = field(default_factory=dict)
    heartbeat_timeout_ms: int = 60_000
    maintenance_chance_per_million: int = 1_000
    notification_claim_timeout_ms: int = 45_000
    max_message_bytes: int = 16_384
    worker_max_memory_mb: int | None = None

    @property
    def uses_stub_broker(self) -> bool:
        """Unit tests run actors in process on Dramatiq's StubBroker."""
        return self.broker_url == "stub://"

    def metrics_dir(self, process_type: str) -> Path:
        """Where one process type keeps its Prometheus multiprocess files."""
        return self.var_dir / "prometheus" / process_type


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate fintask's settings from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    var_dir = Path(env.get("FINTASK_VAR_DIR") or PROJECT_ROOT / "var").resolve()
    broker_url = _optional_url(env, "BROKER_URL", {"stub"})
    return Settings(
        redis_url=_optional_url(env, "REDIS_URL", {"redis", "rediss", "unix"}),
        broker_url=broker_url,
        database_url=_database_url(env, var_dir),
        var_dir=var_dir,
        sentry_dsn=_optional_url(env, "SENTRY_DSN", {"http", "https"}),
        sentry_environment=env.get("SENTRY_ENVIRONMENT", "development"),
        smtp_url=_optional_url(env, "SMTP_URL", {"smtp", "smtps"}) or "smtp://127.0.0.1:1025",
        provider_url=_optional_url(env, "PROVIDER_URL", {"http", "https"})
        or "http://127.0.0.1:8001",
        push_url=_optional_url(env, "PUSH_URL", {"http", "https"}) or "http://127.0.0.1:8002/push",
        metrics_ports={
            process_type: _int(env, f"METRICS_PORT_{process_type.upper()}", default, 1, 65535)
            for process_type, default in (("worker", 9191), ("worker_urgent", 9192))
        },
        heartbeat_timeout_ms=_int(env, "HEARTBEAT_TIMEOUT_MS", 60_000, 1_000, 3_600_000),
        maintenance_chance_per_million=_int(env, "BROKER_MAINTENANCE_CHANCE", 1_000, 1, 1_000_000),
        notification_claim_timeout_ms=_int(
            env, "NOTIFICATION_CLAIM_TIMEOUT_MS", 45_000, 1_000, 3_600_000
        ),
        max_message_bytes=_int(env, "MAX_MESSAGE_BYTES", 16_384, 256, 1_048_576),
        worker_max_memory_mb=_optional_int(env, "WORKER_MAX_MEMORY_MB", 32, 1_048_576),
    )


def _optional_url(env: Mapping[str, str], name: str, schemes: set[str]) -> str | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        expected = ", ".join(f"{s}://" for s in sorted(schemes))
        raise SettingsError(f"{name}={value!r}: the scheme must be one of {expected}")
    if scheme not in {"stub", "unix"} and not urlsplit(value).hostname:
        raise SettingsError(f"{name}={value!r}: the URL names no host")
    return value


def _database_url(env: Mapping[str, str], var_dir: Path) -> str:
    value = env.get("DATABASE_URL", "").strip()
    if not value:
        return f"sqlite:///{var_dir / 'fintask.db'}"
    # Heroku-style URLs say postgres://; SQLAlchemy needs the driver named.
    for prefix in ("postgres://", "postgresql://"):
        if value.startswith(prefix):
            value = "postgresql+psycopg://" + value[len(prefix) :]
    if not value.startswith(("sqlite://", "postgresql+psycopg://")):
        raise SettingsError(
            f"DATABASE_URL={_redact(value)!r}: fintask supports sqlite:///PATH and "
            "postgresql+psycopg://USER:PASSWORD@HOST:PORT/NAME"
        )
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r}: expected a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value}: expected a number from {low} to {high}")
    return value


def _optional_int(env: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    return _int(env, name, 0, low, high) if env.get(name, "").strip() else None


def _redact(url: str) -> str:
    """Hide the password of a URL so that an error message never leaks it."""
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url
