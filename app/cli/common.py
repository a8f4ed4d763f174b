"""What the ``fintask`` commands share: JSON output, building the broker, database errors, and
who is acting (for the audit trail)."""

from __future__ import annotations

import datetime as dt
import functools
import getpass
import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from app.broker import setup_broker
from app.control.actions import Operator, UnknownTarget
from app.db.session import new_session
from app.redis_client import get_redis
from app.timestamps import rfc3339
from pipelines.batches import BATCHES

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")


def with_broker(command: F) -> F:
    """Build this process's broker before ``command`` runs (it sends or reads the queues)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        setup_broker()
        return command(*args, **kwargs)

    return run  # type: ignore[return-value]


def print_json(data: object) -> None:
    """``data`` as indented JSON; datetimes in RFC 3339 (UTC), other objects as their ``str``."""
    click.echo(json.dumps(data, indent=2, default=_json_value))


def _json_value(value: object) -> object:
    return rfc3339(value) if isinstance(value, dt.datetime) else str(value)


def cli_identity() -> str:
    """Who acts from this shell, as the audit trail names them: ``cli:<os user>@<host>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container's uid with no passwd entry and no $USER
        user = "unknown"
    return f"cli:{user}@{socket.gethostname()}"


@contextmanager
def acting_operator() -> Iterator[Operator]:
    """The person at this shell as an operator of the fleet (audited as ``cli_identity()``)."""
    broker = setup_broker()
    with new_session() as session:
        yield Operator(cli_identity(), session, get_redis(), broker, BATCHES)


def usage_errors(action: Callable[[], T], param_hint: str) -> T:
    """Run ``action``; an unknown queue or actor, or a bad value, is a usage error (status 2)
    naming ``param_hint``."""
    try:
        return action()
    except (UnknownTarget, ValueError) as error:
        raise click.BadParameter(str(error), param_hint=param_hint) from None
