"""``fintask migrate`` (the Procfile's ``release``) and ``fintask seed``."""

from __future__ import annotations

import click

from app.db.migrate import upgrade
from app.db.session import default_engine
from app.local.seed import seed as seed_users
from app.settings import load_settings


@click.command()
def migrate() -> None:
    """Apply database migrations (the Procfile's ``release`` step)."""
    upgrade(load_settings().database_url)
    click.echo("database is at the latest revision")


@click.command()
@click.option("--users", type=click.IntRange(min=1), default=1_000, show_default=True)
def seed(users: int) -> None:
    """Create users (and their linked accounts) up to ``--users``, in bulk."""
    result = seed_users(default_engine(), users=users)
    click.echo(
        f"created {result.users_created} users and {result.accounts_created} accounts "
        f"({result.users_total} users in all)"
    )
