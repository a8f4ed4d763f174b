"""``fintask outbox``: outbox messages that can never be sent, and how many wait to be."""

from __future__ import annotations

import click

from app.cli.common import JSON_OPTION, print_json
from app.db.session import new_session
from app.outbox import failed_messages, outbox_counts
from app.text_table import table


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@JSON_OPTION
def outbox(limit: int, as_json: bool) -> None:
    """Outbox messages that could not be sent and why, and how many still wait to be sent.

    A failed message was committed with its rows but refused when it was to leave (an actor
    this release does not declare, arguments the guardrails refuse); its work has not run.
    """

    with new_session() as session:
        counts = outbox_counts(session)
        failed = failed_messages(session, limit=limit)
    if as_json:
        print_json(
            {
                "unsent": counts.unsent,
                "failed": counts.failed,
                "items": [message.as_dict() for message in failed],
                "next_cursor": None,
            }
        )
        return
    click.echo(f"waiting to be sent: {counts.unsent}  failed: {counts.failed}")
    if not failed:
        return
    rows = [
        (m.id, m.message_id, m.actor_name, m.queue_name or "-", m.as_dict()["failed_at"], m.error)
        for m in failed
    ]
    click.echo(table(("ID", "MESSAGE ID", "ACTOR", "QUEUE", "FAILED AT", "ERROR"), *rows))
