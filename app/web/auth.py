"""Who may call the control API: a bearer token, the role it has, and a limit on guessing.

The token is read from ``Authorization: Bearer <token>`` and nowhere else: no cookie, no
query string. A browser never sends that header on its own, so a page on another site cannot
make an operator's browser act for them: that, not a CSRF token, is what makes every mutating
call CSRF-safe. (A token in a query string would also land in access logs and Referers.)

Guessing is limited per client address: failed attempts are counted in Redis for a window
that starts at the first failure, and an address with ``MAX_FAILURES`` in its window is
refused (429) until the window ends, even with a valid token. The address is the one the
server reports: behind a proxy, have the server take it from the proxy's ``X-Forwarded-For``,
or every client shares the proxy's count. If Redis is unreachable the limit is skipped, with a
warning, rather than locking every operator out while they may be repairing Redis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.control.tokens import Role, authenticate, can
from app.redis_client import get_redis
from app.settings import SettingsError
from app.web.deps import ErrorOut, SessionDep

#: Failed attempts one client address may make in a window; further ones are a 429.
MAX_FAILURES = 10
#: Seconds from an address's first failed attempt until its count starts again.
FAILURE_WINDOW_S = 60

#: What an endpoint behind these dependencies may answer besides its own (for its OpenAPI).
AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No API token, or one unknown or revoked."},
    403: {"model": ErrorOut, "description": "The token's role may not do this."},
    429: {"model": ErrorOut, "description": "Too many failed attempts from this address."},
}

_bearer = HTTPBearer(auto_error=False, description="An API token from `fintask tokens create`.")
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Principal:
    """The caller a valid token admits."""

    name: str
    role: str

    @property
    def who(self) -> str:
        """The caller as the audit trail names it."""
        return f"token:{self.name}"


def authenticated(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller its bearer token names; 401 without a live token, 429 after many failures."""
    address = request.client.host if request.client else "unknown"
    refuse_if_locked_out(address)
    if credentials is None:
        raise HTTPException(
            401,
            "this needs an API token: send the header `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with session.begin():  # commits last_used_at
        token = authenticate(session, credentials.credentials)
        principal = None if token is None else Principal(token.name, token.role)
    if principal is None:
        count_failure(address)
        raise HTTPException(
            401,
            "the API token is not valid: it is unknown or revoked",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return principal


def require_viewer(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """Any live token: every role may read."""
    return _require(principal, "viewer")


def require_operator(principal: Annotated[Principal, Depends(authenticated)]) -> Principal:
    """An operator's token: a viewer's is a 403."""
    return _require(principal, "operator")


#: An endpoint's parameter for its caller, admitted as a viewer or as an operator.
Viewer = Annotated[Principal, Depends(require_viewer)]
Operator = Annotated[Principal, Depends(require_operator)]


def _require(principal: Principal, needed: Role) -> Principal:
    if not can(principal.role, needed):
        raise HTTPException(
            403, f"the token {principal.name!r} has the role {principal.role}; this needs {needed}"
        )
    return principal


def _failures_key(address: str) -> str:
    return f"fintask:auth:failures:{address}"


def refuse_if_locked_out(address: str) -> None:
    """429 with ``Retry-After`` while ``address`` has used up its failures in this window."""
    key = _failures_key(address)
    try:
        with get_redis().pipeline() as pipe:
            pipe.get(key)
            pipe.ttl(key)
            failures, ttl_s = pipe.execute()
    except (redis.RedisError, SettingsError) as error:
        _logger.warning("the API's guessing limit is skipped: Redis is unavailable (%s)", error)
        return
    if failures is not None and int(failures) >= MAX_FAILURES:
        retry_after_s = max(int(ttl_s), 1)
        raise HTTPException(
            429,
            f"too many failed attempts from {address}; try again in {retry_after_s} s",
            headers={"Retry-After": str(retry_after_s)},
        )


def count_failure(address: str) -> None:
    """Count one failed attempt; the first in a window starts the window's clock."""
    key = _failures_key(address)
    try:
        # One MULTI: a count can never be left without its expiry (an address locked forever).
        with get_redis().pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, FAILURE_WINDOW_S, nx=True)
            pipe.execute()
    except (redis.RedisError, SettingsError) as error:
        _logger.warning("the API's guessing limit is skipped: Redis is unavailable (%s)", error)
