"""The daily digest (a scheduled job with catch-up): one e-mail per active user and day, however
often its tick, its pages or its messages run."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

import actors.digest
from app.db.models import Notification, ProviderAccount, Transaction, User
from app.db.session import transaction
from app.house_rules import fintask_actor
from pipelines import digest

DAY = dt.date(2024, 6, 1)
TICK = "2024-06-02T06:00:00+00:00"


def add_users(*active: bool) -> list[int]:
    with transaction() as session:
        users = [
            User(email=f"user{n}@example.com", name=f"User {n}", is_active=is_active)
            for n, is_active in enumerate(active)
        ]
        session.add_all(users)
    return [user.id for user in users]


def add_transactions(user_id: int, *moves: tuple[dt.date, str, str]) -> None:
    with transaction() as session:
        account = ProviderAccount(user_id=user_id, provider="sandbox", external_id=f"a-{user_id}")
        session.add(account)
        session.flush()
        for n, (posted_on, amount, currency) in enumerate(moves):
            session.add(
                Transaction(
                    account_id=account.id,
                    provider_transaction_id=f"t-{n}",
                    posted_on=posted_on,
                    amount=Decimal(amount),
                    currency=currency,
                    description="",
                )
            )


def digests() -> list[tuple[str, int]]:
    with transaction() as session:
        rows = session.execute(select(Notification.dedup_key, Notification.user_id))
        return sorted((key, user_id) for key, user_id in rows)


def test_the_digest_covers_the_utc_day_before_its_tick():
    assert digest.digest_day(TICK) == DAY
    assert digest.digest_day("2024-06-02T01:30:00+05:30") == dt.date(2024, 5, 31)
    assert digest.digest_day(None, now=lambda: dt.datetime(2024, 6, 2, 23, tzinfo=dt.UTC)) == DAY


def test_a_users_digest_sums_up_their_day_once(user, stub_broker):
    # Given transactions on the day and on the day after
    next_day = DAY + dt.timedelta(days=1)
    add_transactions(
        user.id,
        (DAY, "100.00", "EUR"),
        (DAY, "-30.50", "EUR"),
        (DAY, "-5", "USD"),
        (next_day, "-9", "EUR"),
    )

    # When the digest runs twice (a redelivery)
    first = digest.send_digest(user.id, DAY)
    second = digest.send_digest(user.id, DAY)

    # Then one notification keyed by day and user says what happened that day, and one e-mail
    # message is queued
    assert first == second
    with transaction() as session:
        (notification,) = session.scalars(select(Notification))
    assert notification.dedup_key == f"digest:2024-06-01:{user.id}"
    assert (notification.kind, notification.channel) == ("daily_digest", "email")
    assert notification.body.splitlines()[2:] == [
        "2024-06-01: 2 transaction(s) in EUR, 100.00 in, 30.50 out.",
        "2024-06-01: 1 transaction(s) in USD, 0.00 in, 5.00 out.",
    ]
    assert stub_broker.queues["emails"].qsize() == 1


def test_no_digest_for_a_user_gone_or_inactive(database):
    (inactive,) = add_users(False)

    assert digest.send_digest(inactive, DAY) is None
    assert digest.send_digest(inactive + 100, DAY) is None
    assert digests() == []


def test_the_fan_out_pages_active_users_by_id_range(database):
    # Given five users, one inactive
    ids = add_users(True, False, True, True, True)
    sent: list[tuple[str, dict[str, Any]]] = []

    # When the fan-out runs with pages of two
    pages = digest.start(DAY, page_size=2, send=lambda actor, kwargs: sent.append((actor, kwargs)))

    # Then each page is a range of active ids, and each page sends one digest per active user
    day = DAY.isoformat()
    assert pages == 2
    assert sent == [
        ("send_digest_page", {"day": day, "first_id": ids[0], "last_id": ids[2]}),
        ("send_digest_page", {"day": day, "first_id": ids[3], "last_id": ids[4]}),
    ]
    per_user: list[tuple[str, dict[str, Any]]] = []
    digest.send_page(
        DAY, ids[0], ids[2], send=lambda actor, kwargs: per_user.append((actor, kwargs))
    )
    assert per_user == [
        ("send_digest", {"user_id": ids[0], "day": day}),
        ("send_digest", {"user_id": ids[2], "day": day}),
    ]


def test_past_its_soft_time_limit_the_fan_out_stops_after_a_page_and_sends_itself_the_rest(
    database, sinks, stub_broker, stub_worker
):
    # Given five active users, and a fan-out run on a worker with a soft time limit of 1 ms
    # whose sends take 5 ms each,
    ids = add_users(True, True, True, True, True)
    sent: list[tuple[str, dict[str, Any]]] = []

    def slow_send(actor: str, kwargs: dict[str, Any]) -> None:
        time.sleep(0.005)
        sent.append((actor, kwargs))

    @fintask_actor(
        queue_name="digests",
        time_limit=5_000,
        soft_time_limit_ms=1,
        max_age=60_000,
        max_retries=0,
        min_backoff=100,
        max_backoff=100,
    )
    def fan_out_in_pages_of_two(**kwargs: Any) -> None:
        digest.start(DAY, page_size=2, send=slow_send)

    # when it runs,
    try:
        fan_out_in_pages_of_two.send()
        stub_broker.join("digests", fail_fast=True)
        stub_worker.join()
    finally:
        del stub_broker.actors["fan_out_in_pages_of_two"]

    # then it stopped at the check after its first page and handed the rest to the periodic
    # entry, by day and the last id paged (no tick: it is not a second run of the tick);
    day = DAY.isoformat()
    assert sent == [
        ("send_digest_page", {"day": day, "first_id": ids[0], "last_id": ids[1]}),
        ("send_daily_digests", {"day": day, "after": ids[1]}),
    ]
    # The periodic entry, sent that, digests the users after that id only.
    actors.digest.send_daily_digests.send(**sent[-1][1])
    stub_broker.join("digests", fail_fast=True)
    stub_broker.join("emails", fail_fast=True)
    stub_worker.join()
    assert digests() == [(f"digest:{day}:{user_id}", user_id) for user_id in ids[2:]]


@pytest.mark.parametrize("runs", [1, 2])
def test_every_active_user_gets_one_digest_email_however_often_the_tick_runs(
    runs, database, sinks, stub_broker, stub_worker
):
    # Given three users, one inactive
    active_a, _, active_b = add_users(True, False, True)

    # When the periodic entry runs for one tick, once or twice (two schedulers, a retry)
    for _ in range(runs):
        actors.digest.send_daily_digests.send(tick=TICK)
        stub_broker.join("digests", fail_fast=True)
    stub_broker.join("emails", fail_fast=True)
    stub_worker.join()

    # Then each active user has one digest and one e-mail
    assert digests() == [
        (f"digest:2024-06-01:{active_a}", active_a),
        (f"digest:2024-06-01:{active_b}", active_b),
    ]
    assert sorted(mail["to"][0] for mail in sinks.mail()) == [
        "user0@example.com",
        "user2@example.com",
    ]
