"""The sandbox's HTTP API: accounts, paginated transactions and refreshes, with faults on top.

Every endpoint outside ``/_sandbox/`` passes through the faults first (rate limit, latency,
random 5xx) and is counted; ``/_sandbox/`` is the test's own view of the sandbox and is never
faulted or counted. Every error answers with a JSON body ``{"error": ..., "detail": ...}``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from sandbox.config import SandboxConfig
from sandbox.data import (
    SandboxAccount,
    SandboxTransaction,
    expected_account,
    expected_accounts,
    expected_transactions,
)
from sandbox.faults import (
    CLIENT_ID_HEADER,
    BadFaultHeader,
    FailureDice,
    RateLimiter,
    RequestFaults,
    retry_after_header,
)
from sandbox.refresh import Refreshes, RefreshStatus
from sandbox.stats import RequestStats, StatsReport

CONTROL_PREFIX = "/_sandbox/"
_UNFAULTED_PATHS = {"/docs", "/redoc", "/openapi.json"}
MAX_PAGE_SIZE = 500


class ErrorBody(BaseModel):
    """Every error's body; ``retry_after_ms`` only on 429, more precise than ``Retry-After``."""

    error: str
    detail: Any
    retry_after_ms: int | None = None


class AccountList(BaseModel):
    user_id: int
    accounts: list[SandboxAccount]


class TransactionPage(BaseModel):
    """One page; ``next_cursor`` (and the ``next`` link) is ``null`` on the last page."""

    account_id: str
    transactions: list[SandboxTransaction]
    total: int
    next_cursor: str | None
    next: str | None


def create_app(config: SandboxConfig | None = None) -> FastAPI:
    """A sandbox with its own state (refreshes, rate-limit buckets, stats) and ``config``."""
    config = config or SandboxConfig()
    refreshes = Refreshes(clock=config.clock)
    limiter = RateLimiter(clock=config.clock)
    dice = FailureDice(seed=config.seed)
    stats = RequestStats(clock=config.clock)
    app = FastAPI(
        title="fintask sandbox bank-data provider",
        summary="A bank aggregator's sandbox with deterministic data and injectable faults.",
        version="0.1.0",
        responses={404: {"model": ErrorBody}, 429: {"model": ErrorBody}, 503: {"model": ErrorBody}},
    )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, exc.detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        return _error(422, jsonable_encoder(exc.errors()), error="invalid_request")

    @app.middleware("http")
    async def faults_and_stats(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        path = request.url.path
        if path.startswith(CONTROL_PREFIX) or path in _UNFAULTED_PATHS:
            return await call_next(request)
        arrived_at = config.clock()
        response = await _apply_faults(request, call_next)
        endpoint = _endpoint(app, request)
        stats.record(endpoint=endpoint, status=response.status_code, arrived_at=arrived_at)
        return response

    async def _apply_faults(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            faults = RequestFaults.resolve(config, request.headers)
        except BadFaultHeader as error:
            return _error(400, str(error), error="bad_sandbox_header")
        if faults.rate_limit_per_s is not None:
            client = request.headers.get(CLIENT_ID_HEADER) or _address(request)
            wait_s = limiter.acquire(client, faults.rate_limit_per_s)
            if wait_s > 0:
                return _error(
                    429,
                    f"more than {faults.rate_limit_per_s:g} requests per second from {client!r}",
                    error="rate_limited",
                    headers={"Retry-After": retry_after_header(wait_s)},
                    retry_after_ms=max(1, round(wait_s * 1000)),
                )
        if faults.latency_ms:
            await config.sleep(faults.latency_ms / 1000)
        fault_status = dice.roll(faults.fail_rate)
        if fault_status is not None:
            return _error(fault_status, "injected fault", error="sandbox_fault")
        return await call_next(request)

    @app.get("/users/{user_id}/accounts", response_model=AccountList)
    async def list_accounts(user_id: Annotated[int, Path(ge=0)]) -> AccountList:
        """Every account a user has linked (a login's accounts)."""
        return AccountList(user_id=user_id, accounts=expected_accounts(user_id))

    @app.get("/accounts/{external_id}", response_model=SandboxAccount)
    async def get_account(external_id: str) -> SandboxAccount:
        """One account with its current balance."""
        return _account(external_id)

    @app.get("/accounts/{external_id}/transactions", response_model=TransactionPage)
    async def list_transactions(
        external_id: str,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = 50,
    ) -> TransactionPage:
        """A page of an account's transactions, oldest first; follow ``next_cursor`` for more."""
        transactions = expected_transactions(_account(external_id).external_id)
        offset = 0 if cursor is None else _decode_cursor(cursor, len(transactions))
        end = offset + limit
        next_cursor = _encode_cursor(end) if end < len(transactions) else None
        return TransactionPage(
            account_id=external_id,
            transactions=list(transactions[offset:end]),
            total=len(transactions),
            next_cursor=next_cursor,
            next=None
            if next_cursor is None
            else f"/accounts/{external_id}/transactions?cursor={next_cursor}&limit={limit}",
        )

    @app.post("/accounts/{external_id}/refresh", status_code=202, response_model=RefreshStatus)
    async def start_refresh(
        external_id: str, request: Request, response: Response
    ) -> RefreshStatus:
        """Start re-reading an account from the bank; poll ``Location`` until it is ``done``."""
        faults = RequestFaults.resolve(config, request.headers)
        status = refreshes.start(
            _account(external_id).external_id,
            duration_s=faults.refresh_seconds,
            never_finishes=faults.refresh_never_finishes,
        )
        response.headers["Location"] = f"/refreshes/{status.refresh_id}"
        return status

    @app.get("/refreshes/{refresh_id}", response_model=RefreshStatus)
    async def get_refresh(refresh_id: str) -> RefreshStatus:
        """Where a refresh stands, with its progress in percent."""
        status = refreshes.status(refresh_id)
        if status is None:
            raise HTTPException(404, f"no refresh {refresh_id!r}")
        return status

    @app.get(f"{CONTROL_PREFIX}stats", response_model=StatsReport)
    async def get_stats() -> StatsReport:
        """What the sandbox answered so far, per endpoint, status and second."""
        return stats.report()

    @app.delete(f"{CONTROL_PREFIX}stats", status_code=204)
    async def reset_stats() -> None:
        """Forget the counts and every client's rate-limit bucket."""
        stats.reset()
        limiter.reset()

    return app


def _account(external_id: str) -> SandboxAccount:
    try:
        return expected_account(external_id)
    except KeyError:
        raise HTTPException(404, f"no account {external_id!r}") from None


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, total: int) -> int:
    """The offset a cursor from ``_encode_cursor`` points at; 400 for anything else."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        offset = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        offset = -1
        prefix = ""
    if prefix != "offset" or not 0 < offset < total:
        raise HTTPException(400, f"cursor {cursor!r} is not one this sandbox handed out")
    return offset


def _endpoint(app: FastAPI, request: Request) -> str:
    """``"GET /accounts/{external_id}"``: the method and the route template a request matched."""
    for route in app.router.routes:
        match, _ = route.matches(request.scope)
        if match is Match.FULL:
            return f"{request.method} {getattr(route, 'path', request.url.path)}"
    return f"{request.method} (no route)"


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _error(
    status: int,
    detail: Any,
    *,
    error: str | None = None,
    headers: Mapping[str, str] | None = None,
    retry_after_ms: int | None = None,
) -> JSONResponse:
    slug = error or HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    body = ErrorBody(error=slug, detail=detail, retry_after_ms=retry_after_ms)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)
