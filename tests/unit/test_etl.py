"""The ETL: download -> raw blob -> transform -> store, idempotent at each step, failing loudly."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from actors.etl import download_transactions, etl_pipeline, start_etl, store_transactions
from app.blob_crypto import new_key_entry
from app.db.models import JobStatus, Merchant, ProviderAccount, RawBlob, Transaction
from app.db.session import transaction
from app.raw_blobs import body_of, keep, key_id_of
from pipelines import etl
from pipelines.statements import Statement, normalized_merchant_name, parse_download
from pipelines.steps import DEFERRALS_OPTION, StepAbandoned
from sandbox.data import expected_account, expected_transactions
from tests.support.refresh_fixtures import load_job, make_job, sent_to, wait_until

# Its fixtures: sandbox, account, redis_env, sent.
pytest_plugins = ["tests.support.refresh_fixtures"]

pytestmark = pytest.mark.usefixtures("redis_env")


def _count(model, **where) -> int:
    with transaction() as session:
        return int(session.scalar(select(func.count()).select_from(model).filter_by(**where)))


def _statement(blob_id: int) -> Statement:
    with transaction() as session:
        return Statement.from_json(body_of(session.get_one(RawBlob, blob_id)))


def _bodies() -> dict[int, bytes]:
    """Every blob's body as the database holds it."""
    with transaction() as session:
        return {
            blob_id: body for blob_id, body in session.execute(select(RawBlob.id, RawBlob.body))
        }


def test_the_transform_gives_exactly_the_sandboxs_transactions(sandbox, account):
    # Given a download over several pages,
    sandbox()
    job = make_job(account.id)
    raw_id = etl.download(job.id, account.id, page_size=25)

    # when it is transformed,
    statement = _statement(etl.transform(raw_id, job.id))

    # then every transaction is there once, typed, with its merchant normalised.
    expected = expected_transactions(account.external_id)
    assert len(statement.transactions) == len(expected) > 25
    for record, tx in zip(statement.transactions, expected, strict=True):
        assert record.provider_transaction_id == tx.id
        assert record.posted_on == tx.posted_on
        assert record.amount == Decimal(tx.amount)
        assert (record.currency, record.category) == (tx.currency, tx.category)
        assert record.description == tx.description
        assert record.merchant is not None
        assert record.merchant.display_name == tx.merchant
        assert record.merchant.normalized_name == normalized_merchant_name(tx.merchant)
    assert statement.balance == Decimal(expected_account(account.external_id).balance)
    assert load_job(job.id).progress == 90


def test_every_blob_is_kept_encrypted_and_reads_back(sandbox, account):
    # Given a download and its transform,
    sandbox()
    job = make_job(account.id)
    raw_id = etl.download(job.id, account.id, page_size=25)
    statement_id = etl.transform(raw_id, job.id)

    # then neither blob holds, in clear, anything of the account: its id, a merchant, an amount,
    expected = expected_transactions(account.external_id)
    bodies = _bodies()
    assert set(bodies) == {raw_id, statement_id}
    for body in bodies.values():
        assert key_id_of(body) == "test"  # the session's key (tests/conftest.py)
        for clear in [account.external_id, expected[0].merchant, expected[0].description]:
            assert clear.encode() not in body
        assert expected_account(account.external_id).balance.encode() not in body
    # and the statement read back from its blob is the whole download.
    assert len(_statement(statement_id).transactions) == len(expected)


def test_a_blob_under_an_older_key_reads_while_that_key_is_listed(sandbox, account, monkeypatch):
    sandbox()
    job = make_job(account.id)
    raw_id = etl.download(job.id, account.id)

    # A new key first (it encrypts), the one the raw blob is under still listed:
    monkeypatch.setenv("BLOB_KEYS", f"{new_key_entry('k2')},{os.environ['BLOB_KEYS']}")
    statement_id = etl.transform(raw_id, job.id)

    bodies = _bodies()
    assert (key_id_of(bodies[raw_id]), key_id_of(bodies[statement_id])) == ("test", "k2")
    assert len(_statement(statement_id).transactions) == len(
        expected_transactions(account.external_id)
    )


def test_a_blob_under_a_key_no_longer_listed_fails_its_job_saying_why(
    sandbox, account, monkeypatch
):
    sandbox()
    job = make_job(account.id)
    raw_id = etl.download(job.id, account.id)

    monkeypatch.setenv("BLOB_KEYS", new_key_entry("k2"))
    with pytest.raises(StepAbandoned):
        etl.transform(raw_id, job.id)

    failed = load_job(job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error == (
        f"transform: BlobUnreadable: raw blob {raw_id} cannot be decrypted: "
        "key 'test' is unknown (not in BLOB_KEYS)"
    )
    assert _count(RawBlob, kind=etl.STATEMENT_KIND) == 0


@pytest.mark.parametrize("change", ["a byte altered", "another row's blob copied in"])
def test_an_altered_blob_fails_its_job_saying_why(sandbox, account, change):
    sandbox()
    job = make_job(account.id)
    raw_id = etl.download(job.id, account.id)
    with transaction() as session:
        blob = session.get_one(RawBlob, raw_id)
        if change == "a byte altered":
            blob.body = blob.body[:-1] + bytes([blob.body[-1] ^ 1])
        else:
            other_id = keep(session, account.id, etl.RAW_KIND, b'{"account": null, "pages": []}')
            blob.body = session.get_one(RawBlob, other_id).body

    with pytest.raises(StepAbandoned):
        etl.transform(raw_id, job.id)

    assert load_job(job.id).error == (
        f"transform: BlobUnreadable: raw blob {raw_id} cannot be decrypted: "
        "authentication failed: wrong key or altered data (or another row's blob)"
    )


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("Trader Joe's", "trader-joes"),
        ("TRADER JOES #0042", "trader-joes"),
        ("  Blue  Bottle Coffee ", "blue-bottle-coffee"),
        ("Café Nero Ltd", "cafe-nero"),
        ("ACME Corp Payroll", "acme-corp-payroll"),
        ("#12", ""),
    ],
)
def test_merchant_names_are_normalised(name, normalized):
    assert normalized_merchant_name(name) == normalized


def test_a_blob_that_does_not_parse_names_the_field():
    body = b'{"account": {"external_id": "a", "currency": "USD", "balance": "1.00"}, "pages": '
    body += b'[{"transactions": [{"id": "t1", "account_id": "a", "posted_on": "yesterday"}]}]}'

    with pytest.raises(ValueError, match="posted_on"):
        parse_download(body)


def test_a_download_of_the_same_data_stores_no_new_blob(sandbox, account):
    sandbox()
    job = make_job(account.id)

    first = etl.download(job.id, account.id)
    second = etl.download(job.id, account.id)

    assert first == second
    assert _count(RawBlob, kind=etl.RAW_KIND) == 1


def test_storing_the_same_statement_twice_stores_nothing_twice(sandbox, account, stub_broker):
    sandbox()
    job = make_job(account.id)
    statement_id = etl.transform(etl.download(job.id, account.id), job.id)

    inserted = [etl.store(statement_id, job.id), etl.store(statement_id, job.id)]

    expected = expected_transactions(account.external_id)
    assert inserted == [len(expected), 0]
    assert _count(Transaction, account_id=account.id) == len(expected)
    assert _count(Merchant) == len({tx.merchant for tx in expected})
    # Only the store that inserted rows triggers the insights.
    assert stub_broker.queues["insights"].qsize() == 1
    job_now = load_job(job.id)
    assert (job_now.status, job_now.progress) == (JobStatus.DONE, 100)
    with transaction() as session:
        stored = session.get_one(ProviderAccount, account.id)
        assert stored.balance == Decimal(expected_account(account.external_id).balance)
        assert stored.last_synced_at is not None


def test_a_store_step_delivered_twice_stores_nothing_twice(
    sandbox, account, stub_broker, stub_worker, sent
):
    sandbox()
    job = make_job(account.id)
    statement_id = etl.transform(etl.download(job.id, account.id), job.id)

    # The same message twice, as a redelivery after a lost ack would bring it.
    message = store_transactions.message(statement_id, job_id=job.id)
    stub_broker.enqueue(message)
    stub_broker.enqueue(message.copy())
    stub_broker.join("etl")
    stub_worker.join()

    assert _count(Transaction) == len(expected_transactions(account.external_id))
    assert len(sent_to(sent, "recalculate_insights")) == 1


def test_the_pipeline_passes_ids_from_step_to_step_and_finishes_the_job(
    sandbox, account, stub_broker, stub_worker
):
    sandbox()
    job = make_job(account.id)

    pipeline = etl_pipeline(job.id, account.id)
    start_etl.send(job_id=job.id, account_id=account.id)
    stub_broker.join("etl")
    stub_worker.join()

    # Every message carries ids only; each later step gets the previous one's id appended.
    assert [m.kwargs for m in pipeline.messages] == [
        {"job_id": job.id, "account_id": account.id},
        {"job_id": job.id},
        {"job_id": job.id},
    ]
    finished = load_job(job.id)
    assert (finished.status, finished.progress, finished.error) == (JobStatus.DONE, 100, None)
    assert finished.details["inserted"] == len(expected_transactions(account.external_id))
    assert _count(Transaction) == finished.details["inserted"]


def test_a_429_resends_the_step_after_retry_after_without_spending_a_retry(
    sandbox, account, stub_broker, stub_worker, sent
):
    # Given a provider allowing one request a second: the page passes, the balance gets a 429,
    provider = sandbox(rate_limit_per_s=1)
    job = make_job(account.id)

    # when the ETL runs,
    start_etl.send(job_id=job.id, account_id=account.id)
    wait_until(lambda: any(DEFERRALS_OPTION in m.options for m, _ in sent))
    provider.clock.advance(1)  # the second the provider asked for passes
    stub_broker.join("etl")
    stub_worker.join()

    # then the download was sent again after Retry-After (1 s), as the same message, with the
    # page it had already read, and no retry spent;
    downloads = sent_to(sent, "download_transactions")
    first = downloads[0][0]
    # (The worker enqueues a delayed message once more when it is due, without a delay.)
    ((again, delay),) = [(message, delay) for message, delay in downloads if delay]
    assert delay == 1_000
    assert again.message_id == first.message_id
    assert again.options.get("retries", 0) == 0
    assert again.options[DEFERRALS_OPTION] == 1
    assert again.kwargs["resume_blob_id"] is not None
    # the page was not read twice, and the job finished with every transaction.
    assert provider.stats() == {"200": 2, "429": 1}
    assert load_job(job.id).status == JobStatus.DONE
    assert _count(Transaction) == len(expected_transactions(account.external_id))


def test_a_permanent_failure_fails_the_job_at_once_naming_the_step(
    sandbox, user, stub_broker, stub_worker
):
    # Given an account the provider does not know (it answers 404),
    provider = sandbox()
    with transaction() as session:
        unknown = ProviderAccount(
            user_id=user.id, provider="sandbox", external_id="no-such-account"
        )
        session.add(unknown)
    job = make_job(unknown.id)

    # when its ETL runs,
    start_etl.send(job_id=job.id, account_id=unknown.id)
    stub_broker.join("etl", fail_fast=False)
    stub_worker.join()

    # then the job failed with the step and the cause, without retries, and the chain stopped.
    failed = load_job(job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error.startswith("download: ProviderError: provider answered 404")
    assert provider.stats() == {"404": 1}
    assert _count(RawBlob) == 0


def test_a_step_that_keeps_failing_fails_the_job_when_its_retries_run_out(
    sandbox, account, stub_broker, stub_worker
):
    # Given a provider that answers every request with a 5xx,
    provider = sandbox(fail_rate=1.0)
    job = make_job(account.id)

    # when the download is tried with one retry allowed,
    pipeline = etl_pipeline(job.id, account.id)
    pipeline.messages[0].options.update(max_retries=1, min_backoff=10, max_backoff=10)
    pipeline.run()
    stub_broker.join("etl", fail_fast=False)
    stub_worker.join()

    # then after the second attempt the job is failed with the reason, and nothing follows.
    failed = load_job(job.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error.startswith("download: gave up after 2 attempt(s): ProviderUnavailable")
    assert sum(provider.stats().values()) == 2
    assert _count(RawBlob) == 0


def test_a_download_past_its_soft_time_limit_goes_on_from_the_pages_it_read(
    sandbox, account, stub_broker, stub_worker, sent
):
    # Given a provider taking a quarter of a second an answer, and a download whose soft time
    # limit (1 ms) passes during its first page,
    provider = sandbox(latency_ms=250)
    job = make_job(account.id)
    pipeline = etl_pipeline(job.id, account.id)
    pipeline.messages[0].options["soft_time_limit_ms"] = 1

    # when the ETL runs,
    pipeline.run()
    stub_broker.join("etl")
    stub_worker.join()

    # then the download stopped at the check after that page, kept it and sent itself on at
    # once, as the same message, without spending a retry;
    downloads = sent_to(sent, "download_transactions")
    # (If it comes back before the first delivery has let go of the account's lock, the lock
    # defers it once more, later.)
    again, delay = next((m, d) for m, d in downloads if DEFERRALS_OPTION in m.options and d)
    assert delay < 100
    assert again.message_id == downloads[0][0].message_id
    assert again.options.get("retries", 0) == 0
    assert again.kwargs["resume_blob_id"] is not None
    # the next delivery read only the balance, and the job finished with every transaction.
    assert provider.stats() == {"200": 2}
    assert load_job(job.id).status == JobStatus.DONE
    assert _count(Transaction) == len(expected_transactions(account.external_id))


def test_two_downloads_of_one_account_never_run_at_once(
    sandbox, account, stub_broker, stub_worker, sent
):
    # Given a slow provider (half a second an answer) and one download delivered twice, as a
    # redelivery while the first delivery still runs would bring it,
    provider = sandbox(latency_ms=500)
    job = make_job(account.id)
    message = download_transactions.message(job_id=job.id, account_id=account.id)
    stub_broker.enqueue(message)
    stub_broker.enqueue(message.copy())

    # when both reach the worker's two threads,
    wait_until(lambda: any("lock_deferrals" in m.options for m, _ in sent))
    wait_until(lambda: load_job(job.id).progress == 75)  # the first download is done

    # then the second waited for the account's lock (deferred, no retry spent, as often as the
    # first took longer than a deferral on a loaded machine) while the first alone read the
    # provider;
    # (A deferred copy due again comes back through ``enqueue`` once more, without a delay: the
    # worker moving it from the delay queue. Only the sends with a delay are deferrals.)
    deferrals = [(m, d) for m, d in sent if "lock_deferrals" in m.options and d is not None]
    assert [m.options["lock_deferrals"] for m, _ in deferrals] == list(range(1, len(deferrals) + 1))
    for deferred, delay in deferrals:
        assert deferred.message_id == message.message_id
        assert 1_000 <= delay <= 1_500
        assert deferred.options.get("retries", 0) == 0
    assert provider.stats() == {"200": 2}
    # and ran once the lock was free, finding the blob the first one kept.
    stub_broker.join("etl")
    stub_worker.join()
    assert provider.stats() == {"200": 4}
    assert _count(RawBlob, kind=etl.RAW_KIND) == 1
