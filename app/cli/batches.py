"""``fintask batches``: batch progress (rate, ETA), failed members and cancel in a shell,
through the same ``app.control`` functions as the HTTP API (cancel audited)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import click

from app.cli.common import JSON_OPTION, acting_operator, print_json
from app.control.actions import UnknownTarget, WrongState
from app.control.batches import BatchView, batch_view, failed_page, recent_batches
from app.cursors import InvalidCursor
from app.text_table import table
from chunking import BatchStoreUnavailable, UnknownBatch
from pipelines.batches import BATCHES


@click.group()
def batches() -> None:
    """Batches: progress with rate and ETA, failed members, cancel."""


@batches.command("list")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@JSON_OPTION
def batches_list(limit: int, as_json: bool) -> None:
    """The most recently created batches, newest first, with their progress."""
    with _readable_errors():
        views = recent_batches(BATCHES, now=_now(), limit=limit)
    if as_json:
        print_json({"items": [v.as_dict() for v in views], "next_cursor": None})
        return
    if not views:
        click.echo("no batch is kept (completed batches expire after a week)")
        return
    rows = [
        (v.progress.batch_id, v.progress.name, v.progress.state, _share(v), v.progress.succeeded,
         v.progress.failed, v.progress.pending, _rate(v), _eta(v))
        for v in views
    ]  # fmt: skip
    header = ("BATCH", "NAME", "STATE", "DONE", "SUCCEEDED", "FAILED", "PENDING", "RATE", "ETA")
    click.echo(table(header, *rows))


@batches.command("show")
@click.argument("batch_id")
@JSON_OPTION
def batches_show(batch_id: str, as_json: bool) -> None:
    """One batch: its counts, failures by kind, rate and ETA."""
    with _readable_errors():
        view = batch_view(BATCHES, batch_id, now=_now())
    if as_json:
        print_json(view.as_dict())
        return
    shown = view.as_dict()
    for key in ("batch_id", "name", "state", "added", "total", "succeeded", "failed",
                "pending", "created_at", "sealed_at", "completed_at", "cancelled_at"):  # fmt: skip
        click.echo(f"{key}: {'-' if shown[key] is None else shown[key]}")
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(view.progress.failed_by_kind.items()))
    click.echo(f"failed by kind: {kinds or '-'}")
    click.echo(f"done: {_share(view)}  rate: {_rate(view)}  eta: {_eta(view)}")


@batches.command("failed")
@click.argument("batch_id")
@click.option("--cursor", help="the next_cursor a previous page printed")
@JSON_OPTION
def batches_failed(batch_id: str, cursor: str | None, as_json: bool) -> None:
    """A page of a batch's failed members: ordinal, message id, kind, reason (redacted)."""
    with _readable_errors():
        try:
            page = failed_page(BATCHES, batch_id, cursor=cursor)
        except InvalidCursor as error:
            raise click.BadParameter(str(error), param_hint="--cursor") from None
    if as_json:
        print_json({"items": [vars(m) for m in page.items], "next_cursor": page.next_cursor})
        return
    if not page.items and cursor is None:
        click.echo(f"no member of batch {batch_id} has failed")
        return
    rows = [(m.ordinal, m.message_id, m.kind, m.reason) for m in page.items]
    click.echo(table(("ORDINAL", "MESSAGE ID", "KIND", "REASON"), *rows))
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}")


@batches.command("cancel")
@click.argument("batch_id")
@JSON_OPTION
def batches_cancel(batch_id: str, as_json: bool) -> None:
    """Cancel a batch: its pending members count as cancelled, on_failure fires (audited)."""
    with acting_operator() as operator, _readable_errors():
        try:
            cancelled = operator.cancel_batch(batch_id)
        except (UnknownTarget, WrongState) as error:
            raise click.ClickException(str(error)) from None
    if as_json:
        print_json({"batch_id": batch_id, "cancelled_members": cancelled})
    else:
        click.echo(f"cancelled batch {batch_id}: {cancelled} pending members counted as cancelled")


@contextmanager
def _readable_errors() -> Iterator[None]:
    """An unknown batch, or the batch store not answering, in one line."""
    try:
        yield
    except UnknownBatch as error:
        raise click.ClickException(str(error)) from None
    except BatchStoreUnavailable as error:
        raise click.ClickException(f"the batch store is unavailable: {error}") from None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _share(view: BatchView) -> str:
    total = view.progress.total
    shown = f"{view.done}/{total if total is not None else '?'}"
    return shown if view.percent is None else f"{shown} ({view.percent:.1f}%)"


def _rate(view: BatchView) -> str:
    return "-" if view.rate_per_s is None else f"{view.rate_per_s:.1f}/s"


def _eta(view: BatchView) -> str:
    return "-" if view.eta_s is None else f"{view.eta_s:.0f} s"
