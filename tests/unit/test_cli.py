"""The CLI starts work with readable errors; it never prints a traceback for a user mistake."""

from __future__ import annotations

from click.testing import CliRunner

from app.cli.main import main


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
