"""``fintask ping``, ``notify`` and ``accounts link``: start work from a shell."""

from __future__ import annotations

import uuid

import click
from sqlalchemy.exc import IntegrityError, NoResultFound

import actors.maintenance
from app import health
from app.cli.common import JSON_OPTION, print_json, with_broker
from app.db.session import transaction
from app.redis_client import get_redis
from pipelines.accounts import link_account
from pipelines.notifications import Channel
from pipelines.notifications import notify as create_notification


@click.command()
@with_broker
@click.option("--timeout", type=float, default=10.0, show_default=True, help="seconds to wait")
@JSON_OPTION
def ping(timeout: float, as_json: bool) -> None:
    """Send a ping through the queue and wait for a worker to answer it.

    With ``--json``, a health check reads which worker answered; nobody answering is still the
    error (status 1) it is without it.
    """

    token = health.new_ping_token()
    actors.maintenance.ping.send(token)
    answered_by = health.wait_for_pong(get_redis(), token, timeout_s=timeout)
    if answered_by is None:
        raise click.ClickException(f"no worker answered within {timeout:g} s")
    if as_json:
        print_json({"answered_by": answered_by})
    else:
        click.echo(f"pong from {answered_by}")


@click.command()
@with_broker
@click.option("--user", "user_id", type=int, required=True, help="the user's id")
@click.option("--kind", default="manual", show_default=True, help="what the notification is about")
@click.option(
    "--channel", type=click.Choice(["email", "push", "webhook"]), default="email", show_default=True
)
@click.option("--subject", default="A message from fintask", show_default=True)
@click.option("--body", default="", help="the text (default: a line naming the kind)")
@click.option("--urgent", is_flag=True, help="send through the urgent queue")
@click.option("--dedup-key", help="notifications with the same key are sent once")
@JSON_OPTION
def notify(
    user_id: int,
    kind: str,
    channel: str,
    subject: str,
    body: str,
    urgent: bool,
    dedup_key: str | None,
    as_json: bool,
) -> None:
    """Notify a user; sending happens in a worker, after the row is committed.

    ``--json`` names the key the notification was made under (a fresh one unless
    ``--dedup-key`` was given): notifying again with it is how a script retries safely.
    """

    dedup_key = dedup_key or f"{kind}:{uuid.uuid4()}"
    try:
        with transaction() as session:
            notification_id = create_notification(
                session,
                user_id=user_id,
                kind=kind,
                channel=Channel(channel),
                dedup_key=dedup_key,
                subject=subject,
                body=body or f"fintask notification: {kind}",
                urgent=urgent,
            )
    except NoResultFound:
        raise click.ClickException(f"user {user_id} does not exist") from None
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        print_json({"notification_id": notification_id, "status": "queued", "dedup_key": dedup_key})
    else:
        click.echo(f"notification {notification_id} queued")


@click.group()
def accounts() -> None:
    """Provider accounts: link them."""


@accounts.command("link")
@with_broker
@click.option("--user", "user_id", type=int, required=True, help="the user's id")
@click.option("--external-id", required=True, help="the provider's id of the account")
@click.option("--provider", default="sandbox", show_default=True)
@click.option("--name", default="", help="a display name")
@JSON_OPTION
def accounts_link(user_id: int, external_id: str, provider: str, name: str, as_json: bool) -> None:
    """Link an account to a user; a fraud check runs in a worker after the commit."""

    try:
        with transaction() as session:
            account_id = link_account(
                session, user_id=user_id, provider=provider, external_id=external_id, name=name
            )
    except IntegrityError:
        raise click.ClickException(f"user {user_id} does not exist") from None
    if as_json:
        print_json(
            {
                "account_id": account_id,
                "status": "linked",
                "provider": provider,
                "external_id": external_id,
            }
        )
    else:
        click.echo(f"account {account_id} linked")
