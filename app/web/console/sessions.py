"""Console sessions: who signed in, with which role, and the CSRF token of their forms.

A session is a random id in an ``HttpOnly`` cookie; Redis keeps, under the id's SHA-256 (a
dump of Redis holds no cookie a thief could replay), the token's name and role, the session's
CSRF token and a one-shot result line. The token itself is never stored: it is checked once,
at sign-in. A session lasts ``IDLE_S`` after its last request and ``LIFETIME_S`` at most;
revoking the token ends it at the next request (``app.web.console.access``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass

import redis

#: The cookie that carries a session's id.
COOKIE = "fintask_console"
#: A session ends this long after its last request...
IDLE_S = 2 * 3600
#: ...and this long after sign-in, however busy.
LIFETIME_S = 12 * 3600

_KEY = "fintask:console:session:{digest}"


@dataclass(frozen=True)
class ConsoleSession:
    """A signed-in console user."""

    session_id: str
    token_name: str
    role: str
    csrf_token: str
    signed_in_at: float

    @property
    def who(self) -> str:
        """The user as the audit trail names them: the token they signed in with."""
        return f"token:{self.token_name}"


def create_session(client: redis.Redis, *, token_name: str, role: str) -> ConsoleSession:
    """A new session for the holder of ``token_name``'s token."""
    session = ConsoleSession(
        session_id=secrets.token_urlsafe(32),
        token_name=token_name,
        role=role,
        csrf_token=secrets.token_urlsafe(32),
        signed_in_at=time.time(),
    )
    record = {
        "token_name": token_name,
        "role": role,
        "csrf_token": session.csrf_token,
        "signed_in_at": session.signed_in_at,
    }
    client.set(_key(session.session_id), json.dumps(record), ex=IDLE_S)
    return session


def load_session(client: redis.Redis, session_id: str) -> ConsoleSession | None:
    """The live session ``session_id`` names, its idle clock restarted; None if it ended."""
    key = _key(session_id)
    data = client.get(key)
    if data is None:
        return None
    record = json.loads(data)
    left_s = int(record["signed_in_at"] + LIFETIME_S - time.time())
    if left_s <= 0:
        client.delete(key)
        return None
    client.expire(key, min(IDLE_S, left_s))
    return ConsoleSession(
        session_id=session_id,
        token_name=record["token_name"],
        role=record["role"],
        csrf_token=record["csrf_token"],
        signed_in_at=record["signed_in_at"],
    )


def end_session(client: redis.Redis, session_id: str) -> None:
    """Sign out: the session's id is worthless from now on."""
    client.delete(_key(session_id), _flash_key(session_id))


def set_flash(client: redis.Redis, session_id: str, text: str, *, ok: bool = True) -> None:
    """A result line for the next page the session shows (an action's outcome)."""
    client.set(_flash_key(session_id), json.dumps({"text": text, "ok": ok}), ex=300)


def pop_flash(client: redis.Redis, session_id: str) -> dict[str, object] | None:
    """The session's pending result line, taken so that it shows once."""
    data = client.getdel(_flash_key(session_id))
    return None if data is None else dict(json.loads(data))


def _key(session_id: str) -> str:
    return _KEY.format(digest=hashlib.sha256(session_id.encode()).hexdigest())


def _flash_key(session_id: str) -> str:
    return _key(session_id) + ":flash"
