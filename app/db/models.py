"""The tables of fintask.

Every effect a message can have owns a natural key (a unique constraint), so a redelivered
message finds its effect already there and does nothing twice.
"""

from __future__ import annotations

import datetime as dt
import enum
from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# One aware-UTC timestamp type, id type and naming convention for every table, fintask's and
# the chunking library's (which cannot import fintask).
from chunking.models import NAMING_CONVENTION, BigId, utcnow
from chunking.models import UtcDateTime as Timestamp


class Base(DeclarativeBase):
    """Declarative base of fintask's tables, named like the chunking library's."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(default=True, index=True)
    push_token: Mapped[str | None] = mapped_column(String(200))
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"


class ProviderAccount(Base):
    """A bank account a user linked through the bank-data provider."""

    __tablename__ = "provider_accounts"
    __table_args__ = (UniqueConstraint("provider", "external_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(50))
    external_id: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200), default="")
    currency: Mapped[str] = mapped_column(String(3), default="USD")
    balance: Mapped[Decimal | None] = mapped_column(Numeric(14, 2))
    status: Mapped[str] = mapped_column(String(20), default=AccountStatus.ACTIVE)
    linked_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)
    last_synced_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())


class AccountLookup(Base):
    """One read of an account's data requested by its user (balance-only or full)."""

    __tablename__ = "account_lookups"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    account_id: Mapped[int] = mapped_column(ForeignKey("provider_accounts.id", ondelete="CASCADE"))
    balance_only: Mapped[bool] = mapped_column(default=False)
    looked_up_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)

    __table_args__ = (Index("ix_account_lookups_user_time", "user_id", "looked_up_at"),)


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    normalized_name: Mapped[str] = mapped_column(String(200), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(50), default="other")


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (UniqueConstraint("account_id", "provider_transaction_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("provider_accounts.id", ondelete="CASCADE"))
    provider_transaction_id: Mapped[str] = mapped_column(String(100))
    posted_on: Mapped[dt.date] = mapped_column(Date)
    amount: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(500))
    category: Mapped[str] = mapped_column(String(50), default="other")
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("merchants.id"))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)


class RawBlob(Base):
    """A provider response kept as it came, so a transform can be re-run without a download."""

    __tablename__ = "raw_blobs"
    __table_args__ = (UniqueConstraint("account_id", "kind", "sha256"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("provider_accounts.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(50))
    sha256: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    fetched_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow, index=True)


class NotificationStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    EXPIRED = "expired"
    FAILED = "failed"


class Notification(Base):
    """One notification to one user on one channel; ``dedup_key`` makes sending idempotent."""

    __tablename__ = "notifications"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedup_key: Mapped[str] = mapped_column(String(200), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(50))
    channel: Mapped[str] = mapped_column(String(20))
    urgent: Mapped[bool] = mapped_column(default=False)
    subject: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default=NotificationStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    sent_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    POLLING = "polling"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


#: Job states in which a job still has work pending; at most one such job per account and kind.
ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.POLLING, JobStatus.RUNNING)
_ACTIVE_JOB_WHERE = text("status IN ('queued', 'polling', 'running')")


class Job(Base):
    """The state of an asynchronous API request (a provider refresh), polled by clients."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(
            "uq_jobs_active_per_account",
            "account_id",
            "kind",
            unique=True,
            sqlite_where=_ACTIVE_JOB_WHERE,
            postgresql_where=_ACTIVE_JOB_WHERE,
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
    account_id: Mapped[int] = mapped_column(ForeignKey("provider_accounts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED, index=True)
    progress: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    deadline_at: Mapped[dt.datetime] = mapped_column(Timestamp())
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow, onupdate=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    #: The batch this job is a member of (an account sync's), and its ordinal there: when the
    #: job finishes, that member is done (``pipelines.batches.report_job``).
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True)
    batch_ordinal: Mapped[int | None] = mapped_column(BigInteger)


class FraudVerdict(enum.StrEnum):
    CLEAN = "clean"
    SUSPICIOUS = "suspicious"


class FraudCheck(Base):
    """The verdict on one account link; one check per link, however often the message comes."""

    __tablename__ = "fraud_checks"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        ForeignKey("provider_accounts.id", ondelete="CASCADE"), unique=True
    )
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    verdict: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(500), default="")
    checked_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)


class OutboxMessage(Base):
    """A message written in the same transaction as the rows it is about.

    It is sent once the transaction has committed and then marked sent; a process that dies
    between commit and send leaves the row for the periodic relay. The message id is fixed
    here, so a message sent twice (relay after a send whose mark was lost) keeps one id. A row
    that can never be sent (its actor unknown, its message refused) is marked failed with the
    reason instead, so that it neither blocks the rows behind it nor vanishes.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    message_id: Mapped[str] = mapped_column(String(36), unique=True)
    actor_name: Mapped[str] = mapped_column(String(100))
    #: None on rows a release before 0002 wrote: the relay finds their queue in the registry.
    queue_name: Mapped[str | None] = mapped_column(String(100))
    kwargs: Mapped[dict[str, object]] = mapped_column(JSON)
    delay_ms: Mapped[int | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    failed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    #: Why the row could not be sent: the refusal, never the message's argument values.
    error: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        Index(
            "ix_outbox_unsent",
            "created_at",
            sqlite_where=text("sent_at IS NULL"),
            postgresql_where=text("sent_at IS NULL"),
        ),
    )


# --- Insights (triggers) -----------------------------------------------------------------------
# Derived from the stored transactions by ``pipelines.insights``: recomputed and replaced as a
# whole for one account, so a recalculation that runs twice leaves the same rows.


class MonthlySpending(Base):
    """Money out of one account in one calendar month and category (a positive amount)."""

    __tablename__ = "monthly_spending"
    __table_args__ = (UniqueConstraint("account_id", "month", "category"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("provider_accounts.id", ondelete="CASCADE"))
    #: The first day of the month.
    month: Mapped[dt.date] = mapped_column(Date)
    category: Mapped[str] = mapped_column(String(50))
    currency: Mapped[str] = mapped_column(String(3))
    spent: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    transaction_count: Mapped[int] = mapped_column()
    computed_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)


class MonthlyBalance(Base):
    """An account's money in, money out and closing balance for one calendar month.

    The closing balance is worked back from the provider's current balance, so it is right
    even when fintask never saw the account's opening balance.
    """

    __tablename__ = "monthly_balances"
    __table_args__ = (UniqueConstraint("account_id", "month"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("provider_accounts.id", ondelete="CASCADE"))
    #: The first day of the month.
    month: Mapped[dt.date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(String(3))
    money_in: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    money_out: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    closing_balance: Mapped[Decimal] = mapped_column(Numeric(14, 2))
    computed_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)


# --- The control plane -------------------------------------------------------------------------


#: The longest ``AuditEvent.target`` kept; ``app.control.audit`` shortens longer ones.
AUDIT_TARGET_CHARS = 500


class AuditEvent(Base):
    """One thing an operator did, from the CLI or the HTTP API: who, what, to which target, when.

    Rows are only ever added, never changed: the trail is what a post-mortem reads back.
    """

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow, index=True)
    #: ``cli:<os user>@<host>`` or ``token:<token name>``.
    who: Mapped[str] = mapped_column(String(200))
    #: What was done, dotted: ``queue.pause``, ``token.create``.
    action: Mapped[str] = mapped_column(String(64))
    #: What it was done to: a queue, an actor, a message id, a token's name.
    target: Mapped[str] = mapped_column(String(AUDIT_TARGET_CHARS))
    #: How many messages (or rows) the action touched, where that means something.
    count: Mapped[int] = mapped_column(default=0)
    detail: Mapped[dict[str, object] | None] = mapped_column(JSON(none_as_null=True))


class ApiToken(Base):
    """A bearer token of the HTTP API: its name, its role, and the SHA-256 of its secret.

    The secret itself is shown once, when the token is made, and never stored.
    """

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    #: ``viewer`` or ``operator`` (``app.control.tokens.ROLES``).
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp(), default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp())
