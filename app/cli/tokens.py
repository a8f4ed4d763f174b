"""``fintask tokens`` and ``fintask audit``: who may call the HTTP API, and what operators did.

Making and revoking a token are audited like any operator action, each in the transaction
that makes the change.
"""

from __future__ import annotations

import click

from app.cli.common import JSON_OPTION, cli_identity, print_json
from app.control import audit as audit_trail
from app.control import tokens as api_tokens
from app.cursors import InvalidCursor
from app.db.session import new_session, transaction
from app.text_table import table


@click.group()
def tokens() -> None:
    """API tokens: create, list and revoke who may call the HTTP API."""


@tokens.command("create")
@click.option("--name", required=True, help="what the token is for; the audit trail names it")
@click.option("--role", required=True, type=click.Choice(api_tokens.ROLES))
@JSON_OPTION
def tokens_create(name: str, role: str, as_json: bool) -> None:
    """Make a token and print it, once: it is stored only as a hash."""
    with transaction() as session:
        try:
            token, _ = api_tokens.create_token(session, name=name, role=role)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--name") from None
        audit_trail.record(
            session, who=cli_identity(), action="token.create", target=name, detail={"role": role}
        )
    if as_json:
        print_json({"name": name, "role": role, "token": token})
    else:
        click.echo(token)
    click.echo(f"the {role} token {name!r}: store it now, it is not shown again", err=True)


@tokens.command("list")
@JSON_OPTION
def tokens_list(as_json: bool) -> None:
    """Every token with its role and when it was made, last used and revoked (never a hash)."""
    with new_session() as session:
        listed = [api_tokens.as_dict(token) for token in api_tokens.list_tokens(session)]
    if as_json:
        print_json({"items": listed, "next_cursor": None})
        return
    if not listed:
        click.echo("no tokens: make one with `fintask tokens create`")
        return
    columns = ("name", "role", "created_at", "last_used_at", "revoked_at")
    rows = [tuple(token[column] or "-" for column in columns) for token in listed]
    click.echo(table(("NAME", "ROLE", "CREATED", "LAST USED", "REVOKED"), *rows))


@tokens.command("revoke")
@click.argument("name")
@JSON_OPTION
def tokens_revoke(name: str, as_json: bool) -> None:
    """Revoke the token NAME: the API refuses it from its next request on."""
    with transaction() as session:
        if not api_tokens.revoke_token(session, name):
            raise click.ClickException(f"no live token named {name!r} (see `fintask tokens list`)")
        audit_trail.record(session, who=cli_identity(), action="token.revoke", target=name)
    if as_json:
        print_json({"name": name, "revoked": True})
    else:
        click.echo(f"revoked {name!r}")


@click.command()
@click.option("--limit", type=click.IntRange(min=1, max=1_000), default=50, show_default=True)
@click.option("--action", help="only events of this action (queue.pause, token.create, ...)")
@click.option("--cursor", help="the next page: the cursor the previous page printed")
@JSON_OPTION
def audit(limit: int, action: str | None, cursor: str | None, as_json: bool) -> None:
    """What operators did, newest first: who, which action, on what, how many messages."""
    with new_session() as session:
        try:
            events, next_cursor = audit_trail.list_events(
                session, cursor=cursor, limit=limit, action=action
            )
        except InvalidCursor as error:
            raise click.BadParameter(str(error), param_hint="--cursor") from None
        listed = [audit_trail.as_dict(event) for event in events]
    if as_json:
        print_json({"items": listed, "next_cursor": next_cursor})
        return
    if not listed:
        click.echo("no audit events")
        return
    columns = ("id", "at", "who", "action", "target", "count")
    rows = [tuple(event[column] for column in columns) for event in listed]
    click.echo(table(("ID", "AT", "WHO", "ACTION", "TARGET", "COUNT"), *rows))
    if next_cursor is not None:
        more = f" --action {action}" if action is not None else ""
        click.echo(f"more: fintask audit --cursor {next_cursor}{more}")
