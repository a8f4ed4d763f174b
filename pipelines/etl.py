"""The ETL of a refresh: download -> keep the raw blob -> transform -> store, passing ids only.

Each step is one Dramatiq message in a pipeline (composed in ``actors/etl.py``); each returns
the id the next one needs, and the data itself stays in the database:

1. ``download`` reads every page of the account's transactions and its balance, and keeps them
   as one ``RawBlob`` keyed by ``(account_id, kind, sha256)``: a download of the same data
   finds its blob and stores nothing new. A 429 mid-way, or the step's soft time limit, keeps
   the pages read so far (a partial blob) and re-sends the step with its id, so a tight rate
   limit or a slow provider is crossed page by page instead of starting over and never
   finishing. One download per account runs at a time (the actor's ``lock_key``).
2. ``transform`` parses the raw blob into a ``Statement`` (``pipelines.statements``) and keeps
   it as a normalised blob, keyed the same way.
3. ``store`` upserts merchants on ``normalized_name`` and transactions on
   ``(account_id, provider_transaction_id)``, updates the account's balance, finishes the job
   and, only when rows were new, triggers the insights recalculation, all in one transaction.

Every blob is kept encrypted (``app.raw_blobs``); a step that cannot decrypt its blob fails
its job with the reason. Each step runs under ``pipelines.steps.job_step``: how it waits,
retries and fails the job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import Merchant, ProviderAccount, RawBlob, Transaction, utcnow
from app.db.session import SessionFactory, new_session
from app.db.upsert import dialect_insert, insert_once
from app.middleware.deadlines import SoftTimeLimitExceeded, check_deadline
from app.provider import ProviderClient, ProviderRateLimited, RemoteAccount
from app.raw_blobs import body_of, keep
from pipelines import insights, jobs
from pipelines.statements import Statement, TransactionRecord, canonical_json, parse_download
from pipelines.steps import Deferred, job_step

logger = logging.getLogger(__name__)

RAW_KIND = "provider.transactions"
PARTIAL_KIND = "provider.transactions.partial"
STATEMENT_KIND = "statement"
#: The sandbox serves up to 500 a page; fewer, larger pages spend less of a rate limit.
PAGE_SIZE = 200
INSERT_BATCH = 200


def download(
    job_id: str,
    account_id: int,
    *,
    resume_blob_id: int | None = None,
    page_size: int = PAGE_SIZE,
    new_session: SessionFactory = new_session,
) -> int:
    """Download the account's transactions and balance into a raw blob; return its id."""
    with job_step(job_id, "download", new_session=new_session):
        with new_session() as session:
            account = session.get(ProviderAccount, account_id)
            if account is None:
                raise LookupError(f"account {account_id} does not exist")
            external_id = account.external_id
            state = _resume(session, resume_blob_id)
        answers_before = _answers(state)
        try:
            _fetch(external_id, state, page_size=page_size)
        except (ProviderRateLimited, SoftTimeLimitExceeded) as error:
            if _answers(state) > answers_before:
                with new_session() as session, session.begin():
                    body = canonical_json(state)
                    resume_blob_id = keep(session, account_id, PARTIAL_KIND, body)
            kwargs = {} if resume_blob_id is None else {"resume_blob_id": resume_blob_id}
            # After a 429 when the provider says; past the soft time limit, at once.
            delay_ms = error.retry_after_ms if isinstance(error, ProviderRateLimited) else 0
            raise Deferred(delay_ms, reason=str(error), kwargs=kwargs) from error
        with new_session() as session, session.begin():
            blob_id = keep(session, account_id, RAW_KIND, canonical_json(state))
            jobs.advance(
                session, job_id, progress=jobs.DOWNLOADED, details={"raw_blob_id": blob_id}
            )
        return blob_id


def transform(raw_blob_id: int, job_id: str, *, new_session: SessionFactory = new_session) -> int:
    """Parse a raw download into a normalised statement blob; return the statement's id."""
    with job_step(job_id, "transform", new_session=new_session):
        with new_session() as session:
            raw = _blob(session, raw_blob_id)
            account_id, body = raw.account_id, body_of(raw)
        statement = parse_download(body)
        with new_session() as session, session.begin():
            statement_id = keep(session, account_id, STATEMENT_KIND, statement.to_json())
            jobs.advance(
                session,
                job_id,
                progress=jobs.TRANSFORMED,
                details={"statement_blob_id": statement_id},
            )
        return statement_id


def store(statement_blob_id: int, job_id: str, *, new_session: SessionFactory = new_session) -> int:
    """Store a statement's transactions once each; finish the job; return how many were new."""
    with job_step(job_id, "store", new_session=new_session):
        with new_session() as session, session.begin():
            blob = _blob(session, statement_blob_id)
            statement = Statement.from_json(body_of(blob))
            account = session.get(ProviderAccount, blob.account_id, with_for_update=True)
            if account is None:
                raise LookupError(f"account {blob.account_id} does not exist")
            inserted = store_statement(session, account, statement)
            jobs.finish(
                session,
                job_id,
                details={"inserted": inserted, "transactions": len(statement.transactions)},
            )
            if inserted:
                insights.request_recalculation(session, account.id)
        logger.info("Job %s: stored %d new transaction(s)", job_id, inserted)
        return inserted


def store_statement(session: Session, account: ProviderAccount, statement: Statement) -> int:
    """Upsert the statement's merchants and transactions, update the account; count new rows."""
    merchant_ids = _upsert_merchants(session, statement.transactions)
    rows = [
        {
            "account_id": account.id,
            "provider_transaction_id": tx.provider_transaction_id,
            "posted_on": tx.posted_on,
            "amount": tx.amount,
            "currency": tx.currency,
            "description": tx.description,
            "category": tx.category,
            "merchant_id": merchant_ids.get(tx.merchant.normalized_name) if tx.merchant else None,
            "created_at": utcnow(),
        }
        for tx in statement.transactions
    ]
    inserted = 0
    for start in range(0, len(rows), INSERT_BATCH):
        insert = (
            dialect_insert(session, Transaction)
            .values(rows[start : start + INSERT_BATCH])
            .on_conflict_do_nothing()
            .returning(Transaction.id)
        )
        inserted += len(session.execute(insert).all())
    account.balance = statement.balance
    account.currency = statement.currency
    account.last_synced_at = utcnow()
    return inserted


def _fetch(external_id: str, state: dict[str, Any], *, page_size: int) -> None:
    """Read the pages after those in ``state``, then the balance, into ``state`` as they come.

    The soft time limit is checked after each page, so every delivery reads at least one more
    answer and a long download goes on page by page from its partial blob.
    """
    pages: list[dict[str, Any]] = state["pages"]
    with ProviderClient.from_settings() as provider:
        if not pages or pages[-1].get("next_cursor") is not None:
            cursor = pages[-1]["next_cursor"] if pages else None
            for page in provider.iter_transaction_pages(
                external_id, page_size=page_size, cursor=cursor
            ):
                pages.append(dict(page.raw))
                check_deadline()
        if state["account"] is None:
            # Read after the transactions, so the balance already includes them.
            state["account"] = _account_json(provider.get_account(external_id))


def _answers(state: dict[str, Any]) -> int:
    """How many provider answers a download holds (pages and the balance)."""
    return len(state["pages"]) + (state["account"] is not None)


def _resume(session: Session, resume_blob_id: int | None) -> dict[str, Any]:
    """The pages and balance a deferred download already read (none for a fresh one)."""
    fresh: dict[str, Any] = {"account": None, "pages": []}
    if resume_blob_id is None:
        return fresh
    blob = session.get(RawBlob, resume_blob_id)
    if blob is None or blob.kind != PARTIAL_KIND:
        logger.warning("Partial download %s is gone; starting over", resume_blob_id)
        return fresh
    state: dict[str, Any] = json.loads(body_of(blob))
    return state


def _blob(session: Session, blob_id: int) -> RawBlob:
    blob = session.get(RawBlob, blob_id)
    if blob is None:
        raise LookupError(f"blob {blob_id} does not exist (purged past its retention?)")
    return blob


def _account_json(account: RemoteAccount) -> dict[str, Any]:
    return {
        "external_id": account.external_id,
        "user_id": account.user_id,
        "name": account.name,
        "type": account.type,
        "currency": account.currency,
        "balance": str(account.balance),
    }


def _upsert_merchants(session: Session, records: Iterable[TransactionRecord]) -> dict[str, int]:
    """Each distinct merchant's id by normalised name, inserting the ones not seen before."""
    merchants = {r.merchant.normalized_name: r.merchant for r in records if r.merchant}
    ids: dict[str, int] = {}
    if merchants:
        known = select(Merchant.normalized_name, Merchant.id).where(
            Merchant.normalized_name.in_(merchants)
        )
        ids.update({name: merchant_id for name, merchant_id in session.execute(known)})
    for name, merchant in merchants.items():
        if name not in ids:
            ids[name], _ = insert_once(
                session, Merchant, merchant.model_dump(), key={"normalized_name": name}
            )
    return ids
