"""``fintask bridge celery``: tasks Celery producers publish run on fintask actors.

The Procfile's ``bridge_celery`` process. Its machinery is ``app.celery_bridge``; which actor
runs which Celery task is ``actors.from_celery`` (or the mapping ``--tasks`` names).
"""

from __future__ import annotations

import importlib
import logging
import signal
from collections.abc import Mapping
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import click
from dramatiq import Actor
from dramatiq.cli import LOGFORMAT

from app.broker import setup_broker
from app.celery_bridge import DEFAULT_VISIBILITY_TIMEOUT_MS, BridgeError, CeleryBridge
from app.redis_client import get_redis
from app.settings import hide_credentials, load_settings

DEFAULT_TASKS = "actors.from_celery:CELERY_TASKS"


@click.group()
def bridge() -> None:
    """Bridges from Celery: tasks its producers publish run on fintask actors."""


def _celery_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str:
    """The Celery broker's URL: the option, CELERY_BROKER_URL, else fintask's REDIS_URL."""
    url = value or load_settings().redis_url
    if url is None:
        raise click.BadParameter("no Celery broker: pass --broker-url or set CELERY_BROKER_URL")
    if urlsplit(url).scheme not in ("redis", "rediss"):
        raise click.BadParameter(
            f"{hide_credentials(url)} is not a Redis URL: the bridge reads kombu's Redis "
            "transport (redis://HOST:PORT/DB or rediss://...)"
        )
    return url


def _task_mapping(ctx: click.Context, param: click.Parameter, value: str) -> dict[str, Any]:
    """The mapping ``MODULE:NAME`` names, checked: Celery task names to fintask actors."""
    module_name, _, attribute = value.partition(":")
    try:
        mapping = getattr(importlib.import_module(module_name), attribute or "CELERY_TASKS")
    except (ImportError, AttributeError) as error:
        raise click.BadParameter(f"cannot load {value!r}: {error}") from None
    if not isinstance(mapping, Mapping) or not mapping:
        raise click.BadParameter(f"{value!r} is not a mapping of Celery task names to actors")
    wrong = [name for name, actor in mapping.items() if not isinstance(actor, Actor)]
    if wrong:
        raise click.BadParameter(f"{value!r} maps {', '.join(map(repr, wrong))} to no actor")
    return dict(mapping)


@bridge.command("celery")
@click.option("--queue", "queue_name", required=True, help="the Celery queue to consume")
@click.option(
    "--broker-url",
    envvar="CELERY_BROKER_URL",
    callback=_celery_url,
    help="the Celery producers' Redis [env CELERY_BROKER_URL; default: REDIS_URL]",
)
@click.option(
    "--tasks",
    "tasks",
    default=DEFAULT_TASKS,
    show_default=True,
    callback=_task_mapping,
    help="MODULE:NAME of the mapping of Celery task names to fintask actors",
)
@click.option(
    "--visibility-timeout-ms",
    type=click.IntRange(min=1_000),
    default=DEFAULT_VISIBILITY_TIMEOUT_MS,
    show_default=True,
    help="how long a message a dead bridge held waits before a bridge takes it back",
)
def celery(
    queue_name: str,
    broker_url: str,
    tasks: dict[str, Actor[Any, Any]],
    visibility_timeout_ms: int,
) -> None:
    """Consume a Celery queue and hand each task to the fintask actor mapped to its name."""
    if not queue_name.strip() or any(c.isspace() for c in queue_name):
        raise click.BadParameter(f"{queue_name!r} is not a queue name", param_hint="--queue")
    logging.basicConfig(level=logging.INFO, format=LOGFORMAT)
    broker = setup_broker()
    celery_bridge = CeleryBridge(
        broker=broker,
        tasks=tasks,
        client=get_redis(),
        celery_url=broker_url,
        queue_name=queue_name,
        visibility_timeout_ms=visibility_timeout_ms,
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("celery_bridge").info("Stopping on %s", signal.Signals(signum).name)
        celery_bridge.stopping.set()

    previous = {number: signal.signal(number, stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        celery_bridge.run()
    except BridgeError as error:
        raise click.ClickException(str(error)) from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
