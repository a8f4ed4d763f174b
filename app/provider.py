"""fintask's client for the bank-data provider: the sandbox in tests and the demo, a real
aggregator wherever ``PROVIDER_URL`` points in production.

Every call carries explicit timeouts, because httpx's 5 s default is nobody's decision and an
actor blocked on a silent peer burns its ``time_limit``. Every failure is one of three
exceptions, and its ``retryable`` says whether a retry can help:

- ``ProviderRateLimited`` (429): wait ``retry_after_ms`` and try again; not the peer's fault.
- ``ProviderUnavailable`` (5xx, 408, timeouts, refused connections): retry with backoff.
- ``ProviderError`` (any other 4xx, or a body fintask cannot read): retrying will not help.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import httpx

from app.settings import Settings, hide_credentials, load_settings

DEFAULT_TIMEOUT_S = 10.0
#: How long to wait after a 429 that did not say (no or unreadable ``Retry-After``).
DEFAULT_RETRY_AFTER_MS = 1_000
_SNIPPET_CHARS = 200

T = TypeVar("T")


class ProviderFailure(Exception):
    """Any failure to get an answer from the provider; catch a subclass where it matters."""

    retryable: ClassVar[bool] = False


class ProviderRateLimited(ProviderFailure):
    """429: the provider asks fintask to slow down for ``retry_after_ms``."""

    retryable = True

    def __init__(self, retry_after_ms: int, *, url: str = "") -> None:
        super().__init__(f"rate limited by the provider at {url}; retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms
        self.url = url


class ProviderUnavailable(ProviderFailure):
    """The provider did not answer in time, refused the connection or answered 5xx."""

    retryable = True

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ProviderError(ProviderFailure):
    """A 4xx (other than 408 and 429) or an unreadable answer: the same request fails again."""

    def __init__(self, status: int, body: str, *, url: str = "", reason: str = "") -> None:
        snippet = body[:_SNIPPET_CHARS]
        super().__init__(f"provider answered {status} at {url}{reason}: {snippet or '(no body)'}")
        self.status = status
        self.body = snippet
        self.url = url


@dataclass(frozen=True)
class RemoteAccount:
    """An account as the provider answers it; fintask's own row is ``models.ProviderAccount``."""

    external_id: str
    user_id: int
    name: str
    type: str
    currency: str
    balance: Decimal


@dataclass(frozen=True)
class ProviderTransaction:
    """A posted transaction; ``amount`` is negative for money going out."""

    id: str
    account_id: str
    posted_on: date
    amount: Decimal
    currency: str
    merchant: str
    description: str
    category: str


@dataclass(frozen=True)
class RefreshStatus:
    refresh_id: str
    account_id: str
    status: str
    progress_percent: int

    @property
    def done(self) -> bool:
        """Whether the provider has finished re-reading the account from the bank."""
        return self.status == "done"


@dataclass(frozen=True)
class TransactionPage:
    """One page, with ``raw`` (the decoded body) for whoever keeps the provider's own blob."""

    transactions: tuple[ProviderTransaction, ...]
    next_cursor: str | None
    raw: Mapping[str, Any]


class ProviderClient:
    """Typed calls to the provider's HTTP API over one ``httpx.Client``."""

    def __init__(
        self,
        *,
        base_url: str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float | None = None,
        client: httpx.Client | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """``client`` lets a test pass its own (a FastAPI ``TestClient`` is one); fintask's
        timeouts still apply to every call. ``headers`` go with every request."""
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s or timeout_s)
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client()
        self._headers = {"User-Agent": "fintask", **(headers or {})}

    @classmethod
    def from_settings(
        cls, settings: Settings | None = None, *, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> ProviderClient:
        """A client for ``PROVIDER_URL``."""
        settings = settings or load_settings()
        return cls(base_url=settings.provider_url, timeout_s=timeout_s)

    def list_accounts(self, user_id: int) -> list[RemoteAccount]:
        """Every account a user has linked at the provider."""
        response = self._request("GET", f"/users/{user_id}/accounts")
        return _parse(response, lambda body: [_account(a) for a in body["accounts"]])

    def get_account(self, external_id: str) -> RemoteAccount:
        """One account with its current balance."""
        return _parse(self._request("GET", f"/accounts/{_segment(external_id)}"), _account)

    def iter_transaction_pages(
        self, external_id: str, *, page_size: int = 100, cursor: str | None = None
    ) -> Iterator[TransactionPage]:
        """Every page of an account's transactions, from ``cursor`` (the start by default)."""
        path = f"/accounts/{_segment(external_id)}/transactions"
        while True:
            params: dict[str, str | int] = {"limit": page_size}
            if cursor is not None:
                params["cursor"] = cursor
            response = self._request("GET", path, params=params)
            page = _parse(response, _page)
            yield page
            if page.next_cursor is None:
                return
            if page.next_cursor == cursor:
                # A provider that hands back the cursor it was given would keep us here forever.
                reason = " (the next cursor is the one just used)"
                shown = hide_credentials(str(response.url))
                raise ProviderError(response.status_code, "", url=shown, reason=reason)
            cursor = page.next_cursor

    def iter_transactions(
        self, external_id: str, *, page_size: int = 100
    ) -> Iterator[ProviderTransaction]:
        """Every transaction of an account, in the provider's order, page after page."""
        for page in self.iter_transaction_pages(external_id, page_size=page_size):
            yield from page.transactions

    def start_refresh(self, external_id: str) -> RefreshStatus:
        """Ask the provider to re-read an account from the bank; poll ``get_refresh``."""
        response = self._request("POST", f"/accounts/{_segment(external_id)}/refresh")
        return _parse(response, _refresh)

    def get_refresh(self, refresh_id: str) -> RefreshStatus:
        """Where a refresh stands."""
        return _parse(self._request("GET", f"/refreshes/{_segment(refresh_id)}"), _refresh)

    def close(self) -> None:
        """Close the connection pool, unless the caller passed its own client."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _request(
        self, method: str, path: str, *, params: Mapping[str, str | int] | None = None
    ) -> httpx.Response:
        """Send one request; raise the failure that says whether to retry, or return a 2xx."""
        url = f"{self.base_url}{path}"
        # The errors name the URL without the credentials ``PROVIDER_URL`` may carry: their
        # text reaches logs, dead letters and Sentry.
        shown = hide_credentials(url)
        try:
            response = self._client.request(
                method, url, params=params, headers=self._headers, timeout=self.timeout
            )
        except httpx.TransportError as error:  # timeouts, refused or broken connections
            raise ProviderUnavailable(f"{method} {shown} failed: {error!r}") from error
        status = response.status_code
        if status == 429:
            retry_after = retry_after_ms(response.headers.get("Retry-After"))
            raise ProviderRateLimited(retry_after, url=shown)
        if status >= 500 or status == 408:
            snippet = response.text[:_SNIPPET_CHARS]
            raise ProviderUnavailable(
                f"{method} {shown} answered {status}: {snippet}", status=status
            )
        if status >= 400:
            raise ProviderError(status, response.text, url=shown)
        return response


def retry_after_ms(value: str | None, *, now: datetime | None = None) -> int:
    """Milliseconds to wait from a ``Retry-After`` of seconds or an HTTP date (RFC 9110).

    A date in the past means 0; a missing or unreadable value means ``DEFAULT_RETRY_AFTER_MS``.
    """
    text = (value or "").strip()
    if not text:
        return DEFAULT_RETRY_AFTER_MS
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER_MS
        if when.tzinfo is None:  # "-0000" in the date: UTC by RFC 5322
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return DEFAULT_RETRY_AFTER_MS
    return max(0, math.ceil(seconds * 1000))


def _parse(response: httpx.Response, build: Callable[[Any], T]) -> T:
    """``build`` the answer from the JSON body; a body it cannot read is a ``ProviderError``."""
    try:
        return build(response.json())
    except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as error:
        reason = f" (unreadable: {error!r})"
        raise ProviderError(
            response.status_code, response.text, url=str(response.url), reason=reason
        ) from error


def _segment(value: str) -> str:
    """``value`` as one path segment: a ``/`` or ``?`` in an id cannot reach another endpoint."""
    return quote(value, safe="")


def _account(body: Mapping[str, Any]) -> RemoteAccount:
    return RemoteAccount(
        external_id=str(body["external_id"]),
        user_id=int(body["user_id"]),
        name=str(body["name"]),
        type=str(body["type"]),
        currency=str(body["currency"]),
        balance=Decimal(str(body["balance"])),
    )


def _transaction(body: Mapping[str, Any]) -> ProviderTransaction:
    return ProviderTransaction(
        id=str(body["id"]),
        account_id=str(body["account_id"]),
        posted_on=date.fromisoformat(body["posted_on"]),
        amount=Decimal(str(body["amount"])),
        currency=str(body["currency"]),
        merchant=str(body["merchant"]),
        description=str(body["description"]),
        category=str(body["category"]),
    )


def _page(body: Mapping[str, Any]) -> TransactionPage:
    next_cursor = body.get("next_cursor")
    return TransactionPage(
        transactions=tuple(_transaction(t) for t in body["transactions"]),
        next_cursor=None if next_cursor is None else str(next_cursor),
        raw=body,
    )


def _refresh(body: Mapping[str, Any]) -> RefreshStatus:
    return RefreshStatus(
        refresh_id=str(body["refresh_id"]),
        account_id=str(body["account_id"]),
        status=str(body["status"]),
        progress_percent=int(body["progress_percent"]),
    )
