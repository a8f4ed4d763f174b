"""Deterministic bank data: every user, account and transaction follows from an id.

Account ``acc-17-0`` is the first account of user 17. Its transactions come from an RNG seeded
with a hash of that id, so every run of the sandbox, and every test, sees the same ids, dates,
amounts and merchants; ``expected_transactions`` is what a test compares a download against.
"""

from __future__ import annotations

import hashlib
import random
import re
from datetime import date, timedelta
from decimal import Decimal
from functools import lru_cache

from pydantic import BaseModel, ConfigDict

#: The newest transaction of any account is on this day, so history does not move with the clock.
HISTORY_ENDS_ON = date(2025, 6, 30)
HISTORY_DAYS = 180
MAX_ACCOUNTS_PER_USER = 3

_ACCOUNT_ID = re.compile(r"acc-(0|[1-9][0-9]*)-(0|[1-9][0-9]*)")
_ACCOUNT_KINDS = (("checking", "Everyday Checking"), ("savings", "Rainy Day Savings"))
_CURRENCIES = ("USD", "EUR", "GBP")
#: (merchant, category, smallest and largest spend in cents)
_MERCHANTS = (
    ("Whole Foods Market", "groceries", 1_200, 18_000),
    ("Trader Joe's", "groceries", 800, 9_000),
    ("Shell", "transport", 2_000, 9_500),
    ("Uber", "transport", 700, 6_000),
    ("Netflix", "subscriptions", 1_549, 1_549),
    ("Spotify", "subscriptions", 1_199, 1_199),
    ("Blue Bottle Coffee", "eating_out", 450, 1_800),
    ("Chipotle", "eating_out", 900, 3_500),
    ("Amazon", "shopping", 1_000, 25_000),
    ("Con Edison", "utilities", 6_000, 21_000),
)
_PAYROLL = ("ACME Corp Payroll", "income", 250_000, 480_000)


class SandboxAccount(BaseModel):
    """One bank account as the aggregator reports it; ``balance`` is a decimal string."""

    model_config = ConfigDict(frozen=True)

    external_id: str
    user_id: int
    name: str
    type: str
    currency: str
    balance: str


class SandboxTransaction(BaseModel):
    """One posted transaction; ``amount`` is a decimal string, negative for money going out."""

    model_config = ConfigDict(frozen=True)

    id: str
    account_id: str
    posted_on: date
    amount: str
    currency: str
    merchant: str
    description: str
    category: str


def account_id(user_id: int, index: int) -> str:
    """The external id of a user's ``index``-th account."""
    return f"acc-{user_id}-{index}"


def parse_account_id(external_id: str) -> tuple[int, int] | None:
    """``(user_id, index)`` of an account that exists, ``None`` for any other id."""
    match = _ACCOUNT_ID.fullmatch(external_id)
    if match is None:
        return None
    user_id, index = int(match[1]), int(match[2])
    return (user_id, index) if index < account_count(user_id) else None


def account_count(user_id: int) -> int:
    """How many accounts a user has linked: 1 to ``MAX_ACCOUNTS_PER_USER``."""
    return 1 + _rng(f"user-{user_id}").randrange(MAX_ACCOUNTS_PER_USER)


def expected_accounts(user_id: int) -> list[SandboxAccount]:
    """Every account of a user, in the order the sandbox lists them."""
    return [expected_account(account_id(user_id, i)) for i in range(account_count(user_id))]


@lru_cache(maxsize=1024)
def expected_account(external_id: str) -> SandboxAccount:
    """The account with its balance; ``KeyError`` for an account that does not exist."""
    parsed = parse_account_id(external_id)
    if parsed is None:
        raise KeyError(external_id)
    rng = _rng(external_id)
    kind, name = _ACCOUNT_KINDS[parsed[1] % len(_ACCOUNT_KINDS)]
    currency = rng.choice(_CURRENCIES)
    opening_cents = rng.randrange(50_000, 1_000_000)
    moved_cents = sum(_cents(tx.amount) for tx in expected_transactions(external_id))
    return SandboxAccount(
        external_id=external_id,
        user_id=parsed[0],
        name=f"{name} ...{rng.randrange(10_000):04d}",
        type=kind,
        currency=currency,
        balance=_money(opening_cents + moved_cents),
    )


@lru_cache(maxsize=1024)
def expected_transactions(external_id: str) -> tuple[SandboxTransaction, ...]:
    """Every transaction of an account, oldest first (the order pages come in).

    Ids are ``tx-<account>-<n>``: stable, unique across accounts, and in the same order as
    ``(posted_on, id)``. ``KeyError`` for an account that does not exist.
    """
    if parse_account_id(external_id) is None:
        raise KeyError(external_id)
    rng = _rng(f"{external_id}/transactions")
    currency = _rng(external_id).choice(_CURRENCIES)
    count = rng.randrange(40, 120)
    first_day = HISTORY_ENDS_ON - timedelta(days=HISTORY_DAYS - 1)
    days = sorted(rng.randrange(HISTORY_DAYS) for _ in range(count))
    transactions = []
    for n, day in enumerate(days):
        payday = rng.random() < 0.06
        merchant, category, low, high = _PAYROLL if payday else rng.choice(_MERCHANTS)
        cents = rng.randint(low, high)
        transactions.append(
            SandboxTransaction(
                id=f"tx-{external_id}-{n:04d}",
                account_id=external_id,
                posted_on=first_day + timedelta(days=day),
                amount=_money(cents if payday else -cents),
                currency=currency,
                merchant=merchant,
                description=f"{'DIRECT DEP' if payday else 'CARD'} {merchant.upper()} "
                f"#{rng.randrange(100_000):05d}",
                category=category,
            )
        )
    return tuple(transactions)


def _rng(key: str) -> random.Random:
    """An RNG seeded from ``key`` the same way in every process (``hash()`` is salted)."""
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _money(cents: int) -> str:
    return str((Decimal(cents) / 100).quantize(Decimal("0.01")))


def _cents(amount: str) -> int:
    return int(Decimal(amount) * 100)
