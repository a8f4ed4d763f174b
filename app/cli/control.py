"""``fintask workers``, ``messages``, ``limits`` and the queue actions: the control plane in a
shell, through the same ``app.control`` functions as the HTTP API (each action audited)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click

import actors  # noqa: F401  (declares every actor, and so every queue)
from app.broker import setup_broker
from app.cli.common import (
    JSON_OPTION,
    acting_operator,
    print_json,
    usage_errors,
)
from app.control.actions import (
    MessageMoved,
    Operator,
    UnknownTarget,
    WrongState,
    check_queue,
    queue_names,
    rate_limits,
)
from app.control.masking import MaskPolicy
from app.control.messages import MessageFilter, find_message, list_messages
from app.control.workers import list_workers
from app.cursors import InvalidCursor
from app.redis_client import get_redis
from app.text_table import table

_MIB = 1024 * 1024


@click.command()
@JSON_OPTION
def workers(as_json: bool) -> None:
    """Worker processes: alive, stopped, or gone with what they left for recovery."""
    views = list_workers(get_redis(), queue_names(setup_broker()))
    if as_json:
        print_json({"items": [v.as_dict() for v in views], "next_cursor": None})
        return
    if not views:
        click.echo("no worker has published a record in the last day")
        return
    rows = []
    for view in views:
        shown = view.as_dict()
        state: str = view.state
        if shown["waiting_for_recovery"]:
            state += f" ({shown['waiting_for_recovery']} waiting for recovery)"
        rows.append(
            (
                view.worker_id[:8],
                state,
                f"{shown['host']}:{shown['pid']}",
                shown["process_type"],
                ",".join(shown["queues"]),
                f"{shown['threads']}/{shown['prefetch']}",
                shown["processed"],
                shown["failed"],
                f"{(shown['rss_bytes'] or 0) / _MIB:.0f}",
                len(shown["running"]),
                shown["heartbeat_at"],
            )
        )
    header = ("WORKER", "STATE", "PROCESS", "TYPE", "QUEUES", "THREADS/PREFETCH", "DONE",
              "FAILED", "RSS MIB", "RUNNING", "LAST HEARTBEAT")  # fmt: skip
    click.echo(table(header, *rows))


@click.group()
def messages() -> None:
    """Messages in the queues: list by state, show one, cancel, requeue, delete, run now."""


@messages.command("list")
@click.option("--queue", required=True, help="a queue fintask declares")
@click.option(
    "--state",
    type=click.Choice(["ready", "delayed", "retrying", "held", "dead"]),
    default="ready",
    show_default=True,
)
@click.option("--newest", is_flag=True, help="newest first (default: oldest first)")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", help="the next_cursor a previous page printed")
@click.option("--actor", help="only this actor's messages")
@click.option("--exception", help="only those whose last exception is of this class")
@click.option("--min-age-s", type=click.FloatRange(min=0), help="only those sent this long ago")
@JSON_OPTION
def messages_list(
    queue: str,
    state: str,
    newest: bool,
    limit: int,
    cursor: str | None,
    actor: str | None,
    exception: str | None,
    min_age_s: float | None,
    as_json: bool,
) -> None:
    """A queue's messages in one state, filtered if asked; arguments masked except ids."""
    usage_errors(lambda: check_queue(setup_broker(), queue), "--queue")
    try:
        page = list_messages(
            get_redis(),
            queue,
            state=state,  # type: ignore[arg-type]
            newest_first=newest,
            cursor=cursor,
            limit=limit,
            policy=MaskPolicy(),
            where=MessageFilter.of(actor=actor, exception=exception, min_age_s=min_age_s),
        )
    except InvalidCursor as error:
        raise click.BadParameter(str(error), param_hint="--cursor") from None
    items = [m.as_dict() for m in page.items]
    if as_json:
        print_json({"items": items, "next_cursor": page.next_cursor, "scanned": page.scanned})
        return
    rows = [
        (m["message_id"], m["actor_name"], m["state"], m["sent_at"], m.get("eta") or "",
         _arguments(m))
        for m in items
    ]  # fmt: skip
    click.echo(table(("MESSAGE ID", "ACTOR", "STATE", "SENT", "ETA", "ARGUMENTS"), *rows))
    if page.scanned > len(items):
        click.echo(f"scanned {page.scanned} messages, showing the {len(items)} that match")
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


@messages.command("show")
@click.argument("message_id")
@JSON_OPTION
def messages_show(message_id: str, as_json: bool) -> None:
    """One message by id (or Redis id), wherever it is."""
    found = find_message(get_redis(), queue_names(setup_broker()), message_id, policy=MaskPolicy())
    if found is None:
        raise click.ClickException(f"no message {message_id} is in any queue of fintask")
    details = found.as_dict()
    if as_json:
        print_json(details)
        return
    for key, value in details.items():
        click.echo(f"{key}: {json.dumps(value) if isinstance(value, dict | list) else value}")


@messages.command("cancel")
@click.argument("message_id")
@click.option("--hard", is_flag=True, help="interrupt it at once if it is running")
@JSON_OPTION
def messages_cancel(message_id: str, hard: bool, as_json: bool) -> None:
    """Cancel a message: removed if waiting, revoked if a worker holds it."""
    with acting_operator() as operator:
        cancelled = operator.cancel(message_id, mode="hard" if hard else "soft")
    if cancelled.state is None:
        raise click.ClickException(f"no message {message_id} is in any queue of fintask")
    if cancelled.state == "dead":
        raise click.ClickException(
            f"message {message_id} is a dead letter: `fintask dlq purge` deletes dead letters"
        )
    result = {"message_id": message_id, "state": cancelled.state, "removed": cancelled.removed,
              "revoked": cancelled.revoked}  # fmt: skip
    if as_json:
        print_json(result)
        return
    done = "removed and revoked" if cancelled.removed else "revoked"
    click.echo(f"{done} {message_id} (it was {cancelled.state})")


@messages.command("requeue")
@click.argument("message_id")
@JSON_OPTION
def messages_requeue(message_id: str, as_json: bool) -> None:
    """Move a dead letter back to its ready queue, its retries reset (audited)."""
    _move(lambda operator: operator.requeue(message_id), lambda _: "requeued", as_json)


@messages.command("delete")
@click.argument("message_id")
@JSON_OPTION
def messages_delete(message_id: str, as_json: bool) -> None:
    """Delete a dead letter and its reason for good (a waiting message: cancel it)."""
    _move(lambda operator: operator.delete_dead(message_id), lambda _: "deleted", as_json)


@messages.command("run-now")
@click.argument("message_id")
@JSON_OPTION
def messages_run_now(message_id: str, as_json: bool) -> None:
    """Run a delayed or retrying message now, keeping its id: moved to the head of its ready
    queue, or, if a worker holds it, released by that worker within about 2 s."""
    _move(lambda operator: operator.run_now(message_id), _ran_now, as_json)


@messages.command("cancel-matching")
@click.argument("actor_name")
@click.option(
    "--arg",
    "arguments",
    multiple=True,
    required=True,
    metavar="NAME=VALUE",
    help="a keyword argument the messages carry (a JSON value, else text); repeatable",
)
@click.option("--yes", is_flag=True, help="cancel them (without it: only count them)")
@click.option("--hard", is_flag=True, help="interrupt the running ones at once")
@JSON_OPTION
def messages_cancel_matching(
    actor_name: str, arguments: tuple[str, ...], yes: bool, hard: bool, as_json: bool
) -> None:
    """Cancel an actor's messages whose arguments match (a dry run unless --yes)."""
    wanted = _parse_arguments(arguments)
    with acting_operator() as operator:
        count = usage_errors(
            lambda: operator.cancel_matching(
                actor_name, wanted, dry_run=not yes, mode="hard" if hard else "soft"
            ),
            "ACTOR_NAME",
        )
    if as_json:
        print_json({"actor_name": actor_name, "count": count, "dry_run": not yes})
    elif yes:
        click.echo(f"cancelled {count} messages of {actor_name}")
    else:
        click.echo(f"{count} messages of {actor_name} match; run again with --yes to cancel them")


@click.group(invoke_without_command=True)
@JSON_OPTION
@click.pass_context
def limits(ctx: click.Context, as_json: bool) -> None:
    """Rate limits: declared, overridden at runtime, and in force; set or clear an override."""
    if ctx.invoked_subcommand is not None:
        return
    views = rate_limits(get_redis(), setup_broker())
    if as_json:
        print_json({"items": [v.as_dict() for v in views], "next_cursor": None})
        return
    rows = [(v.actor_name, v.declared or "-", v.override or "-", v.effective) for v in views]
    click.echo(table(("ACTOR", "DECLARED", "OVERRIDE", "IN FORCE"), *rows))


@limits.command("set")
@click.argument("actor_name")
@click.argument("rate")
@JSON_OPTION
def limits_set(actor_name: str, rate: str, as_json: bool) -> None:
    """Override an actor's rate limit across the fleet (COUNT/s, /m or /h)."""
    with acting_operator() as operator:
        view = usage_errors(lambda: operator.set_rate_limit(actor_name, rate), "RATE")
    if as_json:
        print_json(view.as_dict())
    else:
        click.echo(f"{actor_name}: {view.override} in force (declared: {view.declared or 'none'})")


@limits.command("clear")
@click.argument("actor_name")
@JSON_OPTION
def limits_clear(actor_name: str, as_json: bool) -> None:
    """Remove an actor's runtime override: its declared limit applies again."""
    with acting_operator() as operator:
        changed = usage_errors(lambda: operator.clear_rate_limit(actor_name), "ACTOR_NAME")
    if as_json:
        print_json({"actor_name": actor_name, "changed": changed})
    else:
        click.echo(f"{actor_name}: " + ("override removed" if changed else "had no override"))


def _move(
    action: Callable[[Operator], MessageMoved],
    done: Callable[[MessageMoved], str],
    as_json: bool,
) -> None:
    """Run one message action and say what ``done`` calls it; a message not there or in
    another state fails saying so."""
    with acting_operator() as operator:
        try:
            moved = action(operator)
        except (UnknownTarget, WrongState) as error:
            raise click.ClickException(str(error)) from None
    if as_json:
        print_json(moved.as_dict())
    else:
        click.echo(f"{moved.message_id} ({moved.was} in {moved.queue_name}): {done(moved)}")


def _ran_now(moved: MessageMoved) -> str:
    """What running a message now did: a held one is still held when the command ends."""
    if moved.released:
        return "its worker releases it to its ready queue within about 2 s"
    return "moved to its ready queue"


def _parse_arguments(pairs: tuple[str, ...]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for pair in pairs:
        name, equals, text = pair.partition("=")
        if not equals or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--arg")
        try:
            parsed[name] = json.loads(text)
        except ValueError:
            parsed[name] = text
    return parsed


def _arguments(message: dict[str, Any]) -> str:
    shown = [json.dumps(a) for a in message.get("args", [])]
    shown += [f"{k}={json.dumps(v)}" for k, v in message.get("kwargs", {}).items()]
    return " ".join(shown)
