"""The sandbox provider: deterministic data, complete pagination, refreshes and injected faults."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.db.models import ProviderAccount
from app.db.session import transaction
from app.local.seed import seed
from sandbox.app import create_app
from sandbox.config import SandboxConfig
from sandbox.data import expected_accounts, expected_transactions


class FakeClock:
    """A monotonic clock the test moves by hand, so nothing in these tests waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordedSleep:
    """Stands in for ``asyncio.sleep``: remembers the latency the sandbox added."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def sleep():
    return RecordedSleep()


def sandbox(clock=None, sleep=None, **config):
    """A test client over a fresh sandbox with ``config`` (and the test's clock and sleep)."""
    extra = {"clock": clock} if clock else {}
    extra |= {"sleep": sleep} if sleep else {}
    return TestClient(create_app(SandboxConfig(**config, **extra)))


def download(client, account, page_size=50, headers=None):
    """Every transaction of ``account``, page after page, as the JSON the sandbox served."""
    transactions, cursor = [], None
    while True:
        params = {"limit": page_size} | ({"cursor": cursor} if cursor else {})
        page = client.get(f"/accounts/{account}/transactions", params=params, headers=headers)
        assert page.status_code == 200, page.text
        transactions += page.json()["transactions"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return transactions


def as_json(transactions):
    return [t.model_dump(mode="json") for t in transactions]


@pytest.fixture(scope="module")
def shared():
    with TestClient(create_app()) as client:
        yield client


# --- deterministic data --------------------------------------------------------------------


def test_an_account_has_the_same_transactions_in_every_sandbox():
    # Given two sandboxes, as two runs of the demo would start
    first, second = sandbox(), sandbox()

    # When each serves account acc-17-0
    served = [download(first, "acc-17-0"), download(second, "acc-17-0")]

    # Then both serve exactly what the pure function says the account holds
    assert served[0] == served[1] == as_json(expected_transactions("acc-17-0"))
    assert len(served[0]) >= 40


def test_different_accounts_have_different_transactions():
    a, b = expected_transactions("acc-17-0"), expected_transactions("acc-17-1")

    assert {t.id for t in a}.isdisjoint({t.id for t in b})
    assert [(t.posted_on, t.amount, t.merchant) for t in a] != [
        (t.posted_on, t.amount, t.merchant) for t in b
    ]


def test_transactions_are_in_a_stable_order_with_unique_ids():
    transactions = expected_transactions("acc-3-0")

    assert len({t.id for t in transactions}) == len(transactions)
    assert [(t.posted_on, t.id) for t in transactions] == sorted(
        (t.posted_on, t.id) for t in transactions
    )


def test_a_user_lists_its_accounts_with_balances(shared):
    response = shared.get("/users/17/accounts")

    assert response.status_code == 200
    assert response.json()["accounts"] == [a.model_dump() for a in expected_accounts(17)]
    first = shared.get("/accounts/acc-17-0").json()
    assert first == expected_accounts(17)[0].model_dump()


def test_an_unknown_account_is_a_404_with_a_json_body(shared):
    response = shared.get("/accounts/acc-17-99/transactions")

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no account 'acc-17-99'"}


# --- pagination ----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(user=st.integers(0, 10_000), page_size=st.integers(1, 130))
def test_pages_cover_every_transaction_exactly_once(shared, user, page_size):
    account = f"acc-{user}-0"

    served = download(shared, account, page_size=page_size)

    assert served == as_json(expected_transactions(account))


def test_a_cursor_the_sandbox_never_issued_is_a_400(shared):
    response = shared.get("/accounts/acc-1-0/transactions", params={"cursor": "bm9wZQ"})

    assert response.status_code == 400
    assert "not one this sandbox handed out" in response.json()["detail"]


# --- refresh -------------------------------------------------------------------------------


def test_a_refresh_is_in_progress_then_done_after_the_configured_time(clock):
    # Given a sandbox whose refreshes take 0.3 s
    client = sandbox(clock=clock, refresh_seconds=0.3)

    # When a refresh starts and the clock moves past half, then all, of that time
    started = client.post("/accounts/acc-5-0/refresh")
    clock.advance(0.15)
    halfway = client.get(started.headers["Location"]).json()
    clock.advance(0.15)
    finished = client.get(started.headers["Location"]).json()

    # Then it reports in_progress with its progress, then done at 100 %
    assert started.status_code == 202
    assert started.json()["status"] == "in_progress"
    assert (halfway["status"], halfway["progress_percent"]) == ("in_progress", 50)
    assert (finished["status"], finished["progress_percent"]) == ("done", 100)


def test_a_header_sets_how_long_this_refresh_takes(clock):
    client = sandbox(clock=clock, refresh_seconds=60)

    started = client.post("/accounts/acc-5-0/refresh", headers={"X-Sandbox-Refresh-Seconds": "1"})
    clock.advance(1)

    assert client.get(started.headers["Location"]).json()["status"] == "done"


def test_a_refresh_asked_never_to_finish_stays_in_progress(clock):
    client = sandbox(clock=clock, refresh_seconds=0.3)

    started = client.post(
        "/accounts/acc-5-0/refresh", headers={"X-Sandbox-Refresh-Never-Finishes": "true"}
    )
    clock.advance(3_600)

    status = client.get(started.headers["Location"]).json()
    assert (status["status"], status["progress_percent"]) == ("in_progress", 99)


def test_asking_again_while_a_refresh_runs_returns_that_refresh(clock):
    client = sandbox(clock=clock, refresh_seconds=0.3)

    first = client.post("/accounts/acc-5-0/refresh").json()
    again = client.post("/accounts/acc-5-0/refresh").json()
    clock.advance(0.3)
    after_done = client.post("/accounts/acc-5-0/refresh").json()

    assert again["refresh_id"] == first["refresh_id"]
    assert after_done["refresh_id"] != first["refresh_id"]


def test_an_unknown_refresh_is_a_404(shared):
    assert shared.get("/refreshes/ref-nope").status_code == 404


# --- faults --------------------------------------------------------------------------------


def test_over_the_rate_limit_the_sandbox_answers_429_with_retry_after(clock):
    # Given a sandbox and a client allowed 2 requests per second
    client = sandbox(clock=clock)
    limited = {"X-Sandbox-Rate-Limit": "2"}

    # When it sends 3 at once, then 3 more after half a second
    burst = [client.get("/accounts/acc-1-0", headers=limited) for _ in range(3)]
    clock.advance(0.5)
    later = client.get("/accounts/acc-1-0", headers=limited)

    # Then the third is refused with a Retry-After, and one token is back half a second on
    assert [r.status_code for r in burst] == [200, 200, 429]
    assert burst[2].headers["Retry-After"] == "1"
    assert burst[2].json()["error"] == "rate_limited"
    assert 0 < burst[2].json()["retry_after_ms"] <= 500
    assert later.status_code == 200
    stats = client.get("/_sandbox/stats").json()
    assert stats["endpoints"]["GET /accounts/{external_id}"]["by_status"] == {"200": 3, "429": 1}


def test_the_rate_limit_counts_each_client_on_its_own(clock):
    client = sandbox(clock=clock, rate_limit_per_s=1)

    first = client.get("/accounts/acc-1-0", headers={"X-Sandbox-Client-Id": "a"})
    other = client.get("/accounts/acc-1-0", headers={"X-Sandbox-Client-Id": "b"})
    again = client.get("/accounts/acc-1-0", headers={"X-Sandbox-Client-Id": "a"})

    assert [first.status_code, other.status_code, again.status_code] == [200, 200, 429]


def test_stats_count_requests_per_second_of_arrival(clock):
    # Given a sandbox limited to 3 requests per second
    client = sandbox(clock=clock, rate_limit_per_s=3)

    # When 5 requests arrive in second 0 and 2 in second 1
    for _ in range(5):
        client.get("/users/1/accounts")
    clock.advance(1)
    for _ in range(2):
        client.get("/users/1/accounts")

    # Then the stats show each second's arrivals and refusals
    stats = client.get("/_sandbox/stats").json()
    assert stats["per_second"] == [
        {"second": 0, "requests": 5, "rate_limited": 2},
        {"second": 1, "requests": 2, "rate_limited": 0},
    ]
    assert (stats["total_requests"], stats["max_requests_per_second"]) == (7, 5)


def test_resetting_the_stats_starts_the_count_again(shared):
    shared.get("/users/1/accounts")

    shared.delete("/_sandbox/stats")

    assert shared.get("/_sandbox/stats").json()["total_requests"] == 0


def test_a_fail_rate_of_one_fails_every_request_with_a_json_5xx(shared):
    responses = [
        shared.get("/accounts/acc-1-0", headers={"X-Sandbox-Fail-Rate": "1"}) for _ in range(20)
    ]

    assert all(r.status_code in {500, 502, 503} for r in responses)
    assert {r.json()["error"] for r in responses} == {"sandbox_fault"}


def test_a_seeded_fail_rate_fails_the_same_requests_every_run():
    def statuses():
        client = sandbox(seed=42, fail_rate=0.3)
        return [client.get("/accounts/acc-1-0").status_code for _ in range(300)]

    first, second = statuses(), statuses()

    assert first == second
    assert 60 <= sum(s >= 500 for s in first) <= 120


def test_latency_is_added_before_the_answer(sleep):
    client = sandbox(sleep=sleep, latency_ms=20)

    client.get("/accounts/acc-1-0")
    client.get("/accounts/acc-1-0", headers={"X-Sandbox-Latency-Ms": "250"})

    assert sleep.slept == [0.02, 0.25]


def test_a_bad_fault_header_is_a_400_naming_it(shared):
    response = shared.get("/accounts/acc-1-0", headers={"X-Sandbox-Fail-Rate": "often"})

    assert response.status_code == 400
    assert response.json()["detail"].startswith("X-Sandbox-Fail-Rate='often'")


def test_faults_come_from_the_environment():
    config = SandboxConfig.from_env(
        {
            "SANDBOX_LATENCY_MS": "15",
            "SANDBOX_FAIL_RATE": "0.1",
            "SANDBOX_RATE_LIMIT": "5",
            "SANDBOX_REFRESH_SECONDS": "0",
            "SANDBOX_REFRESH_NEVER_FINISHES": "yes",
            "SANDBOX_SEED": "7",
        }
    )

    assert (config.latency_ms, config.fail_rate, config.rate_limit_per_s) == (15, 0.1, 5.0)
    assert (config.refresh_seconds, config.refresh_never_finishes, config.seed) == (0, True, 7)


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(ValueError, match="SANDBOX_FAIL_RATE"):
        SandboxConfig.from_env({"SANDBOX_FAIL_RATE": "2"})


# --- the demo's seed ---------------------------------------------------------------------------


def test_every_seeded_account_is_one_the_sandbox_serves(database):
    # Given the demo's users and their linked accounts, seeded
    seed(database, users=120)
    with transaction() as session:
        rows = session.execute(select(ProviderAccount.user_id, ProviderAccount.external_id))
        seeded: dict[int, set[str]] = {}
        for user_id, external_id in rows:
            seeded.setdefault(user_id, set()).add(external_id)

    # When the sandbox is asked for each user's accounts, and for each account
    client = sandbox()
    served = {user_id: _served_accounts(client, user_id) for user_id in seeded}
    answers = {
        client.get(f"/accounts/{external_id}").status_code
        for accounts in seeded.values()
        for external_id in accounts
    }

    # Then it serves exactly the seeded accounts of every user, and knows each one
    assert len(seeded) == 120
    assert served == seeded
    assert answers == {200}


def _served_accounts(client: TestClient, user_id: int) -> set[str]:
    accounts = client.get(f"/users/{user_id}/accounts").json()["accounts"]
    return {account["external_id"] for account in accounts}
