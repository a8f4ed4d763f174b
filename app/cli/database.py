"""``fintask migrate`` (the Procfile's ``release``) and ``fintask seed``."""

from __future__ import annotations

import dataclasses

import click

from app.cli.common import JSON_OPTION, print_json
from app.db.migrate import current_revision, upgrade
from app.db.session import default_engine
from app.local.seed import seed as seed_users
from app.settings import load_settings


@click.command()
@JSON_OPTION
def migrate(as_json: bool) -> None:
    """Apply database migrations (the Procfile's ``release`` step).

    ``--json`` names the revision the database was at and the one it is at now, so a deploy
    can record whether its release step changed the schema.
    """
    database_url = load_settings().database_url
    previous = current_revision(database_url) if as_json else None
    upgrade(database_url)
    if as_json:
        print_json({"previous_revision": previous, "revision": current_revision(database_url)})
    else:
        click.echo("database is at the latest revision")


@click.command()
@click.option("--users", type=click.IntRange(min=1), default=1_000, show_default=True)
@JSON_OPTION
def seed(users: int, as_json: bool) -> None:
    """Create users (and their linked accounts) up to ``--users``, in bulk."""
    result = seed_users(default_engine(), users=users)
    if as_json:
        print_json(dataclasses.asdict(result))
        return
    click.echo(
        f"created {result.users_created} users and {result.accounts_created} accounts "
        f"({result.users_total} users in all)"
    )
