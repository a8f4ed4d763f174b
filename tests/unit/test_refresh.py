"""The refresh job: one per account, polled until the provider is done or the deadline passes."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
from sqlalchemy import func, select

from app.db.models import AccountStatus, Job, JobStatus, OutboxMessage, Transaction
from app.db.session import transaction
from app.settings import SettingsError
from pipelines import refresh
from pipelines.refresh import PollOutcome, next_poll_delay_ms
from pipelines.steps import DEFERRALS_OPTION
from sandbox.data import expected_transactions
from tests.support.refresh_fixtures import load_job, make_job, sent_to, wait_until

# Its fixtures: sandbox, account, redis_env, sent.
pytest_plugins = ["tests.support.refresh_fixtures"]

pytestmark = pytest.mark.usefixtures("redis_env")


def _request(account_id: int, deadline_s: float = 60) -> tuple[Job, bool]:
    with transaction() as session:
        return refresh.request_refresh(
            session, account_id, deadline=dt.timedelta(seconds=deadline_s)
        )


def _nothing_left(broker) -> bool:
    return all(queue.qsize() == 0 for queue in broker.queues.values())


def test_polls_wait_1_s_growing_to_5_s_and_never_past_the_deadline():
    delays = [next_poll_delay_ms(n, ms_until_deadline=60_000) for n in range(6)]

    assert delays == [1_000, 1_500, 2_250, 3_375, 5_000, 5_000]
    assert next_poll_delay_ms(5, ms_until_deadline=700) == 701
    assert next_poll_delay_ms(5, ms_until_deadline=0) == 1


def test_the_deadline_setting_says_what_is_wrong():
    assert refresh.refresh_deadline({}) == dt.timedelta(seconds=300)
    assert refresh.refresh_deadline({"REFRESH_DEADLINE_S": "2.5"}) == dt.timedelta(seconds=2.5)
    with pytest.raises(SettingsError, match="REFRESH_DEADLINE_S='soon': expected a number"):
        refresh.refresh_deadline({"REFRESH_DEADLINE_S": "soon"})


def test_a_second_request_while_one_is_active_gets_the_same_job(account, stub_broker):
    first, created = _request(account.id)
    again, created_again = _request(account.id)

    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert stub_broker.queues["sync"].qsize() == 1  # one poll, queued after commit


def test_a_finished_job_lets_a_new_refresh_start(account, stub_broker):
    first, _ = _request(account.id)
    with transaction() as session:
        session.get_one(Job, first.id).status = JobStatus.DONE.value

    second, created = _request(account.id)

    assert created and second.id != first.id


def test_a_blocked_account_is_refused(account):
    with transaction() as session:
        session.merge(account).status = AccountStatus.BLOCKED.value

    with pytest.raises(refresh.AccountBlocked, match=f"account {account.id} is blocked"):
        _request(account.id)


def test_a_refresh_polls_until_the_provider_is_done_then_runs_the_etl(
    sandbox, account, stub_broker, stub_worker, sent
):
    # Given a provider whose refresh takes 5 s (of its clock),
    provider = sandbox(refresh_seconds=5)
    job, _ = _request(account.id)

    # when the first poll has started it, the job is polling and the next poll is 1 s out;
    wait_until(lambda: len(sent_to(sent, "poll_refresh")) == 2)  # sent after the commit
    assert load_job(job.id).status == JobStatus.POLLING
    assert [delay for _, delay in sent_to(sent, "poll_refresh")] == [None, 1_000]

    # and once the provider is done, the next poll starts the ETL, which finishes the job.
    provider.clock.advance(5)
    stub_broker.join("sync")
    stub_broker.join("etl")
    stub_broker.join("insights")
    stub_worker.join()

    done = load_job(job.id)
    assert (done.status, done.progress, done.error) == (JobStatus.DONE, 100, None)
    assert done.finished_at is not None
    with transaction() as session:
        stored = session.scalar(select(func.count()).select_from(Transaction))
    assert stored == len(expected_transactions(account.external_id))
    assert len(sent_to(sent, "start_etl")) == 1
    assert _nothing_left(stub_broker)


def test_a_refresh_that_never_finishes_fails_at_the_deadline_with_nothing_left_polling(
    sandbox, account, stub_broker, stub_worker
):
    sandbox(refresh_never_finishes=True)
    job, _ = _request(account.id, deadline_s=2)

    wait_until(lambda: load_job(job.id).status == JobStatus.FAILED)
    stub_broker.join("sync")
    stub_worker.join()

    failed = load_job(job.id)
    assert failed.error.startswith("deadline: the provider refresh ref-")
    assert "still in progress" in failed.error
    assert failed.finished_at is not None
    assert _nothing_left(stub_broker)
    with transaction() as session:
        unsent = select(func.count()).where(OutboxMessage.sent_at.is_(None))
        assert session.scalar(unsent) == 0


def test_a_429_on_a_poll_resends_it_after_retry_after_without_spending_a_retry(
    sandbox, account, stub_broker, stub_worker, sent
):
    # Given a provider allowing one request a second, whose token the test just used,
    provider = sandbox(rate_limit_per_s=1, refresh_seconds=60)
    httpx.get(f"{provider.url}/accounts/{account.external_id}")
    job, _ = _request(account.id)

    # when the first poll meets the 429 and the second passes,
    wait_until(lambda: any(DEFERRALS_OPTION in m.options for m, _ in sent))
    provider.clock.advance(1)
    wait_until(lambda: load_job(job.id).status == JobStatus.POLLING)

    # then the same poll was sent again after Retry-After, and no retry was spent.
    polls = sent_to(sent, "poll_refresh")
    ((again, delay),) = [(m, d) for m, d in polls if DEFERRALS_OPTION in m.options and d]
    assert delay == 1_000
    assert again.message_id == polls[0][0].message_id
    assert again.kwargs == {"job_id": job.id, "poll": 0}
    assert again.options.get("retries", 0) == 0
    assert provider.stats()["429"] == 1


def test_a_duplicated_poll_does_nothing(sandbox, account, stub_broker):
    sandbox(refresh_seconds=60)
    job, _ = _request(account.id)

    outcomes = [refresh.poll(job.id, 0), refresh.poll(job.id, 0)]

    assert outcomes == [PollOutcome.POLLING, PollOutcome.STALE]
    assert stub_broker.queues["sync.DQ"].qsize() == 1  # one next poll, not two


def test_a_poll_after_the_deadline_fails_the_job_without_calling_the_provider(
    sandbox, account, stub_broker
):
    provider = sandbox()
    job = make_job(account.id, status=JobStatus.POLLING, deadline_s=-1)

    assert refresh.poll(job.id, 0) == PollOutcome.DEADLINE

    failed = load_job(job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error.startswith("deadline: the provider refresh had not started by ")
    assert provider.stats() == {}
    assert _nothing_left(stub_broker)
