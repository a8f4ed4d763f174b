"""The transform of the ETL, pure: a provider download in, typed and normalised records out.

A download (the raw blob) is the provider's own answers: ``{"account": ..., "pages": [...]}``.
A statement is what fintask stores: one record per transaction, its merchant normalised so
"Trader Joe's", "TRADER JOES" and "Trader Joe's #1234" are one merchant. Parsing is strict
(pydantic): data fintask cannot read fails the transform with a ``ValueError`` naming the
field, instead of storing a half-right row.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Money = Annotated[Decimal, Field(max_digits=14, decimal_places=2)]
Currency = Annotated[str, Field(min_length=3, max_length=3)]

_STORE_NUMBER = re.compile(r"\s*#\s*\d+\s*$")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")
_LEGAL_SUFFIXES = {"inc", "llc", "ltd", "co", "corp"}


class MerchantRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    normalized_name: str = Field(min_length=1, max_length=200)
    display_name: str = Field(max_length=200)
    category: str = Field(max_length=50)


class TransactionRecord(BaseModel):
    """One transaction as fintask stores it; ``amount`` is negative for money going out."""

    model_config = ConfigDict(frozen=True)

    provider_transaction_id: str = Field(min_length=1, max_length=100)
    posted_on: date
    amount: Money
    currency: Currency
    description: str = Field(max_length=500)
    category: str = Field(max_length=50)
    merchant: MerchantRecord | None


class Statement(BaseModel):
    """An account's balance and transactions, ready to store (the normalised blob)."""

    model_config = ConfigDict(frozen=True)

    external_id: str
    currency: Currency
    balance: Money
    transactions: tuple[TransactionRecord, ...]

    def to_json(self) -> bytes:
        """The statement as canonical JSON: the same statement always gives the same bytes."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, body: bytes) -> Statement:
        return cls.model_validate_json(body)


class _WireTransaction(BaseModel):
    id: str
    account_id: str
    posted_on: date
    amount: Money
    currency: Currency
    merchant: str
    description: str
    category: str


class _WirePage(BaseModel):
    transactions: list[_WireTransaction]


class _WireAccount(BaseModel):
    external_id: str
    currency: Currency
    balance: Money


class _WireDownload(BaseModel):
    account: _WireAccount
    pages: list[_WirePage]


def canonical_json(value: Any) -> bytes:
    """``value`` as JSON with sorted keys and no spaces, so equal data hashes equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def parse_download(body: bytes) -> Statement:
    """The statement in a raw download; ``ValueError`` (pydantic's, naming the field) if bad.

    A transaction that appears on two pages (the provider's pages shifted between requests)
    is kept once; one that belongs to another account is an error, not a silent drop.
    """
    download = _WireDownload.model_validate_json(body)
    account = download.account
    seen: set[str] = set()
    records = []
    for page in download.pages:
        for tx in page.transactions:
            if tx.account_id != account.external_id:
                raise ValueError(
                    f"transaction {tx.id!r} belongs to account {tx.account_id!r}, "
                    f"not {account.external_id!r}"
                )
            if tx.id in seen:
                continue
            seen.add(tx.id)
            records.append(
                TransactionRecord(
                    provider_transaction_id=tx.id,
                    posted_on=tx.posted_on,
                    amount=tx.amount,
                    currency=tx.currency,
                    description=" ".join(tx.description.split())[:500],
                    category=tx.category or "other",
                    merchant=normalize_merchant(tx.merchant, tx.category or "other"),
                )
            )
    return Statement(
        external_id=account.external_id,
        currency=account.currency,
        balance=account.balance,
        transactions=tuple(records),
    )


def normalize_merchant(name: str, category: str) -> MerchantRecord | None:
    """The merchant behind a provider's merchant string; ``None`` when it names none."""
    normalized = normalized_merchant_name(name)
    if not normalized:
        return None
    display = _STORE_NUMBER.sub("", " ".join(name.split()))
    return MerchantRecord(
        normalized_name=normalized[:200], display_name=display[:200], category=category
    )


def normalized_merchant_name(name: str) -> str:
    """``"Trader Joe's #0042"`` -> ``"trader-joes"``: ASCII, lower case, no store number,
    punctuation or legal suffix, words joined by ``-``."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    text = _STORE_NUMBER.sub("", text).replace("'", "")
    words = [word for word in _NOT_ALNUM.split(text) if word]
    while len(words) > 1 and words[-1] in _LEGAL_SUFFIXES:
        words.pop()
    return "-".join(words)
