"""What the endpoints share: a database session per request, the bounds of an id, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.db.session import new_session

#: The largest id a table holds (a signed 64-bit integer): a larger one in a path is a 422,
#: not a database error.
MAX_ID = 2**63 - 1


class ErrorOut(BaseModel):
    """An error as every endpoint answers it: RFC 9457 problem details (``app.web.errors``)."""

    type: str = Field("about:blank", description="Always about:blank: the status says it all.")
    title: str = Field(description="The status's reason phrase: 'Not Found'.")
    status: int = Field(description="The HTTP status code, repeated.")
    detail: str = Field(description="What went wrong, in a sentence.")


def get_session() -> Iterator[Session]:
    """One session per request; endpoints open their own transaction on it."""
    with new_session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
