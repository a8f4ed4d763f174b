"""A limit ported from Celery in seconds is refused, with the unit said: Dramatiq's are in ms."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import dramatiq
import pytest

import actors  # noqa: F401  (declares every actor)
from app.house_rules import (
    HouseRuleViolation,
    fintask_actor,
    house_rule_problems,
    implausible_limit,
)

TESTS = Path(__file__).parents[1]

LIMITS = dict(max_retries=0, min_backoff=100, max_backoff=100)


def test_a_time_limit_in_celery_seconds_is_refused_saying_the_unit(stub_broker):
    # Given Celery's time_limit=30 (seconds) ported as it stood, when it is declared,
    with pytest.raises(HouseRuleViolation) as refused:

        @fintask_actor(queue_name="rules", max_age=60_000, **{"time_limit": 30}, **LIMITS)
        def ported(**kwargs: Any) -> None:
            pass

    # then the declaration fails, naming the actor, the unit and the value meant
    assert str(refused.value) == (
        "actor 'ported': time_limit=30 is 30 ms: Dramatiq limits are in milliseconds; "
        "a Celery time_limit of 30 s is time_limit=30_000"
    )
    assert "ported" not in stub_broker.actors


def test_an_expires_in_celery_seconds_is_refused_as_max_age(stub_broker):
    with pytest.raises(HouseRuleViolation, match=r"max_age=600 is 600 ms: .* Celery expires of"):

        @fintask_actor(queue_name="rules", time_limit=10_000, **{"max_age": 600}, **LIMITS)
        def stale(**kwargs: Any) -> None:
            pass


def test_a_limit_of_one_second_is_plausible(stub_broker):
    @fintask_actor(queue_name="rules", time_limit=1_000, max_age=1_000, **LIMITS)
    def quick(**kwargs: Any) -> None:
        pass

    try:
        assert house_rule_problems(quick) == []
    finally:
        del stub_broker.actors["quick"]


def test_no_actor_of_fintask_or_of_the_tests_has_an_implausible_limit():
    # Given every actor declared in this process (fintask's), and every fintask_actor call
    # written in the tests (some modules declare theirs only in a worker process),
    declared = dramatiq.get_broker().actors
    implausible = [
        f"{name}: {problem}"
        for name, actor in declared.items()
        for problem in house_rule_problems(actor)
        if " ms: " in problem
    ]
    for path in sorted(TESTS.rglob("*.py")):
        for call in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(call, ast.Call) and getattr(call.func, "id", "") == "fintask_actor"):
                continue
            for keyword in call.keywords:
                if keyword.arg in ("time_limit", "max_age"):
                    value = _constant(keyword.value)
                    if value is not None and implausible_limit(keyword.arg, value):
                        implausible.append(f"{path.name}:{call.lineno}: {keyword.arg}={value}")

    # then none is under a second (the tests that mean to be refused pass theirs by name)
    assert implausible == []


def _constant(node: ast.expr) -> int | None:
    """The value of a literal arithmetic expression (``10 * 60_000``), else None."""
    try:
        value = eval(compile(ast.Expression(node), "<limit>", "eval"), {"__builtins__": {}})
    except Exception:
        return None
    return value if isinstance(value, int) else None
