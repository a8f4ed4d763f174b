"""The CLI starts work with readable errors; it never prints a traceback for a user mistake."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json

from click.testing import CliRunner
from rich.console import Console

from app.cli import runs
from app.cli.main import main
from chunking import Progress


def test_notify_queues_a_notification_for_a_worker(user, stub_broker):
    result = CliRunner().invoke(main, ["notify", "--user", str(user.id), "--kind", "statement"])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("notification ")
    assert stub_broker.queues["emails"].qsize() == 1


def test_notify_names_a_missing_user(database, stub_broker):
    result = CliRunner().invoke(main, ["notify", "--user", "404"])

    assert result.exit_code == 1
    assert "Error: user 404 does not exist" in result.output
    assert stub_broker.queues["emails"].qsize() == 0


def test_a_push_to_a_user_without_a_token_is_refused(database, stub_broker):
    from app.db.models import User
    from app.db.session import transaction

    with transaction() as session:
        quiet = User(email="bob@example.com", name="Bob")
        session.add(quiet)

    result = CliRunner().invoke(main, ["notify", "--user", str(quiet.id), "--channel", "push"])

    assert result.exit_code == 1
    assert f"Error: user {quiet.id} has no push address" in result.output


def test_linking_an_account_queues_its_fraud_check(user, stub_broker):
    result = CliRunner().invoke(
        main, ["accounts", "link", "--user", str(user.id), "--external-id", "acc-9"]
    )

    assert result.exit_code == 0, result.output
    assert stub_broker.queues["fraud"].qsize() == 1


def test_linking_for_a_missing_user_is_a_readable_error(database, stub_broker):
    result = CliRunner().invoke(main, ["accounts", "link", "--user", "404", "--external-id", "x"])

    assert result.exit_code == 1
    assert "Error: user 404 does not exist" in result.output


class FakeClock:
    """``time`` for ``app.cli.runs``: sleeping moves the clock on at once."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _snapshots(run_id: int, total: int, done_at_poll: int) -> list[Progress]:
    """A run's progress at each poll: 10 items a second since it started, then done."""
    moment = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    running = [
        Progress(
            run_id=run_id,
            name="weekly_report_chunk",
            status="running",
            seq=poll,
            processed=5 * poll,
            estimated_total=total,
            percent=100 * 5 * poll / total,
            rate_per_s=10.0 if poll else None,
            eta_s=(total - 5 * poll) / 10 if poll else None,
            error=None,
            created_at=moment,
            updated_at=moment,
            finished_at=None,
        )
        for poll in range(done_at_poll)
    ]
    done = dataclasses.replace(
        running[-1], status="done", processed=total, percent=100.0, eta_s=0.0
    )
    return [*running, done]


def test_waiting_for_a_report_run_prints_done_total_rate_and_eta_every_few_seconds(
    database, stub_broker, monkeypatch, redis_env
):
    # Given a run polled every 0.5 s for 12 s (24 polls) before it is done,
    snapshots = iter(_snapshots(1, total=200, done_at_poll=24))
    monkeypatch.setattr(runs, "run_progress", lambda session, run_id: next(snapshots))
    monkeypatch.setattr(runs, "time", FakeClock())

    # when `--wait` writes to no terminal (CliRunner's output is none),
    result = CliRunner().invoke(main, ["reports", "send", "--week", "2026-W47", "--wait"])

    # then it prints a plain line at the start and every 5 s, and how the run ended.
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "run 1: weekly report for 2026-W47",
        "run 1: 0/200 users (0%), ? users/s, eta ?",
        "run 1: 50/200 users (25%), 10.0 users/s, eta 0:00:15",
        "run 1: 100/200 users (50%), 10.0 users/s, eta 0:00:10",
        "run 1 done: 200 processed",
    ]


def test_a_waited_run_that_stops_unfinished_is_an_error(
    database, stub_broker, monkeypatch, redis_env
):
    paused = dataclasses.replace(_snapshots(1, total=200, done_at_poll=2)[-1], status="paused")
    monkeypatch.setattr(runs, "run_progress", lambda session, run_id: paused)

    result = CliRunner().invoke(main, ["reports", "send", "--week", "2026-W47", "--wait"])

    assert result.exit_code == 1
    assert result.output.splitlines()[-2:] == [
        "run 1 paused: 200 processed",
        "Error: run 1 ended paused",
    ]


def test_waiting_as_json_prints_only_the_runs_final_progress(
    database, stub_broker, monkeypatch, redis_env
):
    snapshots = _snapshots(1, total=200, done_at_poll=24)
    monkeypatch.setattr(runs, "run_progress", lambda session, run_id: snapshots.pop(0))
    monkeypatch.setattr(runs, "time", FakeClock())
    final = snapshots[-1]

    result = CliRunner().invoke(main, ["reports", "send", "--week", "2026-W47", "--wait", "--json"])

    # No bar, no lines: one document, the shape `fintask runs --json` lists, in RFC 3339 (UTC).
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        **dataclasses.asdict(final),
        "created_at": "2026-11-30T00:00:00.000Z",
        "updated_at": "2026-11-30T00:00:00.000Z",
    }
    assert final.status == "done"


def test_a_waited_run_that_stops_unfinished_prints_its_progress_then_the_same_error(
    database, stub_broker, monkeypatch, redis_env
):
    paused = dataclasses.replace(_snapshots(1, total=200, done_at_poll=2)[-1], status="paused")
    monkeypatch.setattr(runs, "run_progress", lambda session, run_id: paused)

    result = CliRunner().invoke(main, ["reports", "send", "--week", "2026-W47", "--wait", "--json"])

    assert result.exit_code == 1
    assert json.loads(result.stdout)["status"] == "paused"
    assert result.stderr == "Error: run 1 ended paused\n"


def test_on_a_terminal_the_run_is_a_live_bar_with_the_runs_own_rate_and_eta():
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, color_system=None, width=120)
    snapshots = _snapshots(1, total=200, done_at_poll=4)
    snapshots[-1] = dataclasses.replace(snapshots[-1], rate_per_s=12.5)

    last = runs._show_bar(iter(snapshots), console)

    assert last.status == "done"
    # Each frame erases the line (ESC [2K) and redraws it; the bar stays on the screen at the end.
    final_frame = screen.getvalue().rsplit("\x1b[2K", 1)[1].splitlines()[0]
    assert final_frame.startswith("users")
    for shown in ("200/200", "100%", "12.5 users/s", "eta 0:00:00"):
        assert shown in final_frame
