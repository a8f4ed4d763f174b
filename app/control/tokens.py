"""API tokens: who may call the HTTP API, and with which role.

A token is ``ft_`` and 256 random bits; only its SHA-256 is stored. A slow password hash
(bcrypt, scrypt) protects secrets people choose and so can be guessed offline; a random 256-bit
secret cannot be, and a fast hash lets every request be looked up by it in one indexed query.
That lookup compares hashes, never the token itself, so its timing tells a guesser nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.models import ApiToken, utcnow
from app.timestamps import rfc3339

Role = Literal["viewer", "operator"]

#: Every role, each allowed everything the ones before it are.
ROLES: tuple[Role, ...] = ("viewer", "operator")

#: What every token starts with, so that one pasted into a log or a chat is recognisable.
TOKEN_PREFIX = "ft_"

#: ``last_used_at`` is this precise: a busy client's requests would otherwise each be a write.
LAST_USED_PRECISION = dt.timedelta(minutes=1)

_NAME_CHARS = 100
_RANK = {role: rank for rank, role in enumerate(ROLES)}


def can(role: str, needed: Role) -> bool:
    """Whether a token of ``role`` may do what needs ``needed`` (an operator can view)."""
    return role in _RANK and _RANK[role] >= _RANK[needed]


def create_token(session: Session, *, name: str, role: str) -> tuple[str, ApiToken]:
    """A new token and its row, added to ``session``: the token is shown now, or never.

    ``ValueError`` with a readable text for an unknown role, or a name that is blank, too
    long or taken (by a revoked token too: the audit trail names tokens, so names stay unique).
    """
    if role not in ROLES:
        raise ValueError(f"{role!r} is not a role ({', '.join(ROLES)})")
    if not name.strip() or len(name) > _NAME_CHARS:
        raise ValueError(f"a token's name has 1 to {_NAME_CHARS} characters, not {len(name)}")
    if session.scalar(select(ApiToken.id).where(ApiToken.name == name)) is not None:
        raise ValueError(f"a token named {name!r} exists already; choose another name")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, role=role, token_hash=_hash(token), created_at=utcnow())
    session.add(row)
    return token, row


def authenticate(session: Session, token: str) -> ApiToken | None:
    """The live token ``token`` is, or None; notes when it was used (once a minute at most)."""
    row = session.scalar(
        select(ApiToken).where(ApiToken.token_hash == _hash(token), ApiToken.revoked_at.is_(None))
    )
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
        row.last_used_at = now
    return row


def list_tokens(session: Session) -> list[ApiToken]:
    """Every token, revoked ones too, by name."""
    return list(session.scalars(select(ApiToken).order_by(ApiToken.name)))


def revoke_token(session: Session, name: str) -> bool:
    """Revoke the live token named ``name``; False if there is none (unknown, or revoked)."""
    row = session.scalar(
        select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    )
    if row is None:
        return False
    row.revoked_at = utcnow()
    return True


def as_dict(token: ApiToken) -> dict[str, Any]:
    """``token`` as the CLI shows it, without its hash: nothing a reader needs, nothing to leak."""
    return {
        "name": token.name,
        "role": token.role,
        "created_at": rfc3339(token.created_at),
        "last_used_at": rfc3339(token.last_used_at),
        "revoked_at": rfc3339(token.revoked_at),
    }


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
