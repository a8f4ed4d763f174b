"""The ``fintask`` command: run the processes, migrate, seed, and start work from a shell."""

from __future__ import annotations

import json
import os
import sys

import click

from app.settings import SettingsError, load_settings


class _FintaskGroup(click.Group):
    """Turns a configuration error, wherever a command meets it, into one readable line."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            raise click.ClickException(f"configuration error: {error}") from None


@click.group(cls=_FintaskGroup)
def main() -> None:
    """fintask: a personal-finance service's background work on Dramatiq and Redis."""


@main.command()
def migrate() -> None:
    """Apply database migrations (the Procfile's ``release`` step)."""
    from app.db.migrate import upgrade

    settings = load_settings()
    upgrade(settings.database_url)
    click.echo("database is at the latest revision")


@main.command()
@click.option("--users", type=click.IntRange(min=1), default=1_000, show_default=True)
def seed(users: int) -> None:
    """Create users (and their linked accounts) up to ``--users``, in bulk."""
    from app.db.session import default_engine
    from app.seed import seed as seed_users

    result = seed_users(default_engine(), users=users)
    click.echo(
        f"created {result.users_created} users and {result.accounts_created} accounts "
        f"({result.users_total} users in all)"
    )


@main.command()
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds to wait")
def ping(timeout: float) -> None:
    """Send a ping through the queue and wait for a worker to answer it."""
    from actors.maintenance import ping as ping_actor
    from app import health
    from app.redis_client import get_redis

    token = health.new_ping_token()
    ping_actor.send(token)
    answered_by = health.wait_for_pong(get_redis(), token, timeout_s=timeout)
    if answered_by is None:
        raise click.ClickException(f"no worker answered within {timeout:g} s")
    click.echo(f"pong from {answered_by}")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("process_type")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def process(process_type: str, command: tuple[str, ...]) -> None:
    """Prepare the environment of one Procfile process type, then exec COMMAND."""
    from app.supervisor import exec_command, prepare_process_environment

    settings = load_settings()
    prepare_process_environment(process_type, settings, os.environ)  # type: ignore[arg-type]
    exec_command(list(command))


@main.command()
@click.argument("process_types", nargs=-1)
def run(process_types: tuple[str, ...]) -> None:
    """Run Procfile process types (default: web, workers, scheduler) with a private Redis."""
    from app.db.migrate import upgrade
    from app.supervisor import (
        DEFAULT_PROCESS_TYPES,
        embedded_redis,
        run_processes,
        shared_environment,
    )

    settings = load_settings()
    names = list(process_types or DEFAULT_PROCESS_TYPES)
    env = shared_environment(settings, os.environ, names)
    with embedded_redis(settings, env):
        upgrade(settings.database_url)
        try:
            code = run_processes(names, env)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    sys.exit(code)


@main.command()
@click.option("--users", type=click.IntRange(min=1), default=2_000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def demo(users: int, as_json: bool) -> None:
    """Run the showcase: private Redis, SQLite, the real processes, the workloads, a summary."""
    from app.demo import run_demo

    settings = load_settings()
    summary = run_demo(settings, users=users, log=click.echo if not as_json else _stderr)
    click.echo(json.dumps(summary.as_dict(), indent=2) if as_json else summary.render())


def _stderr(line: str) -> None:
    click.echo(line, err=True)


@main.command()
@click.option("--user", "user_id", type=int, required=True, help="the user's id")
@click.option("--kind", default="manual", show_default=True, help="what the notification is about")
@click.option(
    "--channel", type=click.Choice(["email", "push", "webhook"]), default="email", show_default=True
)
@click.option("--subject", default="A message from fintask", show_default=True)
@click.option("--body", default="", help="the text (default: a line naming the kind)")
@click.option("--urgent", is_flag=True, help="send through the urgent queue")
@click.option("--dedup-key", help="notifications with the same key are sent once")
def notify(
    user_id: int,
    kind: str,
    channel: str,
    subject: str,
    body: str,
    urgent: bool,
    dedup_key: str | None,
) -> None:
    """Notify a user; sending happens in a worker, after the row is committed."""
    import uuid

    from sqlalchemy.exc import NoResultFound

    import actors  # noqa: F401  (the outbox sends through the declared actors)
    from app.db.session import transaction
    from pipelines.notifications import Channel
    from pipelines.notifications import notify as create_notification

    try:
        with transaction() as session:
            notification_id = create_notification(
                session,
                user_id=user_id,
                kind=kind,
                channel=Channel(channel),
                dedup_key=dedup_key or f"{kind}:{uuid.uuid4()}",
                subject=subject,
                body=body or f"fintask notification: {kind}",
                urgent=urgent,
            )
    except NoResultFound:
        raise click.ClickException(f"user {user_id} does not exist") from None
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"notification {notification_id} queued")


@main.group()
def accounts() -> None:
    """Provider accounts: link them and record lookups."""


@accounts.command("link")
@click.option("--user", "user_id", type=int, required=True, help="the user's id")
@click.option("--external-id", required=True, help="the provider's id of the account")
@click.option("--provider", default="sandbox", show_default=True)
@click.option("--name", default="", help="a display name")
def accounts_link(user_id: int, external_id: str, provider: str, name: str) -> None:
    """Link an account to a user; a fraud check runs in a worker after the commit."""
    from sqlalchemy.exc import IntegrityError

    import actors  # noqa: F401
    from app.db.session import transaction
    from pipelines.accounts import link_account

    try:
        with transaction() as session:
            account_id = link_account(
                session, user_id=user_id, provider=provider, external_id=external_id, name=name
            )
    except IntegrityError:
        raise click.ClickException(f"user {user_id} does not exist") from None
    click.echo(f"account {account_id} linked")


@main.command()
@click.option("--smtp-port", type=click.IntRange(1, 65535), required=True)
@click.option("--http-port", type=click.IntRange(1, 65535), required=True)
@click.option("--smtp-delay-ms", type=click.IntRange(min=0), default=0, show_default=True)
def sinks(smtp_port: int, http_port: int, smtp_delay_ms: int) -> None:
    """Local SMTP and HTTP sinks that record what fintask sends (demo and tests)."""
    from app.sinks import serve_sinks

    directory = load_settings().var_dir / "sinks"
    click.echo(f"sinks: SMTP on {smtp_port}, HTTP on {http_port}, writing to {directory}")
    serve_sinks(
        directory=directory,
        smtp_port=smtp_port,
        http_port=http_port,
        smtp_delay_s=smtp_delay_ms / 1000,
    )
