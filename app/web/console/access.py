"""Who may see the console and who may act in it: a session cookie, a role, a CSRF token.

Every page needs a session (``current_user``); a request without one is sent to sign in and
comes back where it was going. Every form posts the session's CSRF token, and every action
needs an operator's session (``operator_form``): a viewer's form, or a form posted from
another site (its cookie is ``SameSite=Strict`` besides), is refused with a page saying why.
A session whose token was revoked ends at its next request.
"""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import quote

import dramatiq
from fastapi import Depends, Request
from sqlalchemy import select

from app.control.actions import Operator
from app.control.tokens import can
from app.db.models import ApiToken
from app.redis_client import get_redis
from app.web.console.sessions import COOKIE, ConsoleSession, end_session, load_session
from app.web.deps import SessionDep
from pipelines.batches import BATCHES

#: Where the console starts: the overview.
HOME = "/console"
#: The sign-in page.
SIGN_IN = "/console/sign-in"


class SignInRequired(Exception):
    """The request has no live session; ``next_path`` is where it was going."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class ConsoleRefused(Exception):
    """The console will not do this for this user; ``text`` says why, for a person."""

    def __init__(self, status_code: int, text: str) -> None:
        super().__init__(text)
        self.status_code = status_code
        self.text = text


def current_user(request: Request, session: SessionDep) -> ConsoleSession:
    """The signed-in user; ``SignInRequired`` without a session, or once its token is revoked."""
    session_id = request.cookies.get(COOKIE)
    user = None if session_id is None else load_session(get_redis(), session_id)
    if user is None:
        raise SignInRequired(_here(request))
    with session.begin():  # ended here: the page's own actions open their transactions
        live = session.scalar(
            select(ApiToken.id).where(
                ApiToken.name == user.token_name, ApiToken.revoked_at.is_(None)
            )
        )
    if live is None:
        end_session(get_redis(), user.session_id)
        raise SignInRequired(_here(request))
    return user


User = Annotated[ConsoleSession, Depends(current_user)]


async def form_user(request: Request, user: User) -> ConsoleSession:
    """The user behind a posted form, if it carries their CSRF token."""
    form = await request.form()
    sent = form.get("csrf_token")
    if not isinstance(sent, str) or not secrets.compare_digest(sent, user.csrf_token):
        raise ConsoleRefused(
            403, "this form's security token is missing or stale: reload the page and try again"
        )
    return user


FormUser = Annotated[ConsoleSession, Depends(form_user)]


def operator_form(user: FormUser) -> ConsoleSession:
    """The user behind a posted form, if they may act: a viewer's form is refused."""
    if not can(user.role, "operator"):
        raise ConsoleRefused(
            403, f"the token {user.token_name!r} has the role {user.role}; acting needs operator"
        )
    return user


OperatorUser = Annotated[ConsoleSession, Depends(operator_form)]


def operator_for(user: ConsoleSession, session: SessionDep) -> Operator:
    """The control plane's operator acting, and audited, as ``user``."""
    return Operator(user.who, session, get_redis(), dramatiq.get_broker(), BATCHES)


def safe_next(path: object) -> str:
    """``path`` if it is a console page of this site, else the overview: a link that signs in
    and then sends the browser elsewhere (an open redirect) is never followed."""
    if not isinstance(path, str) or any(char in path for char in "\\\r\n"):
        return HOME
    return path if path.startswith(HOME) else HOME


def sign_in_url(next_path: str) -> str:
    """The sign-in page, sending the browser back to ``next_path`` afterwards."""
    return f"{SIGN_IN}?next={quote(safe_next(next_path), safe='/')}"


def _here(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")
