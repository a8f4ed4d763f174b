"""``--json`` on the commands that start or steer work: one JSON document a script can parse,
naming what happened; the errors stay the errors they are without it."""

from __future__ import annotations

import json
from typing import Any

from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import Engine, func, select

from app.cli.main import main
from app.db.migrate import alembic_config
from app.db.models import Notification, ProviderAccount, User
from app.db.session import transaction

WEEK = "2026-W47"


def fintask(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def parsed(result: Result) -> Any:
    """What the command printed on stdout, which must be one JSON document and nothing else."""
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_ping_names_the_worker_that_answered(redis_env, stub_worker):
    answer = parsed(fintask("ping", "--timeout", "10", "--json"))

    assert list(answer) == ["answered_by"]
    assert answer["answered_by"].count(":") == 1  # host:pid


def test_a_ping_nobody_answers_is_still_an_error(redis_env, stub_broker):
    result = fintask("ping", "--timeout", "0.2", "--json")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Error: no worker answered within 0.2 s" in result.output


def test_notify_names_the_notification_and_the_key_it_was_made_under(user, stub_broker):
    first = parsed(fintask("notify", "--user", str(user.id), "--kind", "statement", "--json"))
    again = parsed(
        fintask("notify", "--user", str(user.id), "--dedup-key", first["dedup_key"], "--json")
    )

    assert first["status"] == "queued"
    assert first["dedup_key"].startswith("statement:")
    with transaction() as session:
        notification = session.get_one(Notification, first["notification_id"])
        assert notification.dedup_key == first["dedup_key"]
    # The same key is the same notification, sent once.
    assert again["notification_id"] == first["notification_id"]
    assert stub_broker.queues["emails"].qsize() == 1


def test_notify_for_a_missing_user_is_the_same_error_with_json(database, stub_broker):
    result = fintask("notify", "--user", "404", "--json")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Error: user 404 does not exist" in result.output


def test_linking_an_account_names_the_account(user, stub_broker):
    linked = parsed(
        fintask("accounts", "link", "--user", str(user.id), "--external-id", "acc-9", "--json")
    )

    with transaction() as session:
        account = session.get_one(ProviderAccount, linked["account_id"])
        assert (account.user_id, account.external_id) == (user.id, "acc-9")
    assert linked == {
        "account_id": account.id,
        "status": "linked",
        "provider": "sandbox",
        "external_id": "acc-9",
    }
    assert stub_broker.queues["fraud"].qsize() == 1


def test_reports_send_names_the_run_and_steering_it_names_each_new_status(
    database, stub_broker, redis_env
):
    started = parsed(fintask("reports", "send", "--week", WEEK, "--json"))
    run_id = str(started["run_id"])

    steered = [parsed(fintask("runs", action, run_id, "--json")) for action in ("pause", "resume")]
    listed = parsed(fintask("runs", "--json"))
    cancelled = parsed(fintask("runs", "cancel", run_id, "--json"))
    again = fintask("runs", "cancel", run_id, "--json")

    assert started == {"run_id": 1, "week": WEEK}
    assert steered == [{"run_id": 1, "status": "paused"}, {"run_id": 1, "status": "resumed"}]
    assert listed["next_cursor"] is None
    assert [(p["run_id"], p["status"]) for p in listed["items"]] == [(1, "running")]
    assert listed["items"][0]["created_at"].endswith("Z")
    assert cancelled == {"run_id": 1, "status": "cancelled"}
    assert again.exit_code == 1
    assert again.stdout == ""
    assert "run 1 was not cancelled: it is cancelled" in again.output


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_migrate_names_the_revision_it_was_at_and_is_at(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)

    first = parsed(fintask("migrate", "--json"))
    again = parsed(fintask("migrate", "--json"))

    assert first == {"previous_revision": None, "revision": _head()}
    assert again == {"previous_revision": _head(), "revision": _head()}


def test_seed_counts_what_it_created_and_what_there_is(database: Engine):
    first = parsed(fintask("seed", "--users", "12", "--json"))
    again = parsed(fintask("seed", "--users", "12", "--json"))

    with transaction() as session:
        users = session.scalar(select(func.count()).select_from(User))
        accounts = session.scalar(select(func.count()).select_from(ProviderAccount))
    assert first == {"users_created": 12, "accounts_created": accounts, "users_total": 12}
    assert users == 12 and accounts
    assert again == {"users_created": 0, "accounts_created": 0, "users_total": 12}
