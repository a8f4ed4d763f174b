"""``fintask queues``, ``dlq`` and ``jobs``: what Celery's ``inspect`` and ``purge`` gave."""

from __future__ import annotations

import json

import click

import actors  # noqa: F401  (declares every actor, and so every queue)
from app.broker import setup_broker
from app.broker_features import rabbitmq_broker
from app.cli.common import (
    JSON_OPTION,
    acting_operator,
    print_json,
    usage_errors,
)
from app.control_state import read_state
from app.db.models import JobStatus
from app.db.session import new_session
from app.inspection import (
    consumers_alive,
    dead_letter_counts,
    find_dead_letter,
    job_counts,
    list_dead_letters,
    list_jobs,
    purge_dead_letters,
    queue_stats,
    requeue_all,
    requeue_dead_letter,
)
from app.queues import canonical_queue_names
from app.redis_client import get_redis
from app.settings import load_settings
from app.text_table import table

_QUEUE = click.option("--queue", help="only this queue (default: every declared queue)")


def _queue_names(queue: str | None) -> list[str]:
    """The declared queues to look at: all of them, or the one ``--queue`` names."""

    names = canonical_queue_names(setup_broker().get_declared_queues())
    if queue is not None:
        if queue not in names:
            known = ", ".join(names)
            message = f"{queue!r} is not a queue of fintask ({known})"
            raise click.BadParameter(message, param_hint="--queue")
        names = [queue]
    return names


@click.group(invoke_without_command=True)
@JSON_OPTION
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """Messages per queue (ready, delayed, dead), the oldest one's age, and live consumers."""

    if ctx.invoked_subcommand is not None:
        return
    names = _queue_names(None)
    client = get_redis()
    stats = queue_stats(client, names)
    paused = read_state(client).paused
    alive = consumers_alive(client, heartbeat_timeout_ms=load_settings().heartbeat_timeout_ms)
    if as_json:
        listed = [{**q.as_dict(), "paused": q.queue_name in paused} for q in stats]
        print_json({"items": listed, "next_cursor": None, "consumers_alive": alive})
        return
    rows = [
        (q.queue_name, q.ready, q.delayed, q.dead,
         "—" if q.oldest_age_s is None else f"{q.oldest_age_s:.1f}s",
         "paused" if q.queue_name in paused else "")
        for q in stats
    ]  # fmt: skip
    click.echo(table(("QUEUE", "READY", "DELAYED", "DEAD", "OLDEST", ""), *rows))
    click.echo(f"consumers alive: {alive}")
    if rabbitmq_broker() is not None:
        click.echo("on RabbitMQ, READY and DELAYED leave out the messages workers hold")


@queues.command("pause")
@click.argument("queue_name")
@JSON_OPTION
def queues_pause(queue_name: str, as_json: bool) -> None:
    """Stop every worker starting the queue's messages; new ones are still accepted."""
    with acting_operator() as operator:
        changed = usage_errors(lambda: operator.pause_queue(queue_name), "QUEUE_NAME")
    if as_json:
        print_json({"queue_name": queue_name, "paused": True, "changed": changed})
    else:
        click.echo(f"{queue_name}: paused" + ("" if changed else " already"))


@queues.command("resume")
@click.argument("queue_name")
@JSON_OPTION
def queues_resume(queue_name: str, as_json: bool) -> None:
    """Let the workers start the queue's messages again."""
    with acting_operator() as operator:
        changed = usage_errors(lambda: operator.resume_queue(queue_name), "QUEUE_NAME")
    if as_json:
        print_json({"queue_name": queue_name, "paused": False, "changed": changed})
    else:
        click.echo(f"{queue_name}: " + ("resumed" if changed else "was not paused"))


@queues.command("purge")
@click.argument("queue_name")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@JSON_OPTION
def queues_purge(queue_name: str, yes: bool, as_json: bool) -> None:
    """Delete every ready message of a queue (asks first unless --yes)."""
    _queue_names(queue_name)
    if not yes:
        click.confirm(f"Delete every ready message of {queue_name}?", abort=True, err=True)
    with acting_operator() as operator:
        purged = operator.purge_queue(queue_name)
    if as_json:
        print_json({"queue_name": queue_name, "purged": purged})
    else:
        click.echo(f"purged {purged} ready messages of {queue_name}")


@click.group()
def dlq() -> None:
    """Dead letters: messages that ran out of retries. List, show, requeue, purge."""


@dlq.command("list")
@_QUEUE
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@JSON_OPTION
def dlq_list(queue: str | None, limit: int, as_json: bool) -> None:
    """The oldest dead letters first."""

    names = _queue_names(queue)
    client = get_redis()
    letters = list_dead_letters(client, names, limit=limit)
    if as_json:
        print_json({"items": [letter.as_dict() for letter in letters], "next_cursor": None})
        return
    if not letters:
        click.echo("no dead letters")
        return
    rows = [
        (
            d.message_id,
            d.queue_name,
            d.actor_name,
            d.retries,
            d.as_dict()["dead_at"],
            _shortened(d.reason or ""),
        )
        for d in letters
    ]
    click.echo(table(("MESSAGE ID", "QUEUE", "ACTOR", "RETRIES", "DEAD AT", "REASON"), *rows))


@dlq.command("show")
@click.argument("message_id")
@JSON_OPTION
def dlq_show(message_id: str, as_json: bool) -> None:
    """One dead letter: why it died, its arguments and options (or its raw payload)."""

    names = _queue_names(None)
    client = get_redis()
    letter = find_dead_letter(client, names, message_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {message_id}")
    details = letter.as_dict(with_message=True)
    if as_json:
        print_json(details)
        return
    for key, value in details.items():
        if key != "message":
            click.echo(f"{key}: {value}")
    if "message" in details:
        click.echo("message: " + json.dumps(letter.message, indent=2))


def _shortened(text: str, chars: int = 60) -> str:
    """``text`` on one line of at most ``chars`` characters, for a table cell."""
    line = " ".join(text.split())
    return line if len(line) <= chars else line[: chars - 1] + "…"


@dlq.command("requeue")
@click.argument("message_id", required=False)
@click.option("--all", "every", is_flag=True, help="requeue every dead letter (of --queue)")
@_QUEUE
@JSON_OPTION
def dlq_requeue(message_id: str | None, every: bool, queue: str | None, as_json: bool) -> None:
    """Move dead letters back to their ready queue, with their retries reset.

    Exits with status 1 when nothing was requeued (no dead letters, or each one moved
    meanwhile), so that a script running it notices.
    """

    if (message_id is None) == (not every):
        raise click.UsageError("give a MESSAGE_ID or --all, not both")
    names = _queue_names(queue)
    client = get_redis()
    if every:
        outcomes = requeue_all(client, names)
        if as_json:
            print_json(outcomes)
        else:
            click.echo(", ".join(f"{n} {outcome}" for outcome, n in outcomes.items()))
        if not outcomes["requeued"]:
            raise click.exceptions.Exit(1)  # nothing requeued: a script must notice
        return
    assert message_id is not None
    letter = find_dead_letter(client, names, message_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {message_id}")
    outcome = requeue_dead_letter(client, letter.queue_name, letter.redis_id)
    if as_json:
        print_json({**letter.as_dict(), "outcome": outcome})
        if outcome != "requeued":
            raise click.exceptions.Exit(1)
    elif outcome != "requeued":
        raise click.ClickException(f"message {message_id} was not requeued: {outcome}")
    else:
        click.echo(f"requeued {message_id} to {letter.queue_name}")


@dlq.command("purge")
@_QUEUE
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@JSON_OPTION
def dlq_purge(queue: str | None, yes: bool, as_json: bool) -> None:
    """Delete dead letters for good (asks first unless --yes)."""

    names = _queue_names(queue)
    client = get_redis()
    counts = {name: n for name, n in dead_letter_counts(client, names).items() if n}
    if counts and not yes:
        listed = ", ".join(f"{n} in {name}" for name, n in counts.items())
        click.confirm(
            f"Delete {sum(counts.values())} dead letters ({listed})?", abort=True, err=True
        )
    purged = {name: n for name, n in purge_dead_letters(client, list(counts)).items() if n}
    if as_json:
        print_json({"purged": purged})
    else:
        click.echo(f"purged {sum(purged.values())} dead letters")


@click.command()
@click.option("--status", help="only jobs in this status (queued, polling, running, done, failed)")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@JSON_OPTION
def jobs(status: str | None, limit: int, as_json: bool) -> None:
    """Asynchronous API jobs, most recently updated first, and how many are in each status."""

    if status is not None and status not in {s.value for s in JobStatus}:
        known = ", ".join(s.value for s in JobStatus)
        raise click.BadParameter(
            f"{status!r} is not a job status ({known})", None, None, "--status"
        )
    with new_session() as session:
        counts = job_counts(session)
        rows = list_jobs(session, status=status, limit=limit)
    if as_json:
        items = [job.as_dict() for job in rows]
        print_json({"counts": counts, "items": items, "next_cursor": None})
        return
    click.echo("  ".join(f"{name}: {n}" for name, n in counts.items()))
    listed = [
        (j.id, j.kind, j.account_id, j.status, f"{j.progress}%", j.updated_at, j.error or "")
        for j in rows
    ]
    click.echo(table(("ID", "KIND", "ACCOUNT", "STATUS", "PROGRESS", "UPDATED", "ERROR"), *listed))
