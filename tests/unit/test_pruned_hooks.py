"""A broker with pruned hooks calls the same middleware, in the same order, as Dramatiq's."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from dramatiq import Middleware
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import MiddlewareError

from app.pruned_hooks import PrunedHooks, overrides


class PrunedStubBroker(PrunedHooks, StubBroker):
    """Dramatiq's stub broker with fintask's hook dispatch."""


class Refused(MiddlewareError):
    pass


class Recorder(Middleware):
    """Records each hook it defines into a shared list, by its name."""

    def __init__(self, name: str, calls: list[str], *, fail: type[Exception] | None = None):
        self.name = name
        self.calls = calls
        self.fail = fail

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(f"{self.name}.before_enqueue")
        if self.fail is not None:
            raise self.fail(f"{self.name} failed")

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append(f"{self.name}.after_enqueue")


class AfterOnly(Middleware):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        self.calls.append("after-only.after_enqueue")


def emitted(broker_class: type[StubBroker], **fail: type[Exception]) -> list[str]:
    calls: list[str] = []
    stack = [Recorder(name, calls, fail=fail.get(name)) for name in ("a", "b", "c")]
    broker = broker_class(middleware=[stack[0], Middleware(), AfterOnly(calls), *stack[1:]])
    broker.emit_before("enqueue", "message", None)
    broker.emit_after("enqueue", "message", None)
    return calls


def test_the_hooks_run_as_dramatiqs_broker_runs_them():
    # Before-hooks in stack order, after-hooks in reverse, no-op middleware in between
    expected = [
        "a.before_enqueue",
        "b.before_enqueue",
        "c.before_enqueue",
        "c.after_enqueue",
        "b.after_enqueue",
        "after-only.after_enqueue",
        "a.after_enqueue",
    ]
    assert emitted(StubBroker) == expected
    assert emitted(PrunedStubBroker) == expected


def test_an_unexpected_error_in_a_hook_is_logged_and_the_next_middleware_runs(caplog):
    with caplog.at_level(logging.CRITICAL):
        calls = emitted(PrunedStubBroker, b=RuntimeError)

    assert calls == emitted(StubBroker, b=RuntimeError)
    assert "c.before_enqueue" in calls
    assert "Unexpected failure in before_enqueue of" in caplog.text


def test_a_middleware_error_in_a_before_hook_reaches_the_caller():
    calls: list[str] = []
    broker = PrunedStubBroker(middleware=[Recorder("a", calls, fail=Refused), Recorder("b", calls)])

    with pytest.raises(Refused, match="a failed"):
        broker.emit_before("enqueue", "message", None)
    assert calls == ["a.before_enqueue"]


def test_a_middleware_added_after_the_first_message_is_called_too():
    calls: list[str] = []
    broker = PrunedStubBroker(middleware=[Recorder("a", calls)])
    broker.emit_before("enqueue", "message", None)

    broker.add_middleware(Recorder("late", calls))
    broker.emit_before("enqueue", "message", None)

    assert calls == ["a.before_enqueue", "a.before_enqueue", "late.before_enqueue"]


def test_a_hook_counts_as_defined_only_where_a_class_overrides_middlewares_no_op():
    assert overrides(Recorder("a", []), "before_enqueue")
    assert not overrides(AfterOnly([]), "before_enqueue")
    assert not overrides(Middleware(), "after_enqueue")
