"""What of a message's arguments operators see: what the control plane shows leaves Redis for
terminals, logs and browsers, so personal data in a message must not leave through it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: The longest ``id`` / ``*_id`` string argument shown unmasked: longer is no identifier.
MAX_ID_CHARS = 64


@dataclass(frozen=True)
class MaskPolicy:
    """Which keyword arguments are shown as they are; any other value is shown by its shape.

    Identifiers (``id`` or ``*_id``: an int, or a string of at most ``MAX_ID_CHARS``) and flags
    (bool, None) are shown too: they say which account or order a message is about, nothing
    about a person. Positional arguments have no name to judge them by: only flags are shown.
    """

    visible: frozenset[str] = frozenset()

    def mask_kwargs(self, kwargs: Mapping[str, object]) -> dict[str, object]:
        """Keyword arguments as operators may see them."""
        return {name: self._shown(name, value) for name, value in kwargs.items()}

    def mask_args(self, args: Iterable[object]) -> list[object]:
        """Positional arguments as operators may see them."""
        return [value if _is_flag(value) else shape(value) for value in args]

    def _shown(self, name: str, value: object) -> object:
        if name in self.visible or _is_flag(value) or _is_identifier(name, value):
            return value
        return shape(value)


def shape(value: object) -> str:
    """What a masked value is shown as: its type and size, never its content."""
    if isinstance(value, str):
        return f"<str: {_count(len(value), 'char')}>"
    if isinstance(value, list):
        return f"<list: {_count(len(value), 'item')}>"
    if isinstance(value, dict):
        return f"<dict: {_count(len(value), 'key')}>"
    return f"<{type(value).__name__}>"


def _is_flag(value: object) -> bool:
    return value is None or isinstance(value, bool)


def _is_identifier(name: str, value: object) -> bool:
    if name != "id" and not name.endswith("_id"):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    return isinstance(value, int) and not isinstance(value, bool)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
