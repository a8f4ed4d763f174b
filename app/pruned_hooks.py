"""Middleware hooks called only where a middleware defines them.

Dramatiq's ``Broker.emit_before`` and ``emit_after`` call the hook of every middleware for
every signal of every message, and most of those calls land in ``Middleware``'s own empty
methods: fintask's worker stack holds 20 middleware and a message passes eight signals (before
and after its enqueue, its processing and its ack), about 160 calls of which some 30 do
anything. ``PrunedHooks`` resolves once per signal which middleware override it, and calls only
those, in Dramatiq's order (``before_*`` in stack order, ``after_*`` in reverse) and with its
error handling: a ``MiddlewareError`` from a before-hook reaches the caller, any other
exception is logged as critical and the next middleware runs.

The resolution looks at each middleware's class, so a hook set on an instance is not seen. A
middleware added through ``add_middleware`` (Dramatiq's way, which ``Broker.__init__`` uses
too) clears what was resolved; one pushed on ``broker.middleware`` by hand is not seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dramatiq import Middleware
from dramatiq.middleware import MiddlewareError

Hook = Callable[..., Any]


def overrides(middleware: Middleware, hook: str) -> bool:
    """Whether ``middleware``'s class defines ``hook`` other than as ``Middleware``'s no-op."""
    return getattr(type(middleware), hook, None) is not getattr(Middleware, hook, None)


class PrunedHooks:
    """A broker mixin (put it before Dramatiq's broker class) whose ``emit_before`` and
    ``emit_after`` skip the middleware that do not define the signal's hook."""

    middleware: list[Middleware]
    logger: Any

    def add_middleware(self, middleware: Middleware, **where: Any) -> None:
        super().add_middleware(middleware, **where)  # type: ignore[misc]
        self._hooks_by_name: dict[str, list[tuple[Middleware, Hook]]] = {}

    def emit_before(self, signal: str, *args: Any, **kwargs: Any) -> None:
        name = "before_" + signal
        for middleware, hook in self._hooks(name):
            try:
                hook(self, *args, **kwargs)
            except MiddlewareError:
                raise
            except Exception:
                self.logger.critical(
                    "Unexpected failure in %s of %r.", name, middleware, exc_info=True
                )

    def emit_after(self, signal: str, *args: Any, **kwargs: Any) -> None:
        name = "after_" + signal
        for middleware, hook in self._hooks(name):
            try:
                hook(self, *args, **kwargs)
            except Exception:
                self.logger.critical(
                    "Unexpected failure in %s of %r.", name, middleware, exc_info=True
                )

    def _hooks(self, name: str) -> list[tuple[Middleware, Hook]]:
        """The middleware that define hook ``name``, with the hook bound, resolved on first use
        (in reverse order for after-hooks)."""
        resolved = self.__dict__.setdefault("_hooks_by_name", {})
        hooks = resolved.get(name)
        if hooks is None:
            ordered = reversed(self.middleware) if name.startswith("after_") else self.middleware
            hooks = [(m, getattr(m, name)) for m in ordered if overrides(m, name)]
            resolved[name] = hooks
        return hooks
