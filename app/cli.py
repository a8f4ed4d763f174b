"""The ``fintask`` command: run the processes, migrate, seed, and start work from a shell."""

from __future__ import annotations

import json
import os
import sys

import click

from app.cli_runs import reports, runs
from app.cli_schedule import schedule
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


main.add_command(reports)
main.add_command(runs)
main.add_command(schedule)


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


# --- Inspection (issue 8): what Celery's inspect and purge, and Flower, gave ------------------


def _queue_names(queue: str | None) -> list[str]:
    """The declared queues to look at: all of them, or the one ``--queue`` names."""
    import dramatiq

    import actors  # noqa: F401  (declares every actor, and so every queue)
    from app.queues import canonical_queue_names

    names = canonical_queue_names(dramatiq.get_broker().get_declared_queues())
    if queue is not None:
        if queue not in names:
            known = ", ".join(names)
            message = f"{queue!r} is not a queue of fintask ({known})"
            raise click.BadParameter(message, param_hint="--queue")
        names = [queue]
    return names


def _print_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _table(header: tuple[str, ...], *rows: tuple[object, ...]) -> str:
    cells = [tuple(map(str, row)) for row in (header, *rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


_JSON = click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
_QUEUE = click.option("--queue", help="only this queue (default: every declared queue)")


@main.command()
@_JSON
def queues(as_json: bool) -> None:
    """Messages per queue (ready, delayed, dead), the oldest one's age, and live consumers."""
    from app.inspection import consumers_alive, queue_stats
    from app.redis_client import get_redis

    names = _queue_names(None)
    client = get_redis()
    stats = queue_stats(client, names)
    alive = consumers_alive(client, heartbeat_timeout_ms=load_settings().heartbeat_timeout_ms)
    if as_json:
        _print_json({"queues": [q.as_dict() for q in stats], "consumers_alive": alive})
        return
    rows = [(q.queue_name, q.ready, q.delayed, q.dead, f"{q.oldest_age_s:.1f}s") for q in stats]
    click.echo(_table(("QUEUE", "READY", "DELAYED", "DEAD", "OLDEST"), *rows))
    click.echo(f"consumers alive: {alive}")


@main.group()
def dlq() -> None:
    """Dead letters: messages that ran out of retries. List, show, requeue, purge."""


@dlq.command("list")
@_QUEUE
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@_JSON
def dlq_list(queue: str | None, limit: int, as_json: bool) -> None:
    """The oldest dead letters first."""
    from app.inspection import list_dead_letters
    from app.redis_client import get_redis

    names = _queue_names(queue)
    client = get_redis()
    letters = list_dead_letters(client, names, limit=limit)
    if as_json:
        _print_json([letter.as_dict() for letter in letters])
        return
    if not letters:
        click.echo("no dead letters")
        return
    rows = [
        (d.message_id, d.queue_name, d.actor_name, d.retries, d.as_dict()["dead_at"])
        for d in letters
    ]
    click.echo(_table(("MESSAGE ID", "QUEUE", "ACTOR", "RETRIES", "DEAD AT"), *rows))


@dlq.command("show")
@click.argument("message_id")
@_JSON
def dlq_show(message_id: str, as_json: bool) -> None:
    """One dead letter with its arguments and options."""
    from app.inspection import find_dead_letter
    from app.redis_client import get_redis

    names = _queue_names(None)
    client = get_redis()
    letter = find_dead_letter(client, names, message_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {message_id}")
    details = letter.as_dict(with_message=True)
    if as_json:
        _print_json(details)
        return
    for key, value in details.items():
        if key != "message":
            click.echo(f"{key}: {value}")
    click.echo("message: " + json.dumps(letter.message, indent=2))


@dlq.command("requeue")
@click.argument("message_id", required=False)
@click.option("--all", "every", is_flag=True, help="requeue every dead letter (of --queue)")
@_QUEUE
@_JSON
def dlq_requeue(message_id: str | None, every: bool, queue: str | None, as_json: bool) -> None:
    """Move dead letters back to their ready queue, with their retries reset."""
    from app.inspection import find_dead_letter, requeue_all, requeue_dead_letter
    from app.redis_client import get_redis

    if (message_id is None) == (not every):
        raise click.UsageError("give a MESSAGE_ID or --all, not both")
    names = _queue_names(queue)
    client = get_redis()
    if every:
        outcomes = requeue_all(client, names)
        if as_json:
            _print_json(outcomes)
        else:
            click.echo(", ".join(f"{n} {outcome}" for outcome, n in outcomes.items()))
        return
    assert message_id is not None
    letter = find_dead_letter(client, names, message_id)
    if letter is None:
        raise click.ClickException(f"no dead letter {message_id}")
    outcome = requeue_dead_letter(client, letter.queue_name, letter.redis_id)
    if as_json:
        _print_json({**letter.as_dict(), "outcome": outcome})
    elif outcome != "requeued":
        raise click.ClickException(f"message {message_id} was not requeued: {outcome}")
    else:
        click.echo(f"requeued {message_id} to {letter.queue_name}")


@dlq.command("purge")
@_QUEUE
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@_JSON
def dlq_purge(queue: str | None, yes: bool, as_json: bool) -> None:
    """Delete dead letters for good (asks first unless --yes)."""
    from app.inspection import dead_letter_counts, purge_dead_letters
    from app.redis_client import get_redis

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
        _print_json({"purged": purged})
    else:
        click.echo(f"purged {sum(purged.values())} dead letters")


@main.command()
@click.option("--status", help="only jobs in this status (queued, polling, running, done, failed)")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@_JSON
def jobs(status: str | None, limit: int, as_json: bool) -> None:
    """Asynchronous API jobs, most recently updated first, and how many are in each status."""
    from app.db.models import JobStatus
    from app.db.session import new_session
    from app.inspection import job_counts, list_jobs

    if status is not None and status not in {s.value for s in JobStatus}:
        known = ", ".join(s.value for s in JobStatus)
        raise click.BadParameter(
            f"{status!r} is not a job status ({known})", None, None, "--status"
        )
    with new_session() as session:
        counts = job_counts(session)
        rows = list_jobs(session, status=status, limit=limit)
    if as_json:
        _print_json({"counts": counts, "jobs": [job.as_dict() for job in rows]})
        return
    click.echo("  ".join(f"{name}: {n}" for name, n in counts.items()))
    table = [
        (j.id, j.kind, j.account_id, j.status, f"{j.progress}%", j.updated_at, j.error or "")
        for j in rows
    ]
    click.echo(_table(("ID", "KIND", "ACCOUNT", "STATUS", "PROGRESS", "UPDATED", "ERROR"), *table))
