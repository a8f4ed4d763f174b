"""Signing in to the console with an API token, and signing out.

The sign-in form is protected like every other: its CSRF token is a random value also set in
a cookie of its own (a site cannot set this site's cookies, so it cannot forge the pair), so
no other site can sign a browser in with a token of the attacker's choosing. Failed attempts
count against the client address as the API's do (``app.web.auth``). The session cookie is
``HttpOnly``, ``SameSite=Strict`` and, when the request came over TLS, ``Secure``.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from app.control.tokens import authenticate
from app.redis_client import get_redis
from app.web.auth import count_failure, refuse_if_locked_out
from app.web.console.access import HOME, SIGN_IN, FormUser, safe_next
from app.web.console.render import render
from app.web.console.sessions import COOKIE, IDLE_S, LIFETIME_S, create_session, end_session
from app.web.deps import SessionDep

router = APIRouter()

#: The cookie holding the sign-in form's CSRF value, for that form only.
SIGN_IN_COOKIE = "fintask_console_sign_in"


@router.get(SIGN_IN)
def sign_in_page(request: Request, next: str = HOME) -> Response:
    """The sign-in form, with a fresh CSRF pair."""
    return _form(request, next_path=safe_next(next))


@router.post(SIGN_IN)
def sign_in(
    request: Request,
    session: SessionDep,
    token: Annotated[str, Form(max_length=200)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = HOME,
) -> Response:
    """Check the token; a live one starts a session and goes on to ``next``."""
    next_path = safe_next(next)
    expected = request.cookies.get(SIGN_IN_COOKIE, "")
    if not expected or not secrets.compare_digest(csrf_token, expected):
        return _form(request, next_path, "the form had expired: sign in again", status_code=403)
    address = request.client.host if request.client else "unknown"
    try:
        refuse_if_locked_out(address)
    except HTTPException as error:
        return _form(request, next_path, str(error.detail), status_code=error.status_code)
    with session.begin():
        found = authenticate(session, token.strip())
        signed = None if found is None else (found.name, found.role)
    if signed is None:
        count_failure(address)
        return _form(request, next_path, "that token is not valid: it is unknown or revoked", 401)
    user = create_session(get_redis(), token_name=signed[0], role=signed[1])
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        COOKIE,
        user.session_id,
        max_age=min(IDLE_S, LIFETIME_S),
        path=HOME,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=SIGN_IN)
    return response


@router.post("/console/sign-out")
def sign_out(user: FormUser) -> Response:
    """End the session: its cookie is worthless from now on."""
    end_session(get_redis(), user.session_id)
    response = RedirectResponse(SIGN_IN, status_code=303)
    response.delete_cookie(COOKIE, path=HOME)
    return response


def _form(
    request: Request, next_path: str, error: str | None = None, status_code: int = 200
) -> Response:
    csrf = secrets.token_urlsafe(32)
    response = render(
        request,
        None,
        "sign_in.html",
        status_code=status_code,
        csrf_token=csrf,
        next_path=next_path,
        error=error,
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        csrf,
        max_age=3600,
        path=SIGN_IN,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
