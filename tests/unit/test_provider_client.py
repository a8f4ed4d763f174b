"""The provider client: typed answers, every page read, each fault mapped to its exception."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from fastapi.testclient import TestClient

from app.local.ports import free_port
from app.provider import (
    DEFAULT_RETRY_AFTER_MS,
    ProviderClient,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
    retry_after_ms,
)
from app.settings import load_settings
from sandbox.app import create_app
from sandbox.config import SandboxConfig
from sandbox.data import expected_accounts, expected_transactions

SECRET = "bankpw-Hq42"

# The client passes its timeouts on every call, as it must in production; the in-process
# TestClient ignores them and warns about it.
pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


def provider(clock=None, headers=None, **config):
    """A client talking to a fresh in-process sandbox configured with ``config``."""
    sandbox = create_app(SandboxConfig(**config, **({"clock": clock} if clock else {})))
    return ProviderClient(
        base_url="http://testserver", timeout_s=5, client=TestClient(sandbox), headers=headers
    )


def mocked(handler, **kwargs):
    """A client whose every request is answered by ``handler(request)``."""
    transport = httpx.MockTransport(handler)
    return ProviderClient(
        base_url="http://bank.test", client=httpx.Client(transport=transport), **kwargs
    )


def test_the_client_reads_every_page_of_an_account():
    # Given a sandbox account with more transactions than fit in one page
    client = provider()
    expected = expected_transactions("acc-17-0")

    # When the client reads its transactions 7 at a time
    pages = list(client.iter_transaction_pages("acc-17-0", page_size=7))
    transactions = list(client.iter_transactions("acc-17-0", page_size=7))

    # Then it got every transaction once, in order, as typed values
    assert len(pages) == math.ceil(len(expected) / 7)
    assert [t.id for t in transactions] == [t.id for t in expected]
    assert [t.amount for t in transactions] == [Decimal(t.amount) for t in expected]
    assert [t.posted_on for t in transactions] == [t.posted_on for t in expected]
    assert pages[0].raw["transactions"][0]["id"] == expected[0].id


def test_the_client_resumes_from_a_cursor():
    client = provider()
    first = next(client.iter_transaction_pages("acc-17-0", page_size=10))

    rest = client.iter_transaction_pages("acc-17-0", page_size=10, cursor=first.next_cursor)

    ids = [t.id for t in first.transactions] + [t.id for p in rest for t in p.transactions]
    assert ids == [t.id for t in expected_transactions("acc-17-0")]


def test_accounts_come_back_typed_with_decimal_balances():
    client = provider()

    accounts = client.list_accounts(17)
    one = client.get_account("acc-17-0")

    assert [a.external_id for a in accounts] == [a.external_id for a in expected_accounts(17)]
    assert one == accounts[0]
    assert one.balance == Decimal(expected_accounts(17)[0].balance)


def test_a_refresh_is_polled_until_done(clock):
    client = provider(clock=clock, refresh_seconds=0.3)

    started = client.start_refresh("acc-17-0")
    clock.now += 0.3
    finished = client.get_refresh(started.refresh_id)

    assert (started.status, started.done) == ("in_progress", False)
    assert (finished.done, finished.progress_percent) == (True, 100)


def test_a_429_raises_rate_limited_with_the_wait_the_provider_asked_for():
    client = provider(headers={"X-Sandbox-Rate-Limit": "1"})
    client.get_account("acc-1-0")

    with pytest.raises(ProviderRateLimited) as error:
        client.get_account("acc-1-0")

    assert error.value.retry_after_ms == 1_000
    assert error.value.retryable


def test_a_5xx_raises_unavailable():
    client = provider(headers={"X-Sandbox-Fail-Rate": "1"})

    with pytest.raises(ProviderUnavailable) as error:
        list(client.iter_transactions("acc-1-0"))

    assert error.value.status in {500, 502, 503}
    assert error.value.retryable


def test_a_404_raises_provider_error_with_status_and_body():
    client = provider()

    with pytest.raises(ProviderError) as error:
        client.get_account("acc-1-99")

    assert error.value.status == 404
    assert "no account 'acc-1-99'" in error.value.body
    assert not error.value.retryable


@pytest.mark.parametrize(
    ("status", "exception", "retryable"),
    [
        (400, ProviderError, False),
        (403, ProviderError, False),
        (408, ProviderUnavailable, True),
        (504, ProviderUnavailable, True),
    ],
)
def test_each_status_maps_to_whether_a_retry_can_help(status, exception, retryable):
    client = mocked(lambda request: httpx.Response(status, json={"error": "x"}))

    with pytest.raises(exception) as error:
        client.get_account("acc-1-0")

    assert error.value.retryable is retryable
    assert error.value.status == status


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), httpx.RemoteProtocolError("x")],
)
def test_timeouts_and_broken_connections_raise_unavailable(failure):
    def handler(request):
        raise failure

    with pytest.raises(ProviderUnavailable):
        mocked(handler).get_account("acc-1-0")


def test_a_refused_connection_raises_unavailable():
    with (
        ProviderClient(base_url=f"http://127.0.0.1:{free_port()}", timeout_s=2) as client,
        pytest.raises(ProviderUnavailable),
    ):
        client.list_accounts(1)


def test_a_failure_names_the_url_without_the_credentials_provider_url_carries():
    # The failure's text is logged, kept as a dead letter's reason and sent to Sentry.
    port = free_port()
    refused = ProviderClient(base_url=f"http://bank:{SECRET}@127.0.0.1:{port}", timeout_s=2)
    sandbox = TestClient(create_app(SandboxConfig()))
    answered = ProviderClient(base_url=f"http://bank:{SECRET}@testserver", client=sandbox)

    with refused, pytest.raises(ProviderUnavailable) as unavailable:
        refused.list_accounts(1)
    with pytest.raises(ProviderError) as error:
        answered.get_account("acc-1-99")

    assert str(unavailable.value).startswith(f"GET http://***@127.0.0.1:{port}/users/1/accounts")
    assert str(error.value).startswith("provider answered 404 at http://***@testserver/accounts/")
    assert SECRET not in str(unavailable.value) + str(error.value) + error.value.url


def test_every_call_carries_the_configured_timeouts():
    seen = []

    def handler(request):
        seen.append(request.extensions["timeout"])
        return httpx.Response(
            200,
            json={"refresh_id": "r", "account_id": "a", "status": "done", "progress_percent": 100},
        )

    client = mocked(handler, timeout_s=4, connect_timeout_s=1)
    client.start_refresh("acc-1-0")
    client.get_refresh("r")

    assert seen == [{"connect": 1, "read": 4, "write": 4, "pool": 4}] * 2


def test_an_unreadable_answer_raises_provider_error():
    client = mocked(lambda request: httpx.Response(200, text="<html>maintenance</html>"))

    with pytest.raises(ProviderError, match="unreadable"):
        client.list_accounts(1)


def test_a_429_with_an_http_date_waits_until_that_date():
    later = "Wed, 21 Oct 2099 07:28:30 GMT"
    client = mocked(lambda request: httpx.Response(429, headers={"Retry-After": later}))

    with pytest.raises(ProviderRateLimited) as error:
        client.get_account("acc-1-0")

    assert error.value.retry_after_ms > 1_000 * 3600 * 24 * 365


@pytest.mark.parametrize(
    ("header", "expected_ms"),
    [
        ("120", 120_000),
        ("0.25", 250),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30_000),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0),
        (None, DEFAULT_RETRY_AFTER_MS),
        ("soon", DEFAULT_RETRY_AFTER_MS),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header, expected_ms):
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)

    assert retry_after_ms(header, now=now) == expected_ms


def test_from_settings_uses_provider_url(monkeypatch):
    monkeypatch.setenv("PROVIDER_URL", "http://bank.internal:9000/")

    assert ProviderClient.from_settings().base_url == "http://bank.internal:9000"
    assert ProviderClient.from_settings(load_settings({})).base_url == "http://127.0.0.1:8001"
