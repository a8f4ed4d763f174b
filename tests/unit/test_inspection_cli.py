"""`fintask queues`, `fintask dlq ...`, `fintask jobs`: what an operator types instead of Flower."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import dramatiq
import pytest
from click.testing import CliRunner

from app.cli.main import main
from app.db.models import Job, ProviderAccount
from app.db.session import transaction
from app.queues import canonical_queue_names

pytest_plugins = ["tests.support.inspection_fixtures"]


def fintask(*args: str, input: str | None = None):
    return CliRunner().invoke(main, list(args), input=input)


def test_queues_lists_every_declared_queue_with_its_dead_letters(dead_letters):
    dead_letters.make("maintenance")

    as_json = fintask("queues", "--json")
    as_text = fintask("queues")

    assert as_json.exit_code == 0, as_json.output
    by_queue = {q["queue_name"]: q for q in json.loads(as_json.output)["items"]}
    assert {"maintenance", "fraud", "emails", "urgent_notifications"} <= set(by_queue)
    # every queue the broker the command built declares, once each, under its canonical name
    declared = canonical_queue_names(dramatiq.get_broker().get_declared_queues())
    assert [q["queue_name"] for q in json.loads(as_json.output)["items"]] == declared
    assert by_queue["maintenance"]["dead"] == 1
    assert json.loads(as_json.output)["consumers_alive"] == 0
    assert as_text.exit_code == 0, as_text.output
    assert as_text.output.splitlines()[0].split() == ["QUEUE", "READY", "DELAYED", "DEAD", "OLDEST"]
    assert "consumers alive: 0" in as_text.output


def test_dlq_list_and_show_find_the_dead_letter_by_its_message_id(dead_letters):
    message_id = dead_letters.make("maintenance")

    listed = fintask("dlq", "list", "--queue", "maintenance", "--json")
    shown = fintask("dlq", "show", message_id, "--json")
    text = fintask("dlq", "show", message_id)

    assert listed.exit_code == 0, listed.output
    assert [d["message_id"] for d in json.loads(listed.output)["items"]] == [message_id]
    assert shown.exit_code == 0, shown.output
    details = json.loads(shown.output)
    assert (details["actor_name"], details["message"]["args"]) == ("explode_maintenance", [7])
    assert f"message_id: {message_id}" in text.output


def test_an_unknown_queue_or_message_is_a_readable_error(dead_letters):
    bad_queue = fintask("dlq", "list", "--queue", "nope")
    bad_message = fintask("dlq", "show", "no-such-id")

    assert bad_queue.exit_code == 2
    assert "'nope' is not a queue of fintask" in bad_queue.output
    assert bad_message.exit_code == 1
    assert "Error: no dead letter no-such-id" in bad_message.output


def test_dlq_requeue_moves_one_message_back_to_its_queue(dead_letters):
    message_id = dead_letters.make("maintenance")

    result = fintask("dlq", "requeue", message_id)

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"requeued {message_id} to maintenance"
    assert dead_letters.client.llen("dramatiq:maintenance") == 1
    assert dead_letters.client.zcard("dramatiq:maintenance.XQ") == 0


def test_dlq_requeue_all_is_limited_to_the_named_queue(dead_letters):
    dead_letters.make("maintenance", 1)
    dead_letters.make("fraud", 2)

    result = fintask("dlq", "requeue", "--all", "--queue", "fraud", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["requeued"] == 1
    assert dead_letters.client.zcard("dramatiq:maintenance.XQ") == 1


def test_dlq_requeue_needs_a_message_id_or_all_but_not_both(dead_letters):
    neither = fintask("dlq", "requeue")
    both = fintask("dlq", "requeue", "some-id", "--all")

    assert (neither.exit_code, both.exit_code) == (2, 2)
    assert "give a MESSAGE_ID or --all" in neither.output


def test_dlq_purge_asks_first_and_keeps_everything_when_refused(dead_letters):
    dead_letters.make("maintenance")

    refused = fintask("dlq", "purge", input="n\n")

    assert refused.exit_code == 1
    assert "Delete 1 dead letters (1 in maintenance)?" in refused.output
    assert dead_letters.client.zcard("dramatiq:maintenance.XQ") == 1


def test_dlq_purge_with_yes_deletes_without_asking(dead_letters):
    dead_letters.make("maintenance")
    dead_letters.make("fraud")

    result = fintask("dlq", "purge", "--queue", "maintenance", "--yes", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"purged": {"maintenance": 1}}
    assert dead_letters.client.zcard("dramatiq:fraud.XQ") == 1


@pytest.fixture
def jobs(user) -> list[str]:
    """Two jobs of one account: one polling the provider, one failed."""
    now = dt.datetime.now(dt.UTC)
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    with transaction() as session:
        account = ProviderAccount(user_id=user.id, provider="sandbox", external_id="acc-1")
        session.add(account)
        session.flush()
        for job_id, status, error in zip(
            ids, ["polling", "failed"], [None, "provider down"], strict=True
        ):
            session.add(
                Job(
                    id=job_id,
                    kind="refresh",
                    account_id=account.id,
                    status=status,
                    error=error,
                    deadline_at=now + dt.timedelta(minutes=5),
                )
            )
    return ids


def test_jobs_counts_every_status_and_filters_by_one(jobs):
    everything = fintask("jobs", "--json")
    failed = fintask("jobs", "--status", "failed", "--json")

    assert everything.exit_code == 0, everything.output
    counts = json.loads(everything.output)["counts"]
    assert counts == {"queued": 0, "polling": 1, "running": 0, "done": 0, "failed": 1}
    assert [job["id"] for job in json.loads(failed.output)["items"]] == [jobs[1]]
    assert json.loads(failed.output)["items"][0]["error"] == "provider down"


def test_jobs_as_a_table_and_an_unknown_status_is_refused(jobs):
    table = fintask("jobs")
    bad = fintask("jobs", "--status", "lost")

    assert table.exit_code == 0, table.output
    assert "polling: 1" in table.output
    assert jobs[0] in table.output
    assert bad.exit_code == 2
    assert "'lost' is not a job status" in bad.output


def test_dlq_requeue_exits_non_zero_when_nothing_was_requeued(dead_letters):
    nothing = fintask("dlq", "requeue", "--all", "--json")

    assert nothing.exit_code == 1
    assert json.loads(nothing.output)["requeued"] == 0


def test_fintask_says_its_version():
    answer = fintask("--version")
    assert answer.exit_code == 0
    assert answer.output.strip() == "fintask 0.1.0"
