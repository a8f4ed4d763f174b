"""Dependencies the endpoints share: one database session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.db.session import new_session


def get_session() -> Iterator[Session]:
    """One session per request; endpoints open their own transaction on it."""
    with new_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
