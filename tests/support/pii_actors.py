"""Actors that fail the way a finance workload fails, their exceptions quoting a user's e-mail
address, card number or IBAN: for tests that look for that data wherever text leaves a real
worker (``dramatiq app.broker:setup_broker tests.support.pii_actors``).

They take no arguments (the guardrails refuse personal data in a message): the data is their
own, below. ``bounce`` also logs the address as a log argument, and is retried once, so that its
dead letter keeps the traceback Dramatiq's ``Retries`` stores in the message's options.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.house_rules import fintask_actor

QUEUE = "pii"

EMAIL = "ada.lovelace@example.com"
CARD = "4111 1111 1111 1111"  # passes the Luhn check
IBAN = "GB82 WEST 1234 5698 7654 32"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Leak:
    """What one actor's failure quotes: every way it may be written out, and the placeholder
    that must stand in its place."""

    actor_name: str
    written: tuple[str, ...]
    placeholder: str
    #: The runs of one message: 1 + its retries.
    runs: int = 1


LEAKS = (
    Leak("bounce", (EMAIL,), "<email>", runs=2),
    Leak("charge", (CARD, CARD.replace(" ", "")), "<card>"),
    Leak("pay_out", (IBAN, IBAN.replace(" ", "")), "<iban>"),
)

_LIMITS = {
    "queue_name": QUEUE,
    "time_limit": 60_000,
    "max_age": 3_600_000,
    "min_backoff": 100,
    "max_backoff": 100,
}


class SendFailed(Exception):
    """The mail server refused the recipient."""


class CardDeclined(Exception):
    """The card issuer declined the charge."""


class PayoutRefused(Exception):
    """The receiving bank refused the transfer."""


@fintask_actor(**_LIMITS, max_retries=1)
def bounce(**kwargs: Any) -> None:
    """Fail as an SMTP 550 does: naming the recipient."""
    logger.warning("Mail to %s bounced", EMAIL)
    raise SendFailed(f"550 5.1.1 <{EMAIL}>: no such user")


@fintask_actor(**_LIMITS, max_retries=0)
def charge(**kwargs: Any) -> None:
    """Fail as a card processor does: naming the card."""
    raise CardDeclined(f"card {CARD} declined")


@fintask_actor(**_LIMITS, max_retries=0)
def pay_out(**kwargs: Any) -> None:
    """Fail as a payout does: naming the account."""
    raise PayoutRefused(f"account {IBAN} is closed")
