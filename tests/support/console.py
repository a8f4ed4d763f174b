"""The console in a test: its app on the test's Redis and database, a signed-in client, an
action posted and confirmed, and what a page shows (a table's row, its result line)."""

from __future__ import annotations

import re
from html import unescape

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.control import tokens
from app.db.models import AuditEvent
from app.db.session import transaction
from app.web import console
from app.web.errors import install_error_handlers

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def console_app() -> TestClient:
    """The console as the web process serves it, on the environment's Redis and database."""
    app = FastAPI()
    install_error_handlers(app)
    console.install(app)
    return TestClient(app, raise_server_exceptions=False, follow_redirects=False)


def create_token(role: str, name: str | None = None) -> str:
    """A new API token of ``role``, as ``fintask tokens create`` makes one."""
    with transaction() as session:
        secret, _ = tokens.create_token(session, name=name or f"{role}-token", role=role)
    return secret


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def sign_in(client: TestClient, token: str, next_path: str = "/console") -> str:
    """Sign ``client`` in with ``token``; the CSRF token its forms must send from now on."""
    form = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": next_path},
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(client.get(answer.headers["location"]).text)


def signed_in(role: str) -> tuple[TestClient, str]:
    """A client signed in with a new token of ``role``, and its CSRF token."""
    client = console_app()
    return client, sign_in(client, create_token(role))


def act(client: TestClient, csrf: str, path: str, back: str, **fields: object) -> tuple[str, str]:
    """Post an action's form, then confirm it: the confirmation page, and the page the browser
    is sent back to (``back``), which shows the result line."""
    data = {"csrf_token": csrf, "back": back, **fields}
    asked = client.post(path, data=data)
    assert asked.status_code == 200, asked.text
    assert 'data-action="confirm"' in asked.text
    done = client.post(path, data={**data, "confirmed": "yes"})
    assert done.status_code == 303, done.text
    assert done.headers["location"] == back
    return unescape(asked.text), client.get(done.headers["location"]).text


def flash(html: str) -> tuple[str, str]:
    """A page's result line: ``ok`` or ``failed``, and its text."""
    found = re.search(r'<p class="flash (ok|failed)"[^>]*>([^<]*)</p>', html)
    assert found is not None, "the page shows no result line"
    return found.group(1), unescape(found.group(2))


def row(html: str, attribute: str, value: object) -> str:
    """The table row of ``html`` whose ``attribute`` is ``value`` (``data-job="relay_outbox"``)."""
    start = html.index(f'<tr {attribute}="{value}">')
    return html[start : html.index("</tr>", start)]


def message_rows(html: str) -> list[str]:
    """The message ids a page lists, in its order."""
    return re.findall(r'<tr data-message-id="([^"]+)">', html)


def audited() -> list[tuple[str, str, str]]:
    """The audit trail, oldest first, as (who, action, target)."""
    with transaction() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(event.who, event.action, event.target) for event in events]
