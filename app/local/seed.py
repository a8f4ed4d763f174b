"""A realistic data set for the demo and benchmarks, inserted in bulk.

Deterministic: user ``n`` always has the same email, activity and accounts, so runs compare.
The accounts are the ones the sandbox provider serves for user ``n``, by the sandbox's own
rule (``sandbox.data``): a seeded account the provider did not know would fail every sync.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, func, insert, select

from app.db.models import ProviderAccount, User, utcnow
from sandbox.data import account_count, account_id

BATCH_SIZE = 10_000
SANDBOX_PROVIDER = "sandbox"


@dataclass(frozen=True)
class SeedResult:
    users_created: int
    accounts_created: int
    users_total: int


def seed(engine: Engine, *, users: int, batch_size: int = BATCH_SIZE) -> SeedResult:
    """Make sure ``users`` users exist (creating the missing ones) with their linked accounts."""
    with engine.begin() as connection:
        existing = connection.scalar(select(func.coalesce(func.max(User.id), 0))) or 0
    users_created = accounts_created = 0
    for first in range(existing + 1, users + 1, batch_size):
        last = min(first + batch_size - 1, users)
        user_rows = list(_user_rows(first, last))
        account_rows = [row for n in range(first, last + 1) for row in _account_rows(n)]
        with engine.begin() as connection:
            connection.execute(insert(User), user_rows)
            if account_rows:
                connection.execute(insert(ProviderAccount), account_rows)
        users_created += len(user_rows)
        accounts_created += len(account_rows)
    return SeedResult(users_created, accounts_created, max(existing, users))


def _user_rows(first: int, last: int) -> Iterator[dict[str, object]]:
    now = utcnow()
    for n in range(first, last + 1):
        yield {
            "id": n,
            "email": f"user{n}@example.com",
            "name": f"User {n}",
            # One user in ten has gone quiet: fan-outs to active users must skip them.
            "is_active": n % 10 != 0,
            "push_token": f"push-{n}" if n % 3 == 0 else None,
            "webhook_url": None,
            "created_at": now,
        }


def _account_rows(n: int) -> list[dict[str, object]]:
    # Linked over the past year, as real accounts are: a fresh link stands out to fraud checks.
    linked_at = utcnow() - dt.timedelta(days=1 + n % 365)
    return [
        {
            "user_id": n,
            "provider": SANDBOX_PROVIDER,
            "external_id": account_id(n, k),
            "name": ("Checking", "Savings")[k % 2],
            "currency": "USD",
            "linked_at": linked_at,
        }
        for k in range(account_count(n))
    ]
