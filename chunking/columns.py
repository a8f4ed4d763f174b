"""What a chunk accepts as "the column": ``User.id`` (ORM) as well as ``users.c.id`` (Core)."""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import ColumnElement
from sqlalchemy.orm import QueryableAttribute

#: A column or ORM attribute a chunk compares, orders by and selects.
SqlColumn: TypeAlias = ColumnElement[Any] | QueryableAttribute[Any]
