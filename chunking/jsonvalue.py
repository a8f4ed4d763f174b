"""The JSON values chunks, cursors and run parameters are made of (no pickle anywhere)."""

from __future__ import annotations

from typing import TypeAlias

JSONScalar: TypeAlias = bool | int | float | str | None
JSONValue: TypeAlias = JSONScalar | list["JSONValue"] | dict[str, "JSONValue"]
