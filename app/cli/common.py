"""What the ``fintask`` commands share: JSON output, and building the broker."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

from app.broker import setup_broker

F = TypeVar("F", bound=Callable[..., Any])

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")


def with_broker(command: F) -> F:
    """Build this process's broker before ``command`` runs (it sends or reads the queues)."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        setup_broker()
        return command(*args, **kwargs)

    return run  # type: ignore[return-value]


def print_json(data: object) -> None:
    """``data`` as indented JSON; timestamps and other objects as their ``str``."""
    click.echo(json.dumps(data, indent=2, default=str))
